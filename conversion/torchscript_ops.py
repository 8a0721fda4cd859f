"""TorchScript in this process: loading a .pt with its quantized engine, and its per-op profile through
torch.profiler (the top-level ops of each forward call).

Frozen TorchScript inlines every submodule, so the profiler's module hierarchy is empty; the ops'
source layers come from their order (edgemnv2.layerwise.source). The interpreter's own time
(forward beyond its ops) is one "overhead" row.

The profiler is not free: recording an op costs a few microseconds, about a third of a small int8
model's time (the demo detector: ops summed to 1.39 ms under the profiler against 1.00 ms end to
end, AMD EPYC). `profiler_cost` measures that cost once per process on a traced chain of tiny
adds, timed with and without the profiler, and each row is given without it.
"""

import functools
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from edgemnv2.layerwise.peak import gmacs_of
from edgemnv2.layerwise.records import Capture, RuntimeOp
from quantization.ptq import fx_quantize

from .gemm_peak import gemm_model, recipe
from .job import zipped_extra_file

# ---- loading a .pt in this process (the profiler, debug's capture and the converter's description) ----

def carried_description(path: Path) -> dict:
    """The description a `.pt` carries (extra file edgemnv2.json); {} for files from before it did."""
    return zipped_extra_file(path)


def use_quantized_engine(path: Path, manifest: dict) -> str | None:
    """Switch torch to the artifact's quantized engine before loading it (packed weights are
    unpacked for the engine current at load time); returns the engine, None for float artifacts."""
    engine = manifest.get("quantized_engine")
    if engine == "onednn" and not torch.cpu._is_vnni_supported():
        warnings.warn(f"{Path(path).name}: quantized for onednn (8-bit activations), but this CPU has no VNNI: "
                      "int16 overflow may cost accuracy here; convert with --set torchscript.engine=x86 for such CPUs", stacklevel=3)
    if engine:
        torch.backends.quantized.engine = engine
    return engine


def load_module(path: Path, manifest: dict | None) -> tuple[torch.jit.ScriptModule, str | None]:
    """(the archive's module, its quantized engine), the engine switched on before loading."""
    if manifest is None:  # the file says which quantized engine its packed weights need
        manifest = carried_description(path)
    engine = use_quantized_engine(path, manifest)
    return torch.jit.load(str(path)).eval(), engine


COMPUTE_OPS = {"quantized::conv2d": "conv", "quantized::conv2d_relu": "conv", "quantized::linear": "gemm", "quantized::linear_relu": "gemm",
               "aten::conv2d": "conv", "aten::_convolution": "conv", "aten::mkldnn_convolution": "conv", "aten::linear": "gemm",
               "aten::addmm": "gemm", "prepacked::conv2d_clamp_run": "conv", "prepacked::linear_clamp_run": "gemm"}


def _op_kind(event) -> str:
    """conv / gemm / other. The profiler runs without record_shapes (it would add microseconds to
    every op), so depthwise is not told apart here: the mapping onto the source layers says which."""
    return COMPUTE_OPS.get(event.name, "other")


def profile_module(module, sample: np.ndarray, runs: int, quantized_engine: str | None, dtype: str) -> list[RuntimeOp]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    if quantized_engine:
        torch.backends.quantized.engine = quantized_engine
    tensor = torch.from_numpy(np.ascontiguousarray(sample[:1], dtype=np.float32))
    with torch.no_grad():
        for _ in range(3):
            module(tensor)
        with torch_profile(activities=[ProfilerActivity.CPU]) as recorded:
            for _ in range(runs):
                module(tensor)
    inside, per_event = profiler_cost()
    calls = [event for event in recorded.events() if event.name == "forward" and event.cpu_parent is None]
    # an op's time without what recording it (and the ops it calls) added
    per_call = [[(child.name, child.cpu_time_total / 1000 - inside, child) for child in call.cpu_children] for call in calls]
    length = min(len(ops) for ops in per_call)
    ops = []
    for position in range(length):
        name, _, event = per_call[0][position]
        ms = float(np.median([ops_of_call[position][1] for ops_of_call in per_call]))
        ops.append(RuntimeOp(name, max(ms, 0.0), _op_kind(event), dtype))
    forward_ms = float(np.median([call.cpu_time_total / 1000 - per_event * len(call.cpu_children) for call in calls]))
    ops.append(RuntimeOp("TorchScript interpreter (outside the ops)", max(forward_ms - sum(op.ms for op in ops), 0.0), "overhead"))
    return ops


