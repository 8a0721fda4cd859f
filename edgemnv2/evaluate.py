"""Task metrics for any runner: a callable taking an NCHW float32 batch and returning a list of
float32 arrays. Torch models, TorchScript, ExecuTorch, TFLite, ONNX and CoreML runners all fit, so
every artifact is scored by exactly the same code as the checkpoint it came from.

Scoring streams: batches are decoded in the background (data/stream.py), each batch becomes a few
numbers per image (the task's `score`), and the metrics are reduced at the end (tally.py).
"""

from typing import Callable, Sequence

import numpy as np
import torch

from .data.stream import batches
from .tally import Tally

Runner = Callable[[np.ndarray], list[np.ndarray]]


def torch_runner(model: torch.nn.Module) -> Runner:
    model.eval()
    device = next(model.parameters()).device  # a model still on the GPU it trained on

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(batch).to(device))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().cpu().numpy() for o in out]

    return run


def evaluate_runner(runner: Runner, split, batch_size: int = 32, indices: Sequence[int] | None = None,
                    description: str = "evaluating") -> dict[str, float]:
    """Task metrics (fractions) of one runner over a split (or the positions `indices` of it)."""
    from .tasks import get_task

    task = get_task(split.task)
    tally = Tally()
    for batch in batches(split, batch_size, indices, description=description):
        tally.add(batch.indices, task.score(runner(split.preprocessing.normalize(batch.images)), batch, split))
    return task.reduce_metrics(*tally.ordered(), split)


def finite_images(outputs: list[np.ndarray]) -> np.ndarray:
    """(N,) bool: every value of every output of the image is finite. An image that is not counts as
    wrong in every measure (a miss for top-k and mAP, a disagreement, the worst SQNR): argmax takes
    NaN as the largest value and argsort puts it last, so left to themselves the measures disagree."""
    finite = np.ones(len(outputs[0]), bool)
    for output in outputs:
        values = np.asarray(output)
        if np.issubdtype(values.dtype, np.floating):
            finite &= np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return finite
