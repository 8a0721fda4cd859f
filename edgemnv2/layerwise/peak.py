"""This CPU's peak throughput per runtime and data type: the yardstick for "fraction of peak".

Measured once with one large GEMM (M x K x N = 256 x 1024 x 1024, 268 MMACs) converted to and run
in the same runtime at the same thread count, then cached with the CPU model it was measured on
(a different CPU, thread count or tool version measures again). A GEMM is the best case a runtime
has: a depthwise conv reaching 10% of it is normal, a 1x1 conv at 10% is not.
"""

import json
import os
import time
from pathlib import Path
from typing import Callable

from ..timing import machine

GEMM_SHAPE = (256, 1024, 1024)  # M, K, N
GEMM_MACS = GEMM_SHAPE[0] * GEMM_SHAPE[1] * GEMM_SHAPE[2]


def cache_file() -> Path:
    """$EDGEMNV2_PEAK_CACHE, else ~/.cache/edgemnv2/peak_gmacs.json (or under $XDG_CACHE_HOME)."""
    if os.environ.get("EDGEMNV2_PEAK_CACHE"):
        return Path(os.environ["EDGEMNV2_PEAK_CACHE"])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "edgemnv2" / "peak_gmacs.json"


def gmacs_of(run: Callable[[], object], warmup: int = 3, runs: int = 20) -> float:
    """GEMM_MACS / the fastest time of `run`, in GMAC/s. The fastest, not the median: a peak is the
    best the runtime does, and on a shared machine a neighbour only ever slows a run (medians of
    ExecuTorch's int8 GEMM measured 50, 59 and 64 GMAC/s within two hours on one AMD EPYC, against
    35-36 for fp32: the int8-over-fp32 ceiling moved from 1.42x to 1.78x, across 1.5x)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return GEMM_MACS / min(times) / 1e9


def peak_gmacs(runtime_key: str, dtype: str, threads: int, measure: Callable[[str, int], float]) -> dict:
    """{"gmacs", "cpu", "threads", "cached"}: from the cache, else measure(dtype, threads) and cache it."""
    cpu = machine()
    key = f"{cpu} | {runtime_key} | {dtype} | {threads} threads"
    path = cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return {"gmacs": cache[key], "cpu": cpu, "threads": threads, "cached": True}
    value = float(measure(dtype, threads))
    cache[key] = round(value, 2)
    try:  # a cache that cannot be written costs a re-measure next time, nothing else
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        temp.write_text(json.dumps(cache, indent=2))
        temp.replace(path)
    except OSError:
        pass
    return {"gmacs": value, "cpu": cpu, "threads": threads, "cached": False}