class _AddChain(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(CALIBRATION_OPS):
            x = x + 1.0
        return x


CALIBRATION_OPS = 200


@functools.lru_cache(maxsize=1)
def profiler_cost() -> tuple[float, float]:
    """(inside, per_event) in ms: what torch.profiler adds inside a recorded op's own span, and in
    all, per op the interpreter runs, from CALIBRATION_OPS one-element adds timed with and without
    it. Only the interpreter's ops are charged: the events nested inside an op (a quantized conv
    records its allocations) measured far cheaper, and are left in their op's time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x = torch.zeros(1)
    chain = torch.jit.trace(_AddChain(), x)  # unrolled, as the artifacts' traced graphs are
    for _ in range(5):
        chain(x)
    plain = []
    for _ in range(30):
        start = time.perf_counter()
        chain(x)
        plain.append((time.perf_counter() - start) * 1000)
    with torch_profile(activities=[ProfilerActivity.CPU]) as recorded:
        for _ in range(30):
            chain(x)
    calls = [event for event in recorded.events() if event.name == "forward" and event.cpu_parent is None]
    profiled, unprofiled = float(np.median([call.cpu_time_total / 1000 for call in calls])), float(np.median(plain))
    own = unprofiled / CALIBRATION_OPS  # an add as the interpreter runs it, dispatch included
    recorded_add = float(np.median([child.cpu_time_total / 1000 for call in calls for child in call.cpu_children]))
    per_event = max(profiled - unprofiled, 0.0) / CALIBRATION_OPS
    return max(recorded_add - own, 0.0), per_event


def profile(path: Path, manifest: dict, threads: int, sample: np.ndarray, runs: int = 30) -> list[RuntimeOp]:
    torch.set_num_threads(threads)
    module, engine = load_module(path, manifest)
    return profile_module(module, sample, runs, engine, "int8" if engine else "fp32")


def peak_gemm(dtype: str, threads: int) -> float:
    model, example, calibration = gemm_model()
    torch.set_num_threads(threads)
    if dtype == "int8":
        model = fx_quantize(model, example, calibration, recipe(), "x86")
        torch.backends.quantized.engine = "x86"
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False).eval())
        return gmacs_of(lambda: frozen(example))


def capture(path: Path, manifest: dict | None, images: np.ndarray, rebuild=None, threads: int = 1) -> list[list]:
    """Per image, every conv/linear output, from the archive's own frozen graph with those values
    added to its outputs (run by the same interpreter, on the same quantized engine). An in-place
    activation after a conv (x86's separate hardtanh_) has already run on the value returned."""
    torch.set_num_threads(threads)
    module, engine = load_module(path, manifest)
    graph = module.graph.copy()
    compute = [node for node in graph.nodes() if COMPUTE_OPS.get(node.kind()) is not None]
    returned = graph.return_node()
    original = list(returned.inputs())
    values = original + [node.output() for node in compute]
    bundle = graph.create("prim::TupleConstruct", values)
    bundle.insertBefore(returned)
    bundle.output().setType(torch._C.TupleType([value.type() for value in values]))
    returned.removeAllInputs()
    returned.addInput(bundle.output())
    debug_forward = torch._C._create_function_from_graph("edgemnv2_debug_forward", graph)
    per_image = []
    for image in images:
        if engine:
            torch.backends.quantized.engine = engine
        with torch.no_grad():
            outputs = debug_forward(module._c, torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)))[len(original):]
        per_image.append(_captures(compute, outputs))
    return per_image


def _captures(compute: list, outputs) -> list:
    captures = []
    for node, value in zip(compute, outputs):
        kind = COMPUTE_OPS[node.kind()]
        if value.is_quantized:
            scale, zero_point = float(value.q_scale()), int(value.q_zero_point())
            info = torch.iinfo(value.dtype)
            captures.append(Capture(node.kind(), kind, value.dequantize().numpy(), output_scale=scale, output_zero_point=zero_point,
                                    output_range=((info.min - zero_point) * scale, (info.max - zero_point) * scale)))
        else:
            captures.append(Capture(node.kind(), kind, value.float().numpy()))
    return captures
