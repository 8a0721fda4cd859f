"""ONNX (.onnx): fp32, and int8 in the QDQ format, run by ONNX Runtime on the CPU.

QDQ (QuantizeLinear/DequantizeLinear around each float op) is what ONNX Runtime Mobile and the
NPU toolchains that start from ONNX consume. fp32 is torch's own exporter (torch.onnx.export,
dynamo). int8 is ONNX Runtime's static quantizer on that graph, with the same recipe as every
target: calibrated on the real calibration images, symmetric int8 weights per channel (per tensor
with --per-tensor), 8-bit activations. Activations are uint8 (asymmetric), weights int8: "U8S8",
the pairing ONNX Runtime's x86 kernels are built for. Measured at 224 (MobileNetV2 1.0, 2 threads,
Xeon): U8S8 1.87 ms, S8S8 3.57 ms, fp32 3.04 ms: int8 activations made int8 slower than fp32.
Weights are 7-bit by default (ONNX Runtime's reduce_range): on an x86 CPU without VNNI, its U8S8
kernels multiply with VPMADDUBSW, whose 16-bit pair sums saturate with full 8-bit weights. Measured
on the demo classifier (AMD EPYC, AVX2, no VNNI): 8-bit weights 19.4 dB SQNR and 95.0% top-1
agreement, 7-bit 31.0 dB and 98.0%, same speed (0.294 / 0.300 ms); S8S8 saturates too (19.3 dB).
`--set onnx.weight_bits=8` keeps full 8-bit weights for runtimes that do not saturate (VNNI, ARM).
The recipe's observer maps onto ONNX Runtime's calibration:
histogram -> Entropy (histogram-based), minmax -> MinMax, moving_average -> MinMax with a moving
average. Measured on the suite's classifier (120 images): MinMax and Entropy 100% top-1 agreement,
30.3 dB; Percentile 98.3%, 30.2 dB.
"""

import json
from pathlib import Path

import torch

from quantization import qat
from quantization.annotations import path_is

from .executorch_program import XNNPACK
from .file_kinds import header
from .job import SELF_DESCRIPTION, ConversionJob, output_names, self_description
from .target import Target, TargetOption, TargetSpec, decode_option

SPEC = TargetSpec("onnx", ".onnx", ("fp32", "fp16", "int8", "int8_dynamic"), runtime="ONNX Runtime (CPU execution provider)",
                  runtime_modules=("onnxruntime",), device_runtime="onnxruntime", tool_packages=("onnx", "onnxscript", "onnxruntime"))
OPSET = 18
INPUT_NAME = "input"
WEIGHT_BITS = TargetOption("weight_bits", "7", ("7", "8"), "int8 weights: 7 (ONNX Runtime's reduce_range; no saturation on any x86: without VNNI its U8S8 "
                           "kernels saturate 8-bit weights) or 8 (only for runtimes with VNNI or ARM dot products)")


def export_fp32(job: ConversionJob, dest: Path) -> None:
    program = torch.onnx.export(job.model.eval(), (job.example,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=output_names(job), opset_version=OPSET, verbose=False)
    program.save(str(dest))


def _calibration_method(observer: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"histogram": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax, "moving_average": CalibrationMethod.MinMax}[observer]


def quantize_qdq(job: ConversionJob, float_model: Path, dest: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    images = job.require_calibration()
    job.calibrating_instead("ONNX Runtime's quantizer calibrates the ONNX graph itself and takes no ranges from PyTorch")

    class RealImages(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{INPUT_NAME: images[i : i + 1]} for i in range(len(images))])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(float_model), str(dest), RealImages(), quant_format=QuantFormat.QDQ, per_channel=job.recipe.per_channel,
        nodes_to_exclude=nodes_in_modules(float_model, job.recipe.float_modules),
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=_calibration_method(job.recipe.observer),
        reduce_range=job.options.get("weight_bits", WEIGHT_BITS.default) == "7",
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "CalibMovingAverage": job.recipe.observer == "moving_average"},
    )


