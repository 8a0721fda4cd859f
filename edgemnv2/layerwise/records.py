"""What a runtime tells us about one op: its time (profiles) or its output (numerics)."""

from dataclasses import dataclass, field

import numpy as np

COMPUTE_KINDS = ("conv", "dwconv", "gemm")  # ops that carry a source layer's MACs (convs, linears)


@dataclass
class RuntimeOp:
    """One op (or one delegated kernel) as the runtime ran it, with its median time."""

    name: str  # the runtime's own label: "Convolution (NHWC, QC8) DWConv #3", "CONV_2D", "quantized::conv2d"
    ms: float
    kind: str  # one of COMPUTE_KINDS, "other" (data movement, adds, resizes...) or "overhead" (the runtime's own)
    dtype: str | None = None  # "int8" / "fp32" where the runtime says
    delegated: bool | None = None  # inside the XNNPACK delegate (None: the runtime does not say)
    layer: str | None = None  # the source model's module path, mapped by edgemnv2.layerwise.source
    macs: int | None = None


@dataclass
class Capture:
    """One compute op's output as the runtime produced it, as float32 NCHW (dequantized)."""

    name: str
    kind: str
    value: np.ndarray
    layer: str | None = None
    # what the runtime quantized with, for the cause analysis (None for float ops)
    output_scale: float | None = None
    output_zero_point: int | None = None
    output_range: tuple[float, float] | None = None  # the float range the output's integer type can represent
    weight_scales: np.ndarray | None = None  # one per output channel, or one for the tensor
    weights: np.ndarray | None = None  # dequantized, in the source's OIHW layout
    detail: dict = field(default_factory=dict)  # anything else the runtime knows (padding, stride, ...)
