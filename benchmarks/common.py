"""Shared benchmark helpers: machine description and a latency timer. Ratios, not absolutes, are
what to compare: every row of a table is measured in the same run, on the same threads."""

import platform
import statistics
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import os

    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def time_runner(runner, sample: np.ndarray, warmup: int = 5, runs: int = 30) -> dict:
    for _ in range(warmup):
        runner(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(sample)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))], "min_ms": times[0]}
