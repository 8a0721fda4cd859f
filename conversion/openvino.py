"""OpenVINO IR (`.xml`, its weights beside it as `.xml.bin`): fp32, and int8 quantized by NNCF on the
run's real calibration images; run by OpenVINO's CPU plugin, the x86 edge runtime.

The graph is OpenVINO's own PyTorch frontend on the folded model (`openvino.convert_model`), saved
without its default float16 compression of weights: an fp32 artifact holds fp32 weights. int8 is
NNCF's post-training quantization of that graph (`nncf.quantize`, the CPU preset: symmetric int8
weights per output channel, or per tensor with --per-tensor; 8-bit activations), calibrated on the
very images every target calibrates on; the recipe's float modules (and a detector's in-graph decode)
are NNCF's ignored scope. Two of NNCF's defaults are changed, each measured on the test classifier
(300 val images, AMD EPYC with AVX2, no VNNI):
  - activation ranges are each tensor's extremes over the images (NNCF's MINMAX), not its default
    mean of per-batch ranges, which with one image per batch clips: 28.4 dB SQNR against 14.2 dB;
  - weights are 7-bit by default (NNCF's overflow fix on every layer, not only the first): without
    VNNI, the CPU plugin's u8s8 kernels multiply with VPMADDUBSW, whose 16-bit pair sums saturate with
    full 8-bit weights (19.1 dB against 28.4 dB). `--set openvino.weight_bits=8` keeps 8-bit weights
    for CPUs with VNNI or AMX, which do not saturate.

Why NNCF's IR and not OpenVINO reading the ONNX target's QDQ file (which it can, and which would
share one int8 graph between two targets): benchmarks/fastest.py times both in one run. On a Xeon with
AMX the NNCF IR ran 2.5x faster at 224 px (2.29 against 5.83 ms) and 1.28x at 512 (8.76 against
11.19 ms); on an AMD EPYC with AVX2 only, the QDQ file was about 7% faster at 224. The CPU plugin
fuses NNCF's FakeQuantize placement into its int8 kernels; ONNX Runtime's QDQ placement leaves it
reorders and float islands on the CPUs that gain most from int8.

The weights file is a sidecar named after the artifact (`model.xml` -> `model.xml.bin`), hashed and
signed with it; load it with `core.read_model("model.xml", "model.xml.bin")`.

Inference precision is pinned: on CPUs with AVX-512 BF16 or AMX, OpenVINO's CPU plugin runs an fp32
model in bf16 unless told otherwise, a silent precision change. The IR declares the precision it is
to be computed in (rt_info runtime_options/INFERENCE_PRECISION_HINT: f32, or bf16 for the bf16
artifact), and every runner here compiles with that hint (edgemnv2/device/runtime_adapters.py) and
reports what the convolutions ran in. OpenVINO itself does not apply that rt_info entry (measured,
2026.4): a program of your own must pass INFERENCE_PRECISION_HINT when it compiles the model.

bf16 is the fp32 IR (float32 weights) declared for bfloat16 compute: made only when named (`--precision
bf16`), and run only where OpenVINO's CPU plugin offers bf16 (AVX-512 BF16 or AMX; some newer AVX2
client CPUs too: the plugin's capability list decides, not the CPU's flags); elsewhere its runner
refuses, rather than report float32 figures as bfloat16 ones. A runner also holds the IR to its
manifest: an IR that declares another precision than its manifest's implies is refused.
"""

import json
import shutil
from pathlib import Path

from edgemnv2.device.runtime_adapters import DECLARED_INFERENCE_PRECISION, openvino_hint
from edgemnv2.fileio import temp_path

from . import openvino_ops
from .file_kinds import header
from .job import SELF_DESCRIPTION, ConversionJob, output_names, self_description
from .target import Target, TargetOption, TargetSpec, decode_option
from .writer import SIDECARS, sidecar_temp

WEIGHTS = ".bin"  # the weights sidecar: <artifact>.bin, part of what ships
SPEC = TargetSpec("openvino", ".xml", ("fp32", "bf16", "int8"), runtime="OpenVINO (CPU plugin)", runtime_modules=("openvino",), device_runtime="openvino",
                  tool_packages=("openvino",), precision_tools={"int8": ("nncf",)}, shipped_sidecars=(WEIGHTS,), on_request=("bf16",))
RT_INFO = ["edgemnv2", SELF_DESCRIPTION]  # where the IR carries the self-description (its rt_info section)
WEIGHT_BITS = TargetOption("weight_bits", "7", ("7", "8"), "int8 weights: 7 (NNCF's overflow fix: no saturation on any x86; without VNNI "
                           "the CPU plugin's u8s8 kernels saturate 8-bit weights) or 8 (CPUs with VNNI or AMX only)", precisions=("int8",))
# The recipe's observers (PyTorch's) as NNCF's range estimators: the extremes over every image, or
# (moving_average) NNCF's mean of the per-image ranges
ESTIMATORS = {"histogram": "MINMAX", "minmax": "MINMAX", "moving_average": "MEAN_MINMAX"}


