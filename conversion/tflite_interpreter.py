"""The LiteRT interpreter in this process: making one (ai-edge-litert, or tflite-runtime where that is what
is installed), its operator names, and encoding a normalized float batch for a file's input (an app file's
uint8 pixels, or the tensor's own type and scale). Used by the converter's load check, the census, the
per-op profiler and debug's capture."""

from pathlib import Path

import numpy as np

from edgemnv2.artifacts import RuntimeUnavailable

from .tflite_app import pixels_from_normalized, read_metadata


def operator_names() -> dict[int, str]:
    """Builtin operator code -> its name ("CONV_2D")."""
    from ai_edge_litert import schema_py_generated as schema

    return {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def make_interpreter(path: Path | None, threads: int, content: bytes | None = None, **options):
    """An allocated interpreter for a file (or, with content, flatbuffer bytes); options go to
    ai_edge_litert's Interpreter (tflite_runtime takes none)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise RuntimeUnavailable("no TFLite interpreter here: install ai-edge-litert (or tflite-runtime)") from None
    source = {"model_content": content} if content is not None else {"model_path": str(path)}
    interpreter = Interpreter(**source, num_threads=threads, **options)
    interpreter.allocate_tensors()
    return interpreter


def to_input(sample: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return sample.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(sample / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def input_encoder(detail: dict, path: Path, manifest: dict | None):
    """normalized NCHW float batch -> what this input takes: an app file's uint8 NHWC pixels (its
    preprocessing from its own metadata, else the manifest), or the tensor's own type and scale."""
    if not (detail["dtype"] == np.uint8 and detail["shape"][-1] == 3):
        return lambda sample: to_input(sample, detail)
    preprocessing = read_metadata(path).get("preprocessing") or (manifest or {}).get("preprocessing")
    if preprocessing is None:
        raise RuntimeUnavailable(f"{Path(path).name} takes uint8 pixels but says nothing of its preprocessing (no metadata, no manifest)")
    return lambda sample: pixels_from_normalized(sample, preprocessing["mean"], preprocessing["std"])
