"""Precisions as values: what each one quantizes and whether it needs calibration images.

The pipeline, manifests, gates and CLI help read these flags; nothing tests a precision's name
with `startswith`. (CoreML's weight-only `int8_weights` quantizes no activation and needs no
calibration: a name prefix said otherwise.)
"""

from dataclasses import dataclass

from .errors import did_you_mean


@dataclass(frozen=True)
class Precision:
    name: str
    quantizes_weights: bool
    quantizes_activations: bool
    float_dtype: str  # the dtype of what is not quantized
    summary: str
    # dynamic range: float activations quantized to int8 by the runtime, per call, from each tensor's own
    # range. Nothing to calibrate (quantizes_activations stays False: no ranges are stored in the file)
    dynamic_activations: bool = False

    @property
    def needs_calibration(self) -> bool:
        """Activation ranges come from real images; weight ranges come from the weights alone."""
        return self.quantizes_activations

    @property
    def quantized(self) -> bool:
        return self.quantizes_weights or self.quantizes_activations

    def __str__(self) -> str:
        return self.name


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", False, False, "float32", "float32 everywhere"),
        Precision("fp16", False, False, "float16", "float16 compute and weights"),
        Precision("int8", True, True, "float32", "int8 weights and activations, calibrated on real images"),
        Precision("int8_weights", True, False, "float32", "int8 weights only (no calibration); float activations"),
        Precision("int8_dynamic", True, False, "float32", "int8 weights; activations quantized at run time from their own range "
                  "(dynamic range: no calibration)", dynamic_activations=True),
    )
}


def precision_names() -> list[str]:
    return list(PRECISIONS)


def get_precision(name: "str | Precision") -> Precision:
    if isinstance(name, Precision):
        return name
    if name not in PRECISIONS:
        raise did_you_mean(name, precision_names(), "precision")
    return PRECISIONS[name]
