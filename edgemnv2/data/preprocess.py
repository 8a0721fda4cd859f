"""Preprocessing, recorded in every checkpoint and manifest so later stages never guess it."""

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int]  # (height, width) fed to the network
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "stretch"  # the whole image is resized to input_size (no crop, no letterbox)

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
    def from_dict(cls, data: dict) -> "Preprocessing":
        return cls(
            input_size=tuple(data["input_size"]),
            mean=tuple(data.get("mean", IMAGENET_MEAN)),
            std=tuple(data.get("std", IMAGENET_STD)),
            resize=data.get("resize", "stretch"),
        )
