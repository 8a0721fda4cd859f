"""One adapter per runtime family: load an artifact and run it on numpy arrays, nothing else.

Imports only numpy, and the one runtime a family needs when it is asked for, so that the same file
serves the bundles' device runner (run_bundle.py, shipped beside it) and the host's runner processes
(edgemnv2.confine.child). Each adapter: (path, threads, manifest) -> (run_one, runtime name, version),
where run_one takes one normalized NCHW float32 sample (batch 1) and returns float32 outputs; an
adapter whose artifact takes another input (an app .tflite's uint8 pixels) gives run_one `encode`
and `run_encoded`, so latency is timed on the artifact's own input.
"""

import platform
import sys

import numpy as np


class NoRuntime(Exception):
    """The runtime this artifact needs is not installed here (or cannot run on this OS)."""


class ArtifactMismatch(Exception):
    """The artifact is not what its manifest says (an IR declaring another inference precision than its
    manifest's precision): refused, never run as if it were."""


def _tflite(path, threads, manifest):
    try:
        from ai_edge_litert.interpreter import Interpreter
        name, module = "ai_edge_litert", "ai_edge_litert"
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
            name, module = "tflite_runtime", "tflite_runtime"
        except ImportError:
            raise NoRuntime("no TFLite interpreter here: install ai-edge-litert (or tflite-runtime)")
    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    key = list(interpreter.get_signature_list())[0]
    runner = interpreter.get_signature_runner(key)
    (input_name, input_detail), = runner.get_input_details().items()
    names = interpreter.get_signature_list()[key]["outputs"]
    order = sorted(names, key=lambda n: int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else n)
    output_details = runner.get_output_details()

    app_input = input_detail["dtype"] == np.uint8 and input_detail["shape"][-1] == 3  # uint8 NHWC pixels (app-ready file)
    if app_input:
        mean = np.array(manifest["preprocessing"]["mean"], np.float32)[:, None, None]
        std = np.array(manifest["preprocessing"]["std"], np.float32)[:, None, None]

    def to_input(sample):
        if app_input:  # the bundle's inputs are normalized NCHW: back to the pixels they came from
            pixels = np.clip(np.round((sample * std + mean) * 255.0), 0, 255).astype(np.uint8)
            return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
        if input_detail["dtype"] == np.float32:
            return sample.astype(np.float32)
        scale, zero = input_detail["quantization"]
        info = np.iinfo(input_detail["dtype"])
        return np.clip(np.round(sample / scale + zero), info.min, info.max).astype(input_detail["dtype"])

    def from_output(values, detail):
        if values.dtype == np.float32:
            return values
        scale, zero = detail["quantization"]
        return ((values.astype(np.float32) - zero) * scale).astype(np.float32)

    def run_encoded(value):
        result = runner(**{input_name: value})
        return [from_output(result[n], output_details[n]) for n in order]

    def run_one(sample):
        return run_encoded(to_input(sample))

    # latency on the file's own input, converted once outside the clock (as an app hands it pixels)
    run_one.encode, run_one.run_encoded = to_input, run_encoded
    return run_one, name, _version(module)


def _executorch(path, threads, manifest):
    try:
        import torch
        from executorch.runtime import Runtime
    except ImportError:
        raise NoRuntime("executorch is not installed")
    torch.set_num_threads(threads)
    method = Runtime.get().load_program(path).load_method("forward")

    def run_one(sample):
        return [o.float().numpy() for o in method.execute([torch.from_numpy(sample)])]

    return run_one, "executorch", _version("executorch")


