"""The target registry: one line per target. Each module follows the contract in conversion/base.py."""

from edgemnv2.errors import did_you_mean

from . import coreml, executorch, tflite, torchscript, torchscript_mobile

TARGETS = {
    module.SPEC.name: module
    for module in (torchscript, torchscript_mobile, executorch, coreml, tflite)
}


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str):
    if name not in TARGETS:
        raise did_you_mean(name, target_names(), "target")
    return TARGETS[name]
