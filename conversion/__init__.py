"""The target registry: one line per target. Each module exposes TARGET (the contract in conversion/base.py)."""

from edgemnv2.errors import did_you_mean

from . import coreml, executorch, onnx, tflite, torchscript, torchscript_mobile
from .base import Target

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (torchscript.TARGET, torchscript_mobile.TARGET, executorch.TARGET, coreml.TARGET, tflite.TARGET, onnx.TARGET)
}


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise did_you_mean(name, target_names(), "target")
    return TARGETS[name]