def _torchscript(path, threads, manifest):
    try:
        import torch
    except ImportError:
        raise NoRuntime("torch is not installed")
    torch.set_num_threads(threads)
    if manifest.get("quantized_engine"):
        torch.backends.quantized.engine = manifest["quantized_engine"]
    if path.endswith(".ptl"):
        from torch.jit.mobile import _load_for_lite_interpreter
        module = _load_for_lite_interpreter(path)
    else:
        module = torch.jit.load(path).eval()

    def run_one(sample):
        with torch.no_grad():
            out = module(torch.from_numpy(sample))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().numpy() for o in out]

    run_one.batched = True  # a TorchScript module takes any batch (the host's runners give it whole batches)

    return run_one, "torch.jit" + (" lite interpreter" if path.endswith(".ptl") else ""), _version("torch")


def _coreml(path, threads, manifest):
    if sys.platform != "darwin":
        raise NoRuntime("CoreML runs only on macOS (this is %s)" % platform.system())
    try:
        import coremltools as ct
    except ImportError:
        raise NoRuntime("coremltools is not installed")
    model = ct.models.MLModel(path, compute_units=ct.ComputeUnit.CPU_ONLY)
    spec = model.get_spec()
    input_name = spec.description.input[0].name
    takes_image = spec.description.input[0].type.WhichOneof("Type") == "imageType"  # the app-ready package
    outputs = list(manifest["outputs"])  # by name: an app classifier also has classLabel and probabilities
    mean = np.array(manifest["preprocessing"]["mean"], np.float32)[:, None, None]
    std = np.array(manifest["preprocessing"]["std"], np.float32)[:, None, None]

    def run_one(sample):
        value = sample
        if takes_image:
            from PIL import Image

            pixels = np.clip(np.round((sample[0] * std + mean) * 255.0), 0, 255).astype(np.uint8)
            value = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB")
        result = model.predict({input_name: value})
        return [np.asarray(result[n], np.float32) for n in outputs]

    return run_one, "coremltools", _version("coremltools")


def _onnxruntime(path, threads, manifest):
    try:
        import onnxruntime as ort
    except ImportError:
        raise NoRuntime("onnxruntime is not installed")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def run_one(sample):
        return [np.asarray(o, np.float32) for o in session.run(names, {input_name: sample})]

    return run_one, "onnxruntime", _version("onnxruntime")


# Where an OpenVINO IR declares the precision it is to be computed in (conversion/openvino.py writes it).
# OpenVINO's own runtime_options section; its CPU plugin does not apply this entry by itself.
DECLARED_INFERENCE_PRECISION = ("runtime_options", "INFERENCE_PRECISION_HINT")
OPENVINO_HINTS = {"f32": "", "bf16": "BF16"}  # hint -> the CPU plugin capability it needs ("": any CPU)
# the hint a manifest's precision implies: bf16 for bf16, f32 pinned for everything else (int8 layers run
# in int8 whatever the hint; it rules the layers left in float)
HINT_OF_PRECISION = {"bf16": "bf16"}
# layers whose runtime precision says what the network's arithmetic ran in
OPENVINO_COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")


def openvino_hint(precision: str) -> str:
    """The inference precision an artifact of this precision declares, and its runners compile with."""
    return HINT_OF_PRECISION.get(precision, "f32")


def openvino_expected_hint(manifest) -> "str | None":
    """The inference precision a manifest's precision implies (None: no manifest to hold the IR to)."""
    precision = (manifest or {}).get("precision")
    return openvino_hint(precision) if precision else None


