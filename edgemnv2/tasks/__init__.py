"""The task registry: one object per task (edgemnv2/tasks/base.py says what a task owns)."""

from ..errors import did_you_mean
from .base import COMMON_GATES, GateKind, Task
from .classification import CLASSIFICATION
from .detection import DETECTION

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFICATION, DETECTION)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise did_you_mean(name, list(TASKS), "task")
    return TASKS[name]


def evaluate_runner(runner, split, batch_size: int = 32, indices=None, description: str = "evaluating") -> dict[str, float]:
    """The split's task's metrics (fractions) of one runner over it (Task.evaluate)."""
    return get_task(split.task).evaluate(runner, split, batch_size, indices, description)


__all__ = ["CLASSIFICATION", "COMMON_GATES", "DETECTION", "GateKind", "TASKS", "Task", "evaluate_runner", "get_task"]