def to_fp16(float_model: Path, dest: Path) -> None:
    """float16 weights and compute, float32 input and outputs (keep_io_types): the app feeds the same
    tensors as to fp32. ONNX Runtime's own converter; ops it has no float16 kernel for stay float32
    behind Casts (its default block list)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(float_model)), keep_io_types=True), str(dest))


def quantize_dynamic_range(job: ConversionJob, float_model: Path, dest: Path) -> None:
    """ONNX Runtime's dynamic quantizer: int8 weights (ConvInteger, MatMulInteger), activations quantized
    per call from their own range (DynamicQuantizeLinear). No calibration images."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(float_model), str(dest), per_channel=job.recipe.per_channel, weight_type=QuantType.QInt8,
                     nodes_to_exclude=nodes_in_modules(float_model, job.recipe.float_modules),
                     reduce_range=job.options.get(DYNAMIC_WEIGHT_BITS.name, DYNAMIC_WEIGHT_BITS.default) == "7", extra_options={"WeightSymmetric": True})


# Dynamic range runs ConvInteger, not the static graph's saturating U8S8 kernels: full 8-bit weights by
# default. Measured on the test classifier (AMD EPYC, AVX2, no VNNI): 8-bit 19.7 dB SQNR, 97.8% agreement,
# 2.7 ms; 7-bit 12.9 dB, 95.0%, 6.8 ms. (fp32: 0.29 ms. ONNX Runtime's dynamic quantization is made for
# MatMul-heavy models; on a convnet it is slower than fp32, and the report says so.)
DYNAMIC_WEIGHT_BITS = TargetOption("dynamic_weight_bits", "8", ("7", "8"), "int8_dynamic weights: 8 (ConvInteger does not saturate) or 7",
                                   precisions=("int8_dynamic",))


def nodes_in_modules(path: Path, modules: tuple[str, ...]) -> list[str]:
    """Names of the exported nodes that come from the given submodules (the dynamo exporter records
    each node's module path in its `pkg.torch.onnx.name_scopes` metadata): what stays float."""
    import ast

    import onnx

    if not modules:
        return []
    names = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        scopes = next((ast.literal_eval(e.value) for e in node.metadata_props if e.key == "pkg.torch.onnx.name_scopes"), [])
        enclosing = [scope for scope in scopes[:-1] if scope]  # each a module's qualified path; the last is the op itself
        if any(path_is(p, m) for p in enclosing for m in modules):
            names.append(node.name)
    return names


def operator_census(path: Path) -> dict:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {"counts": dict(sorted(counts.items())), "opset": OPSET}


def convert(job: ConversionJob, dest: Path) -> dict:
    if job.precision.name == "fp32":
        export_fp32(job, dest)
    else:
        float_model = dest.with_name(dest.name + ".float.onnx")  # a temporary sibling, removed below
        try:
            export_fp32(job, float_model)
            FROM_FP32[job.precision.name](job, float_model, dest)
        finally:
            float_model.unlink(missing_ok=True)
    _carry_description(dest, job)
    return {"operators": operator_census(dest), "carries": f"metadata_props {SELF_DESCRIPTION}"}


# each precision other than fp32: made from the fp32 export, by ONNX Runtime's own tools
FROM_FP32 = {"fp16": lambda job, source, dest: to_fp16(source, dest), "int8": quantize_qdq, "int8_dynamic": quantize_dynamic_range}


def _carry_description(path: Path, job: ConversionJob) -> None:
    """The self-description as a metadata property (what Netron and onnxruntime's modelmeta show)."""
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = SELF_DESCRIPTION, json.dumps(self_description(job))
    onnx.save(model, str(path))


def carried_description(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((json.loads(e.value) for e in model.metadata_props if e.key == SELF_DESCRIPTION), {})



# An ONNX ModelProto starts with its ir_version (field 1, a varint): tag byte 0x08.
TARGET = Target(SPEC, convert, describe=carried_description, options=(WEIGHT_BITS, DYNAMIC_WEIGHT_BITS, decode_option("host")),
                recognizes=lambda path: header(path)[:1] == b"\x08", recognized_alone=False,
                fake_quantization=qat.pt2e_scheme(XNNPACK))  # ONNX Runtime's QDQ int8: the same grid (symmetric int8 weights, 8-bit affine activations)
