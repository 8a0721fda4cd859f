"""One front door: `create_model(name, **kwargs)`. The registry is one dict of tiny entrypoints.

A new model is one new file plus one line in MODELS; a new backbone too (`backbone=True`: its
`features` and `feature_taps` follow edgemnv2.models.features), and CenterNet takes it by name.
"""

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import UserError, did_you_mean
from .centernet import CenterNet
from .dla import DLA34
from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import MobileNetV2
from .mobilenetv2_seed import SeedCenterNet, SeedMobileNetV2


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., nn.Module]
    task: str  # the task's name (edgemnv2.tasks.get_task): the task registry sits above the models
    default_input_size: int
    summary: str
    accepts_width: bool = True
    input_multiple: int = 32  # an input side must be a multiple of this (the total stride), for convert --input-size
    fixed_input: bool = False  # the architecture takes only the size it was built for (a fixed pooling window)
    # the state-dict key whose first dimension is the class count: a bare state dict's classes
    head_key: str = "classifier.1.weight"
    backbone: bool = False  # serves a detector's neck (edgemnv2.models.features): `centernet --backbone NAME`


def backbone_names() -> list[str]:
    return sorted(name for name, spec in MODELS.items() if spec.backbone)


def create_backbone(name: str, width_mult: float = 1.0) -> nn.Module:
    """A registered backbone's trunk (features + feature_taps; its one-class classifier goes unused)."""
    if name not in MODELS or not MODELS[name].backbone:
        raise did_you_mean(name, backbone_names(), "backbone")
    return MODELS[name].build(num_classes=1, width_mult=width_mult)


def centernet(num_classes: int = 10, backbone: str = "mobilenet_v2", width_mult: float = 1.0, **kwargs) -> CenterNet:
    """CenterNet on the named backbone; `backbone` and `width_mult` are what checkpoints record."""
    return CenterNet(create_backbone(backbone, width_mult), num_classes=num_classes, **kwargs)


MODELS: dict[str, ModelSpec] = {
    "mobilenet_v2": ModelSpec(MobileNetV2, "classification", 224, "MobileNetV2 as in the paper (torchvision-compatible keys)", backbone=True),
    "mobilenet_v1": ModelSpec(MobileNetV1, "classification", 224, "MobileNetV1 depthwise-separable baseline", backbone=True),
    "mobilenet_v2_seed": ModelSpec(SeedMobileNetV2, "classification", 224, "the article's code, for its checkpoints (224x224 only)", accepts_width=False,
                                   fixed_input=True, head_key="linear.weight"),
    "dla34": ModelSpec(DLA34, "classification", 224, "DLA-34 (CenterNet's DLASeg backbone), for the article's comparison", backbone=True),
    "centernet": ModelSpec(centernet, "detection", 512, "CenterNet on a backbone of this registry (default mobilenet_v2)",
                           head_key="heads.hm.3.weight"),
    "centernet_seed": ModelSpec(SeedCenterNet, "detection", 512, "the article's detection variant: load/benchmark only, not a sound detector",
                                accepts_width=False, fixed_input=True, head_key="hm.weight"),
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