def openvino_offers_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 on this CPU: its own word (AVX-512 BF16 or AMX; some
    newer AVX2 client CPUs too), not a guess from the CPU's flags."""
    import openvino as ov

    return OPENVINO_HINTS["bf16"] in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_compiled(path, threads, weights=None, edit=None, expected=None, **extra):
    """An OpenVINO IR compiled for the CPU plugin as every runner here runs it: its weights from the
    sidecar named after it, one stream, `threads` threads, and the inference precision the IR declares
    pinned (f32 when it declares none: on CPUs with AVX-512 BF16 or AMX the plugin would otherwise run
    an fp32 model in bf16). `expected`: the hint the manifest's precision implies; an IR that declares
    another is refused (ArtifactMismatch), as is a hint no runner here runs. A bf16 IR on a CPU whose
    plugin offers no bf16 is refused (NoRuntime): the plugin would quietly compute it in f32.
    `weights`: another weights file ("" for a format that holds its own, such as ONNX, which OpenVINO
    also reads). `edit(model)`: a change to the graph before it compiles (debug adds outputs). `extra`
    properties never override the pinned ones."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path), str(path) + ".bin" if weights is None else weights)
    key = list(DECLARED_INFERENCE_PRECISION)
    hint = model.get_rt_info(key).astype(str) if model.has_rt_info(key) else "f32"
    if hint not in OPENVINO_HINTS:
        raise ArtifactMismatch(f"the IR declares inference precision {hint!r}; runners here run {' or '.join(OPENVINO_HINTS)}")
    if expected is not None and hint != expected:
        raise ArtifactMismatch(f"the IR declares inference precision {hint}, but its manifest's precision implies {expected}")
    needs = OPENVINO_HINTS[hint]
    if needs and needs not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise NoRuntime(f"this {hint} artifact needs a CPU on which OpenVINO computes {hint} (AVX-512 BF16 or AMX): its CPU plugin "
                        f"offers no {hint} on this one (it would compute it in f32)")
    if edit is not None:
        edit(model)
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    return core.compile_model(model, "CPU", dict(extra, **config))


def openvino_execution_precision(compiled) -> str:
    """What the compiled network's arithmetic layers run in, from the runtime graph (each layer's
    runtimePrecision): the truth, where the hint is only a request. e.g. "f32", "bf16", "u8 + i8"."""
    counts = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in OPENVINO_COMPUTE_LAYERS:
            precision = info["runtimePrecision"].astype(str)
            counts[precision] = counts.get(precision, 0) + 1
    return " + ".join(sorted(counts, key=lambda p: -counts[p])) or "unknown"


def _openvino(path, threads, manifest):
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise NoRuntime("openvino is not installed")
    compiled = openvino_compiled(path, threads, expected=openvino_expected_hint(manifest))
    request = compiled.create_infer_request()
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    executed = openvino_execution_precision(compiled)
    # the hint is a request: what the layers ran in must agree with it (no bf16 layer under f32, some under bf16)
    if ("bf16" in executed.split(" + ")) != (hint == "bf16"):
        raise RuntimeError(f"OpenVINO was asked for {hint} inference and ran its layers in {executed}")

    def run_one(sample):
        request.infer({0: sample})
        return [np.asarray(request.get_output_tensor(i).data, np.float32).copy() for i in range(len(compiled.outputs))]

    return run_one, f"OpenVINO CPU, inference precision {hint}, layers ran in {executed}", _version("openvino")


def _version(module):
    try:
        from importlib import metadata
        for dist in (module, module.replace("_", "-")):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    except ImportError:
        pass
    return getattr(sys.modules.get(module), "__version__", "unknown")


# The runtime families, by the `device_runtime` each target declares (conversion/target.py TargetSpec);
# bundle.json and the host's runner requests name the family of their artifact.
# What each family imports: a runner process imports it before it starts the clock on loading the
# artifact, so load times stay those of loading, as in a process where the runtime was imported.
# Core ML runs only on macOS: elsewhere its adapter says so before importing anything (coremltools
# alone takes 10 s to import).
IMPORTS = {"tflite": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"), "executorch": ("torch", "executorch.runtime"),
           "torch": ("torch", "torch.jit.mobile"), "coreml": ("coremltools",) if sys.platform == "darwin" else (), "onnxruntime": ("onnxruntime",),
           "openvino": ("openvino",)}
RUNTIMES = {"tflite": _tflite, "executorch": _executorch, "torch": _torchscript, "coreml": _coreml, "onnxruntime": _onnxruntime,
            "openvino": _openvino}
