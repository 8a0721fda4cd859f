"""TFLite (LiteRT) via litert-torch: fp32, or int8 (int8 weights and activations); fp16, int8_dynamic,
int8_weights and int16x8 by LiteRT's own quantizer (ai-edge-quantizer) on the fp32 file.

By default the file is app-ready (conversion/tflite_app.py): uint8 NHWC pixels in, the network's
preprocessing inside the graph, float32 outputs, and TFLite Metadata (labels, normalization, name,
version), so MediaPipe Tasks and the LiteRT support library take it as it is. `--set
tflite.input=nchw` keeps PyTorch's normalized NCHW float input instead (and int8 inputs/outputs
for int8: the runner quantizes and dequantizes with each tensor's own scale and zero point).
Interpreters: ai_edge_litert (maintained), else tflite_runtime (what many boards still have).
"""

import re
from pathlib import Path

from edgemnv2.artifacts import RuntimeUnavailable
from edgemnv2.errors import one_line
from edgemnv2.tasks import get_task
from edgemnv2.tasks.base import labelled_output
from edgemnv2.version import __version__
from quantization import qat
from quantization.ptq import pt2e_quantize

from . import tflite_ops, tflite_weights
from .file_kinds import flatbuffer_identified
from .job import ConversionJob, output_names, self_description
from .target import Target, TargetOption, TargetSpec, decode_option
from .tflite_app import AppImageInput, delegated_pixel_input, example_pixels, float_outputs, metadata_bytes, pixels_from_normalized, read_metadata, with_metadata
from .tflite_interpreter import make_interpreter, operator_names
from .tflite_quantizer import LITERT

SPEC = TargetSpec("tflite", ".tflite", ("fp32", "fp16", "int8", "int8_dynamic", "int8_weights", "int16x8"), runtime="LiteRT interpreter (ai-edge-litert)",
                  runtime_modules=("ai_edge_litert", "tflite_runtime"), device_runtime="tflite", tool_packages=("litert-torch", "ai-edge-litert"),
                  precision_tools={name: ("ai-edge-quantizer",) for name in ("fp16", "int8_dynamic", "int8_weights", "int16x8")})


# the precisions made from the fp32 file by ai-edge-quantizer's recipes (conversion/tflite_weights.py)
FROM_FP32 = {"fp32": None, "fp16": tflite_weights.FP16, "int8_dynamic": tflite_weights.DYNAMIC_INT8, "int8_weights": tflite_weights.WEIGHT_ONLY_INT8,
             "int16x8": tflite_weights.INT16X8}


INPUT = TargetOption("input", "app", ("app", "nchw"), "app: uint8 NHWC pixels in (preprocessing inside the graph), float32 out, "
                     "TFLite Metadata with labels (MediaPipe Tasks takes it as it is); nchw: PyTorch's normalized NCHW float input")


def convert(job: ConversionJob, dest: Path) -> dict:
    import litert_torch

    app = job.options.get("input", INPUT.default) == "app"
    model, example, calibration = job.model.eval(), job.example, None
    preprocessing = job.meta.preprocessing
    if app:
        model, example = AppImageInput(model, preprocessing.mean, preprocessing.std).eval(), example_pixels(job.example)
    if job.precision.name in FROM_FP32:  # one fp32 conversion per run serves fp32 and every precision made from it
        content = job.shared(f"tflite-fp32-{app}-{id(job.model)}", lambda: litert_torch.convert(model, (example,)).model_content())
        kind = FROM_FP32[job.precision.name]
        if job.precision.needs_calibration:  # int16x8: ranges from the run's images, in the file's own input
            images = job.require_calibration()
            images = pixels_from_normalized(images, preprocessing.mean, preprocessing.std) if app else images
            content = tflite_weights.quantize_calibrated(content, kind, job.recipe.per_channel, images, job.recipe.float_modules)
            job.observer_used = tflite_weights.CALIBRATION
        elif kind is not None:
            content = tflite_weights.quantize(content, kind, job.recipe.per_channel)
    else:
        from litert_torch.quantize.quant_config import QuantConfig

        calibration = job.require_calibration()
        if app:  # the same images, as the uint8 pixels the app graph takes
            calibration = pixels_from_normalized(calibration, preprocessing.mean, preprocessing.std)
        if app:
            also = " and --set tflite.decode=host" if job.postprocessed else ""
            job.calibrating_instead("the app-ready input (uint8 pixels, the preprocessing in the graph) stands around the network QAT trained; "
                                    f"--set tflite.input=nchw{also} takes the trained ranges")
        quantized = None if app else job.trained_int8(lambda graph: qat.pt2e_convert(graph, fold_quantize=False))  # QAT's graph, its ranges
        quantizer = LITERT.build(job.recipe, quantized is not None)
        if quantized is None:
            quantized = pt2e_quantize(model, example, quantizer, calibration, fold_quantize=False)
        content = litert_torch.convert(quantized, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).model_content()
    if app:
        content = _app_ready(content, job)
    _check_loads(content)
    # Write from Python, not through the converter's own file writer: on a full disk LLVM's writer
    # aborts the whole process, while Python raises an OSError that fails just this artifact.
    dest.write_bytes(content)
    # The operator census goes in the manifest: "int8 inside" is then checkable without tooling.
    record = {"operators": operator_census(dest, job.postprocess_modules)}
    if app:  # what the file takes (the manifest's generic record says NCHW float32)
        height, width = preprocessing.input_size
        record.update(input_shape=[1, height, width, 3], input_layout="NHWC uint8 (RGB pixels 0-255; the preprocessing is inside the graph)")
    return record