def _silence_telemetry() -> None:
    """`import edgemnv2` keeps openvino_telemetry from being imported, so OpenVINO's converter and NNCF
    take their stubs. A program that imported openvino (or nncf) before edgemnv2 has the real one bound
    already: swap each binding for its stub before anything here calls it."""
    import sys

    if sys.modules.get("openvino_telemetry") is None:
        return
    from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils

    convert_impl.tm = telemetry_utils.tm = telemetry_stub
    import nncf.telemetry
    from nncf.telemetry import decorator, wrapper

    nncf.telemetry.telemetry = decorator.telemetry = wrapper.telemetry = wrapper.NNCFTelemetryStub()


def float_model(job: ConversionJob):
    """The folded model as an OpenVINO graph (its PyTorch frontend, traced on the job's example)."""
    import openvino as ov

    _silence_telemetry()
    model = ov.convert_model(job.model.eval(), example_input=job.example)
    for output, name in zip(model.outputs, output_names(job)):
        output.get_tensor().set_names({name})
    return model


def ignored_scope(model, modules: tuple[str, ...]):
    """NNCF's ignored scope for the given module paths. The frontend names each node after the module
    it came from (`__module.features.3.conv.0.0/aten::_convolution/Convolution`)."""
    import re

    import nncf

    # at any depth: with the detector's decode in the graph, the network's layers sit under `net.`
    patterns = [rf"^__module\.(.+\.)?{re.escape(path)}[./]" for path in modules]
    return nncf.IgnoredScope(patterns=patterns, validate=True)  # a pattern that matches no node is an error, not a no-op


def quantize(job: ConversionJob, model):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    _silence_telemetry()
    images = job.require_calibration()
    estimator = ESTIMATORS[job.recipe.observer]
    seven_bits = job.options.get(WEIGHT_BITS.name, WEIGHT_BITS.default) == "7"
    advanced = AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(per_channel=job.recipe.per_channel),
                                              activations_range_estimator_params=getattr(RangeEstimatorParametersSet, estimator),
                                              overflow_fix=OverflowFix.ENABLE if seven_bits else OverflowFix.DISABLE)
    job.observer_used = f"NNCF {estimator} (the recipe's {job.recipe.observer})"
    return nncf.quantize(model, nncf.Dataset([images[i : i + 1] for i in range(len(images))]), subset_size=len(images),
                         preset=nncf.QuantizationPreset.PERFORMANCE, target_device=nncf.TargetDevice.CPU,
                         ignored_scope=ignored_scope(model, job.recipe.float_modules), advanced_parameters=advanced)


def convert(job: ConversionJob, dest: Path) -> dict:
    import openvino as ov

    model = float_model(job)
    if job.precision.name == "int8":
        model = quantize(job, model)
    model.set_rt_info(json.dumps(self_description(job)), RT_INFO)
    model.set_rt_info(openvino_hint(job.precision.name), list(DECLARED_INFERENCE_PRECISION))
    weights = sidecar_temp(dest, WEIGHTS)
    # save_model names the weights after the .xml (x.xml -> x.bin) and compresses them to float16 by
    # default: saved in a folder of its own, uncompressed, then moved to the artifact's temp names
    scratch = temp_path(dest.with_name("openvino-save"))  # a writer's temp name: a killed convert's leftover is removed later
    scratch.mkdir()
    try:
        ov.save_model(model, str(scratch / "model.xml"), compress_to_fp16=False)
        shutil.move(scratch / "model.xml", dest)
        shutil.move(scratch / "model.bin", weights)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record = {"operators": operator_census(model), "inference_precision": f"{openvino_hint(job.precision.name)} (declared in the IR; every runner compiles with it as INFERENCE_PRECISION_HINT)",
              "weights_file": f"{WEIGHTS} sidecar: read_model(xml, xml + '{WEIGHTS}')", SIDECARS: {WEIGHTS: weights}}
    if job.precision.name == "int8":  # int8 storage; with the overflow fix, the values span 7 bits
        record["weight_value_bits"] = int(job.options.get(WEIGHT_BITS.name, WEIGHT_BITS.default))
    return record


def operator_census(model) -> dict:
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return {"counts": dict(sorted(counts.items())), "fake_quantize": counts.get("FakeQuantize", 0)}


def carried_description(path: Path) -> dict:
    """The self-description the IR carries in its rt_info ({} if none)."""
    import openvino as ov

    model = ov.Core().read_model(str(path), str(Path(str(path) + WEIGHTS)))
    if not model.has_rt_info(RT_INFO):
        return {}
    return json.loads(model.get_rt_info(RT_INFO).astype(str))


def recognizes(path: Path) -> bool:
    """An OpenVINO IR: XML whose root element is <net>, whatever comes before it (a byte-order mark,
    declarations, comments of any length), as OpenVINO itself reads it. Only the root's start tag is
    parsed (expat: no external entity is fetched)."""
    from xml.etree.ElementTree import ParseError, iterparse

    if not header(path, 1):  # not a regular, readable, non-empty file
        return False
    try:
        for _, element in iterparse(str(path), events=("start",)):
            return element.tag == "net"
    except (ParseError, OSError, ValueError):
        return False
    return False


TARGET = Target(SPEC, convert, describe=carried_description, options=(WEIGHT_BITS, decode_option("host")), recognizes=recognizes,
                # any .xml in an artifacts folder is meant as an artifact (it needs a manifest), whatever its bytes:
                # a foreign IR must not pass unchecked by looking like some other XML
                recognized_alone=False, claims_suffix=True, profile=openvino_ops.profile, capture=openvino_ops.capture)
