"""ExecuTorch per-op profile: ETDump from the runtime, read by the devtools Inspector.

The pip runtime records the XNNPACK delegate's own per-kernel events ("Convolution (NHWC, QC8)
DWConv #3"), the portable kernels of ops XNNPACK did not take ("native_call_upsample_nearest2d"),
and the calls around them. Each delegate call's time beyond its kernels, and the method's beyond
its calls, become "overhead" rows, so the rows add up to Method::execute.
"""

import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgemnv2.layerwise.peak import gmacs_of
from edgemnv2.layerwise.records import RuntimeOp

from .executorch_program import to_program, xnnpack_int8_graph
from .gemm_peak import gemm_model, recipe

DTYPES = (("QS8", "int8"), ("QC8", "int8"), ("QU8", "int8"), ("X8", "int8"), ("F32", "fp32"), ("X32", "fp32"), ("F16", "fp16"))


def _kind(name: str) -> str:
    if "DWConv" in name:
        return "dwconv"
    if name.startswith("Fully Connected"):
        return "gemm"
    if name.startswith(("Convolution", "Deconvolution")):
        return "conv"
    return "other"


def _dtype(name: str) -> str | None:
    inside = re.search(r"\(([^)]*)\)", name)
    parts = inside.group(1).replace(" ", "").split(",") if inside else []
    return next((dtype for code, dtype in DTYPES if code in parts), None)


def profile(path: Path, manifest: dict, threads: int, sample: np.ndarray, runs: int = 30) -> list[RuntimeOp]:
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    torch.set_num_threads(threads)
    module = _load_for_executorch(str(path), enable_etdump=True)
    tensor = torch.from_numpy(np.ascontiguousarray(sample[:1], dtype=np.float32))
    for _ in range(runs + 3):
        module.forward((tensor,))
    with tempfile.TemporaryDirectory(prefix="edgemnv2-etdump-") as folder:
        etdump = Path(folder) / "profile.etdp"
        module.write_etdump_result_to_file(str(etdump))
        frame = Inspector(etdump_path=str(etdump)).to_dataframe()
    return ops_from_events(frame)


def ops_from_events(frame) -> list[RuntimeOp]:
    """ETDump events (the Inspector's dataframe, in execution order) -> ops whose times add up to
    the method's. Medians over the recorded runs (the first few are warm-up: the median ignores them)."""
    ops, pending, total = [], [], None
    for _, event in frame[frame["event_block_name"] == "Execute"].iterrows():
        name, ms = event["event_name"], float(np.median(event["raw"]))
        if event["is_delegated_op"]:
            pending.append(RuntimeOp(name, ms, _kind(name), _dtype(name), delegated=True))
        elif name == "DELEGATE_CALL":
            ops += pending
            ops.append(RuntimeOp("XNNPACK delegate call (outside its kernels)", max(ms - sum(op.ms for op in pending), 0.0), "overhead", delegated=True))
            pending = []
        elif name.startswith("native_call_"):
            ops.append(RuntimeOp(name.removeprefix("native_call_") + " (portable kernel, not delegated)", ms, "other", delegated=False))
        elif name == "Method::execute":
            total = ms
    if total is not None:
        ops.append(RuntimeOp("ExecuTorch method (outside the calls)", max(total - sum(op.ms for op in ops), 0.0), "overhead"))
    return ops


def peak_gemm(dtype: str, threads: int) -> float:
    from executorch.runtime import Runtime

    model, example, calibration = gemm_model()
    if dtype == "int8":
        model = xnnpack_int8_graph(model, example, calibration, recipe())

    with tempfile.TemporaryDirectory(prefix="edgemnv2-peak-") as folder:
        path = Path(folder) / "gemm.pte"
        path.write_bytes(to_program(model, example))
        torch.set_num_threads(threads)
        method = Runtime.get().load_program(str(path)).load_method("forward")
        return gmacs_of(lambda: method.execute([example]))
