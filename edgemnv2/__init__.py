"""edgemnv2: MobileNetV2 classifiers and CenterNet detectors, quantized and deployed to edge runtimes.

    from edgemnv2 import convert, validate, predict      # edgemnv2/api.py

The API is resolved on first use (PEP 562): `import edgemnv2` alone, or any core module
(models, data, tasks, checkpoint), never imports the converters and their runtimes.
"""

import os
import sys

from .version import __version__

# ONNX Runtime uploads usage telemetry from Linux since 1.29 unless told not to (its own opt-out,
# read once at import): a deployment tool run in CI makes no network calls it was not asked for.
# An ORT_DISABLE_TELEMETRY already set is left as it is.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# OpenVINO's model converter and NNCF send usage telemetry through openvino_telemetry by default
# (NNCF without asking: no opt-in dialog; it also writes a client id under ~/intel). Both fall back
# to a stub when that package cannot be imported, which is what this entry makes it: no file written,
# no call made. (Their runtime, which runs artifacts, sends nothing.)
sys.modules.setdefault("openvino_telemetry", None)

_API = ("convert", "validate", "predict", "ConversionResult", "Prediction", "ValidationOutcome", "AccuracyBudget", "QuantRecipe", "QatRecipe")


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'edgemnv2' has no attribute {name!r}")


__all__ = ["__version__", *_API]
