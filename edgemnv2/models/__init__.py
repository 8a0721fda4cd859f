"""One front door: `create_model(name, **kwargs)`. The registry is one dict of tiny entrypoints.

A new model is one new file plus one line in MODELS.
"""

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import UserError, did_you_mean
from ..tasks import CLASSIFICATION, DETECTION, Task
from .centernet import CenterNet
from .dla import DLA34
from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import MobileNetV2
from .mobilenetv2_seed import SeedCenterNet, SeedMobileNetV2


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., nn.Module]
    task: Task
    default_input_size: int
    summary: str
    accepts_width: bool = True
    input_multiple: int = 32  # an input side must be a multiple of this (the total stride), for convert --input-size
    fixed_input: bool = False  # the architecture takes only the size it was built for (a fixed pooling window)


MODELS: dict[str, ModelSpec] = {
    "mobilenet_v2": ModelSpec(MobileNetV2, CLASSIFICATION, 224, "MobileNetV2 as in the paper (torchvision-compatible keys)"),
    "mobilenet_v1": ModelSpec(MobileNetV1, CLASSIFICATION, 224, "MobileNetV1 depthwise-separable baseline"),
    "mobilenet_v2_seed": ModelSpec(SeedMobileNetV2, CLASSIFICATION, 224, "the article's code, for its checkpoints (224x224 only)", accepts_width=False,
                                   fixed_input=True),
    "dla34": ModelSpec(DLA34, CLASSIFICATION, 224, "DLA-34 (CenterNet's DLASeg backbone), for the article's comparison"),
    "centernet": ModelSpec(CenterNet, DETECTION, 512, "CenterNet, backbone mobilenet_v2 (default), mobilenet_v1 or dla34"),
    "centernet_seed": ModelSpec(SeedCenterNet, DETECTION, 512, "the article's detection variant: load/benchmark only, not a sound detector",
                                accepts_width=False, fixed_input=True),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise did_you_mean(name, model_names(), "model")
    return MODELS[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. kwargs: num_classes, width_mult (not for *_seed), backbone (centernet)."""
    spec = get_spec(name)
    if not spec.accepts_width and kwargs.pop("width_mult", 1.0) != 1.0:
        raise UserError(f"model '{name}' reproduces the article's fixed architecture: it takes no width multiplier")
    try:
        return spec.build(**kwargs)
    except TypeError as exc:
        raise UserError(f"model '{name}' does not accept these options: {exc}") from exc
