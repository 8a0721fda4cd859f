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


__all__ = ["CLASSIFICATION", "COMMON_GATES", "DETECTION", "GateKind", "TASKS", "Task", "get_task"]
