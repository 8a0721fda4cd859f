"""Per-op times of an OpenVINO IR in the CPU plugin, from the plugin's own performance counters.

The plugin fuses as it compiles (a FakeQuantize and its activation into the convolution before
them), so an op here is an executed node of the compiled graph, named after the first source node it
holds; `exec_type` names the kernel that ran it ("brgconv_avx2_I8", "jit_avx2_dw_FP32"), which says
its precision. Nodes the plugin skipped (constants, no-op reorders) are left out.
"""

from pathlib import Path

import numpy as np

from edgemnv2.device.runtime_adapters import openvino_compiled
from edgemnv2.layerwise.records import RuntimeOp

KINDS = {"Convolution": "conv", "GroupConvolution": "dwconv", "FullyConnected": "gemm", "MatMul": "gemm"}


def _kind(node_type: str) -> str:
    """The plugin's node types, its variants too ("FullyConnectedQuantizedLegacy": an int8 linear)."""
    return next((kind for prefix, kind in KINDS.items() if node_type.startswith(prefix)), "other")


def _dtype(exec_type: str) -> str:
    kernel = exec_type.lower()
    for marker, dtype in (("i8", "int8"), ("u8", "int8"), ("bf16", "bf16"), ("f16", "fp16"), ("fp32", "fp32"), ("f32", "fp32")):
        if kernel.endswith(marker):
            return dtype
    return "other"


def profile(path: Path, manifest: dict, threads: int, sample: np.ndarray, runs: int = 30) -> list[RuntimeOp]:
    import openvino as ov

    request = openvino_compiled(path, threads, PERF_COUNT=True).create_infer_request()
    value = np.ascontiguousarray(sample[:1], np.float32)
    request.infer({0: value})  # warm-up: the first call also allocates
    times: dict[str, list[float]] = {}
    kernels: dict[str, tuple[str, str]] = {}
    for _ in range(runs):
        request.infer({0: value})
        for entry in request.get_profiling_info():  # in execution order
            if entry.status != ov.ProfilingInfo.Status.EXECUTED:
                continue
            times.setdefault(entry.node_name, []).append(entry.real_time.total_seconds() * 1000.0)
            kernels[entry.node_name] = (entry.node_type, entry.exec_type)
    ops = []
    for name, samples in times.items():
        node_type, exec_type = kernels[name]
        ops.append(RuntimeOp(f"{node_type} {name} ({exec_type})", float(np.median(samples)), _kind(node_type), _dtype(exec_type)))
    return ops
