"""The large GEMM each runtime's peak is measured with (edgemnv2.layerwise.peak), built once here
so every target quantizes and times the same thing."""

import numpy as np
import torch
from torch import nn

from edgemnv2.layerwise.peak import GEMM_SHAPE
from quantization.ptq import QuantRecipe


def gemm_model() -> tuple[nn.Module, torch.Tensor, np.ndarray]:
    """(Linear K->N, a (1, M, K) input, calibration inputs) for GEMM_SHAPE. Batch 1 of M rows: the
    exported graphs here are specialised to batch 1, as calibration feeds them."""
    m, k, n = GEMM_SHAPE
    torch.manual_seed(0)
    model = nn.Linear(k, n).eval()
    example = torch.randn(1, m, k)
    # calibration "images" are (M, K) inputs here: the GEMM's own values (no accuracy is measured)
    calibration = np.random.default_rng(0).standard_normal((4, m, k)).astype(np.float32)
    return model, example, calibration


def recipe() -> QuantRecipe:
    return QuantRecipe(observer="minmax", calibration_size=4)
