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
    weight_bits: int = 32  # bits per stored weight (before a block's or table's shared values)
    activation_bits: int = 32  # bits of the activations between layers (dynamic: in the integer kernels)
    # palettized: each weight is an index into a lookup table of 2**weight_bits values (k-means),
    # instead of an integer times a scale
    palettized: bool = False

    @property
    def needs_calibration(self) -> bool:
        """Activation ranges come from real images; weight ranges come from the weights alone."""
        return self.quantizes_activations

    @property
    def full_int8(self) -> bool:
        """int8 weights and calibrated int8 activations: the precision whose recipe a --max-drop search
        varies, and the one the int8 kernels (XNNPACK, FBGEMM) run."""
        return self.quantizes_activations and self.activation_bits == 8

    @property
    def quantized(self) -> bool:
        return self.quantizes_weights or self.quantizes_activations

    @property
    def bits(self) -> str:
        """What the manifest and tables show: weight and activation bits (W8A8, W4A32, ...)."""
        return f"W{self.weight_bits}A{self.activation_bits}" + (" (dynamic)" if self.dynamic_activations else "") + \
            (" (palettized)" if self.palettized else "")

    def __str__(self) -> str:
        return self.name


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", False, False, "float32", "float32 everywhere"),
        Precision("fp16", False, False, "float16", "float16 compute and weights", weight_bits=16, activation_bits=16),
        # bfloat16 keeps float32's exponent range and 8 bits of mantissa: no overflow to guard, no
        # calibration. The file keeps float32 weights; the runtime computes in bfloat16 (OpenVINO's CPU
        # plugin, only where it offers bf16: AVX-512 BF16 or AMX, some newer AVX2 client CPUs)
        Precision("bf16", False, False, "bfloat16", "bfloat16 compute where the runtime offers it (AVX-512 BF16 or AMX); float32 weights in the file "
                  "(named explicitly: `all` does not make it)", activation_bits=16),
        Precision("int8", True, True, "float32", "int8 weights and activations, calibrated on real images", weight_bits=8, activation_bits=8),
        Precision("int8_weights", True, False, "float32", "int8 weights only (no calibration); float activations", weight_bits=8),
        Precision("int8_dynamic", True, False, "float32", "int8 weights; activations quantized at run time from their own range "
                  "(dynamic range: no calibration)", dynamic_activations=True, weight_bits=8, activation_bits=8),
        Precision("int16x8", True, True, "float32", "int8 weights and int16 activations, calibrated on real images "
                  "(LiteRT's 16x8 mode: finer activations than int8; reference kernels, not XNNPACK)", weight_bits=8, activation_bits=16),
        Precision("int4_weights", True, False, "float32", "4-bit weights, one scale per block of input channels (no calibration); "
                  "float activations", weight_bits=4),
        Precision("int6_palettized", True, False, "float32", "6-bit palettized weights: indices into 64-value k-means tables "
                  "(no calibration); float activations", weight_bits=6, palettized=True),
        Precision("int4_palettized", True, False, "float32", "4-bit palettized weights: indices into 16-value k-means tables, "
                  "one per group of output channels (no calibration); float activations", weight_bits=4, palettized=True),
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
