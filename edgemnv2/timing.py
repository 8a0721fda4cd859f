"""Latency, load time and memory, measured the same way everywhere (validate, bundles, benchmarks).

Absolute milliseconds depend on the machine and its load; compare ratios measured in one run.
"""

import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from .artifacts import timed_call

# The instruction sets int8 speed depends on, by /proc/cpuinfo flag: without VNNI, x86 has no single
# instruction for an int8 dot product (LiteRT's int8 GEMM on an AVX2 EPYC: 1.06x its fp32 one), so
# "int8 is not faster here" is often this line.
INT8_ISA = (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimddp", "Arm dot product"))
# ... and bfloat16's, named in the machine line (whether OpenVINO runs bf16 is its CPU plugin's word:
# edgemnv2.device.runtime_adapters.openvino_offers_bf16)
BF16_ISA = (("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX-BF16"))


def _cpuinfo() -> dict[str, str]:
    """/proc/cpuinfo's first processor as key -> value ({} where there is none)."""
    path = Path("/proc/cpuinfo")
    fields = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_features() -> list[str]:
    """The int8- and bf16-relevant instruction sets this CPU has (INT8_ISA's, then BF16_ISA's names), best first."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return [name for flag, name in INT8_ISA + BF16_ISA if flag in flags]


def has_int8_dot_product(features: list[str]) -> bool:
    """VNNI or AMX: an instruction that multiplies and sums int8 in one step."""
    return any("VNNI" in name or name == "AMX" for name in features)


def machine() -> str:
    model = _cpuinfo().get("model name") or platform.processor() or platform.machine()
    features = cpu_features()
    isa = f" ({', '.join(features)}{'' if has_int8_dot_product(features) else '; no VNNI'})" if features else ""
    return f"{model}{isa}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def time_runner(runner, sample: np.ndarray, warmup: int = 5, runs: int = 30) -> dict:
    """Warm up, then time `runs` calls on one sample: median, p90 and min in milliseconds (on the
    artifact's own input where its runner says how: edgemnv2.artifacts.timed_call). A runner in its
    own process (edgemnv2.confine) times itself, with this same loop, so figures stay comparable."""
    if hasattr(runner, "time"):
        return _latency_stats(runner.time(sample, warmup, max(runs, 1)))
    call = timed_call(runner, sample)
    for _ in range(warmup):
        call()
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return _latency_stats(times)


def _stopwatch(runner, sample: np.ndarray):
    """() -> the milliseconds of one call: timed here, or by a runner process on its own side."""
    if hasattr(runner, "time"):
        return lambda: runner.time(sample, 0, 1)[0]
    call = timed_call(runner, sample)

    def timed() -> float:
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1000

    return timed


def _latency_stats(times_ms: list[float]) -> dict:
    ordered = sorted(times_ms)
    return {"median_ms": statistics.median(ordered), "p90_ms": ordered[int(0.9 * (len(ordered) - 1))], "min_ms": ordered[0], "runs": len(ordered)}


def time_interleaved(runners: dict, sample: np.ndarray, warmup: int = 2, runs: int = 10, rewarm: int = 1) -> dict[str, dict]:
    """Time several runners round-robin (A, B, C, A, B, C, ...) on one sample: name -> stats.

    On a shared or throttling machine, speed drifts over minutes (measured here: the same model
    from 102 to 135 ms between two passes). Timing rows one after another puts that drift into the
    ratios between rows; interleaving spreads it evenly, so the ratios stay comparable.
    Each turn first makes `rewarm` untimed calls: the previous runner (say a 60 MB DLA-34) has
    flushed the caches, and a cold call would charge a small int8 model for its neighbour
    (measured: 19 ms cold against 13 ms warm for the same artifact). Deployed models run warm.
    """
    calls = {name: _stopwatch(runner, sample) for name, runner in runners.items()}
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(max(runs, 1)):
        for name, call in calls.items():
            for _ in range(rewarm):
                call()
            times[name].append(call())
    return {name: _latency_stats(values) for name, values in times.items()}


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory (MB) of this process while the block runs.

    On Linux the kernel's high-water mark (VmHWM) is reset on entry (clear_refs 5), so the figure
    belongs to this block, not to whatever ran before. Elsewhere it falls back to ru_maxrss, a
    lifetime peak, and says so.
    """

    def __enter__(self):
        self.exact = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = _status_kb("VmHWM") is not None
        except OSError:
            pass
        self.baseline_mb = (_status_kb("VmRSS") or 0) / 1024
        return self

    def __exit__(self, *exc):
        if self.exact:
            self.peak_mb = _status_kb("VmHWM") / 1024
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024
        return False