def _app_ready(content: bytes, job: ConversionJob) -> bytes:
    meta = job.meta
    task = get_task(meta.task)
    names = output_names(job)
    # the output whose values index the labels file: the logits, the detector's heatmap channels or its classes
    label_output = labelled_output(task, names)
    metadata = metadata_bytes(
        name=f"{meta.arch} {meta.task} ({job.precision.name})",
        description=f"{meta.arch} {meta.task} for {len(meta.class_names)} classes; outputs {', '.join(names)}. Converted by edgemnv2 {__version__}.",
        version=f"edgemnv2 {__version__}", author="edgemnv2", license="as the source checkpoint's",
        input_size=tuple(meta.preprocessing.input_size),
        outputs=[(name, f"{name} (float32)", index == label_output) for index, name in enumerate(names)],
        preprocessing=meta.preprocessing.to_dict(), carried=self_description(job))
    if job.precision.full_int8:  # XNNPACK runs int8; it has no int16 kernels to hand the pixels to
        content = delegated_pixel_input(content)
    return with_metadata(float_outputs(content), metadata, {"labels.txt": "\n".join(meta.class_names).encode()})


class InterpreterRefused(RuntimeError):
    expected = True  # the runtime refusing a file its own quantizer wrote: exit 1 with its message, not a bug report


def _check_loads(content: bytes) -> None:
    """The interpreter prepares every op when it allocates: a file it cannot prepare is no artifact
    (ai-edge-quantizer has written quantization parameters the kernels refuse), so the conversion fails
    here, saying why, rather than writing a file every runner refuses."""
    try:
        make_interpreter(None, 1, content)
    except RuntimeUnavailable:
        return  # no interpreter here to ask (the conversion itself needs none)
    except (RuntimeError, ValueError) as exc:
        raise InterpreterRefused(f"the LiteRT interpreter cannot load the converted file: {one_line(exc)}") from None


def _module_pattern(modules: tuple[str, ...]) -> re.Pattern | None:
    """The converter names each tensor by a module path, levels `<class>_<attribute>` joined by "/"
    (`...DecodedDetector_model/...CenterNetDecode_decode;37`), though not every level of the module
    tree appears (the network's convs are `...DecodedDetector_model/...Conv2d_0`): a module is
    matched by its own, last level (`decode` for `decode`, `head` for `net.head`)."""
    if not modules:
        return None
    levels = sorted({module.rsplit(".", 1)[-1] for module in modules})
    return re.compile("(" + "|".join(f"[^/;]_{re.escape(level)}" for level in levels) + ")(?=[;/]|$)")


def operator_census(path: Path, postprocess_modules: tuple[str, ...] = ()) -> dict:
    """{"counts": {op: n}, "float_ops": [op, ...], "postprocess_ops": {op: n}}.

    float_ops are the network's operators that read or write a float32 tensor, so for a full-int8
    model it is only the edges (the pixels' DEQUANTIZE and QUANTIZE, a DEQUANTIZE per output map).
    In-graph post-processing (the submodules a task's wrapper declares in FLOAT_MODULES, passed as
    `postprocess_modules`: a detector's decode) is float by design: its operators, found by the module
    path in their tensors' names, and everything computed from them, are counted apart, in postprocess_ops.
    """
    from ai_edge_litert import schema_py_generated as schema

    op_names = operator_names()
    postprocess_names = _module_pattern(tuple(postprocess_modules))
    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    counts, float_ops, postprocess, downstream = {}, [], {}, set()
    for i in range(graph.OperatorsLength()):  # operators are stored in execution order
        op = graph.Operators(i)
        opcode = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode()), "CUSTOM")
        inputs = [op.Inputs(j) for j in range(op.InputsLength()) if op.Inputs(j) >= 0]
        outputs = [op.Outputs(j) for j in range(op.OutputsLength()) if op.Outputs(j) >= 0]
        counts[name] = counts.get(name, 0) + 1
        named = postprocess_names is not None and any(postprocess_names.search(graph.Tensors(t).Name().decode(errors="replace")) for t in outputs)
        if named or downstream.intersection(inputs):
            downstream.update(outputs)
            postprocess[name] = postprocess.get(name, 0) + 1
        elif any(graph.Tensors(t).Type() == schema.TensorType.FLOAT32 for t in inputs + outputs):
            float_ops.append(name)
    return {"counts": counts, "float_ops": float_ops, "postprocess_ops": postprocess}


def carried_description(path: Path) -> dict:
    """The self-description a `.tflite` carries in its TFLite Metadata ({} if none)."""
    return read_metadata(path).get("self_description", {})


TARGET = Target(SPEC, convert, describe=carried_description, options=(INPUT, decode_option("graph")),
                profile=tflite_ops.profile, capture=tflite_ops.capture, peak_gemm=tflite_ops.peak_gemm,
                recognizes=flatbuffer_identified(b"TFL3"), fake_quantization=qat.pt2e_scheme(LITERT), pt2e_quantizer=LITERT)
