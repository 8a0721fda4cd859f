"""Preprocessing, recorded in every checkpoint and manifest so later stages never guess it.

It is read back from files (checkpoints, manifests, what a bare artifact says of itself), so the one
constructor checks it: an input size of two sides in 1..MAX_INPUT_SIDE, a mean of three finite
numbers, a std of three finite positive numbers, the one resize mode. A bad value is a UserError
naming its source, never a numpy broadcast error or an input the size of the machine's memory.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The largest input side any file may ask for: four times a large detector's 1024, and a float
# input of 4096x4096x3 is 200 MB. A 60000x60000 input would be 43 GB before the network runs.
MAX_INPUT_SIDE = 4096
RESIZE_MODES = ("stretch",)


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int]  # (height, width) fed to the network
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "stretch"  # the whole image is resized to input_size (no crop, no letterbox)

    def __post_init__(self):  # frozen: the checked, normalised values are set once, here
        object.__setattr__(self, "input_size", _input_size(self.input_size))
        object.__setattr__(self, "mean", _three_numbers(self.mean, "mean", positive=False))
        object.__setattr__(self, "std", _three_numbers(self.std, "std", positive=True))
        if self.resize not in RESIZE_MODES:
            raise UserError(f"preprocessing resize {_shown(self.resize)} is not one edgemnv2 knows ({', '.join(RESIZE_MODES)})")

    def resize_uint8(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> (H, W, 3) uint8 at the network's input size."""
        height, width = self.input_size
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) or (H, W, 3) uint8 -> float32 NCHW / CHW, normalised."""
        scaled = pixels.astype(np.float32) / 255.0
        scaled = (scaled - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        return np.ascontiguousarray(np.moveaxis(scaled, -1, -3))

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.normalize(self.resize_uint8(image))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict, source: str = "") -> "Preprocessing":
        """The preprocessing a file records, checked; `source` names the file in errors."""
        where = f"{source}: " if source else ""
        if not isinstance(data, dict) or "input_size" not in data:
            raise UserError(f"{where}preprocessing must be an object with input_size [height, width] (found {_shown(data)})")
        try:
            return cls(input_size=data["input_size"], mean=data.get("mean", IMAGENET_MEAN), std=data.get("std", IMAGENET_STD),
                       resize=data.get("resize", "stretch"))
        except UserError as exc:
            raise UserError(f"{where}{exc}") from None


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_finite(value) -> bool:
    try:
        return _is_number(value) and math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def _input_size(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) and 1 <= v <= MAX_INPUT_SIDE and float(v).is_integer() for v in value):
        return int(value[0]), int(value[1])
    raise UserError(f"preprocessing input_size must be [height, width], each a whole number from 1 to {MAX_INPUT_SIDE} (found {_shown(value)})")


def _three_numbers(value, name: str, positive: bool) -> tuple[float, float, float]:
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(_is_finite(v) and (v > 0 or not positive) for v in value):
        return tuple(float(v) for v in value)
    kind = "finite positive numbers" if positive else "finite numbers"
    raise UserError(f"preprocessing {name} must be 3 {kind}, one per RGB channel (found {_shown(value)})")
