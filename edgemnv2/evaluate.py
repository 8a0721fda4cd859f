"""Runners: a callable taking an NCHW float32 batch and returning a list of float32 arrays. Torch models,
TorchScript, ExecuTorch, TFLite, ONNX and CoreML runners all fit, so every artifact is scored by exactly
the same code as the checkpoint it came from (a task's `evaluate`, edgemnv2/tasks/base.py; `evaluate_runner`
in edgemnv2.tasks picks the split's task). And which images' outputs are finite, which every measure
needs to agree on.
"""

from typing import Callable

import numpy as np
import torch

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
