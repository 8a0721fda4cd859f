"""Which file to ship on this machine: per precision class, the fastest artifact that passed its
gates, timed round-robin in one run on the machine that validated it.

Latency figures taken one artifact after another drift with the machine's load (edgemnv2.validation.
timing.time_interleaved says by how much), so the candidates are timed again, together, before the
choice is made. Simulated rows (CoreML on Linux) never ran, so they are never chosen."""

from ..precision import get_precision
from ..timing import machine, time_interleaved

FLOAT, QUANTIZED = "float", "quantized"


def precision_class(precision: str) -> str:
    """float (fp32, fp16): what a user ships for accuracy; quantized (int8, weight-only, 16x8, ...):
    for size and, where the CPU's kernels pay, speed."""
    return QUANTIZED if get_precision(precision).quantized else FLOAT


def passed_basis(gates_source: str | None) -> str:
    return f"passed its gates ({gates_source})" if gates_source else "no gates file: checked, with finite outputs"


def fastest_here(candidates: list[tuple], sample, threads: int, warmup: int, runs: int, basis: str) -> dict:
    """candidates: (row, runner) of every eligible artifact (for validate: passed, measured in its
    runtime, runner still open); a row has .artifact, .target, .precision. `basis` says why they are
    eligible. -> the report's `ship_here` block."""
    runners = {row.artifact: runner for row, runner in candidates}
    rows = {row.artifact: row for row, _ in candidates}
    block = {"machine": machine(), "threads": threads, "timed_rounds": runs, "basis": basis,
             "timing": "round-robin over the candidates, one run, batch 1", "by_class": {}, "candidates": []}
    if not runners:
        block["note"] = "no artifact at the checkpoint's own input size passed in its runtime on this machine"
        return block
    try:
        timed = time_interleaved(runners, sample, warmup=warmup, runs=runs)
    except Exception as exc:  # a runner that scored the whole split but fails now: no choice, the rows stand
        block["note"] = f"the round-robin timing failed ({type(exc).__name__}: {exc}); no choice made"
        return block
    block.update(by_class_from([{"artifact": name, "target": rows[name].target, "precision": rows[name].precision, "sha256": rows[name].sha256, **stats}
                                for name, stats in timed.items()]))
    return block


def by_class_from(timed_rows: list[dict]) -> dict:
    """Rows of one round-robin run (artifact, target, precision, median_ms, p90_ms), fastest first
    -> {"candidates": [...], "by_class": {class: the fastest, with the runner-up}}."""
    out = {"candidates": [], "by_class": {}}
    for row in sorted(timed_rows, key=lambda r: r["median_ms"]):
        entry = {key: row[key] for key in ("artifact", "target", "precision", "median_ms", "p90_ms")}
        if row.get("sha256"):  # the verified bytes that passed: what a later reader must find
            entry["sha256"] = row["sha256"]
        entry["class"] = precision_class(row["precision"])
        out["candidates"].append(entry)
        best = out["by_class"].get(entry["class"])
        if best is None:
            out["by_class"][entry["class"]] = dict(entry)
        elif "runner_up" not in best:
            best["runner_up"] = {key: entry[key] for key in ("artifact", "median_ms", "p90_ms")}
    return out


def ship_here_lines(block: dict | None) -> list[str]:
    """The closing lines of `validate` and `bench targets`."""
    if not block:
        return []
    if not block["by_class"] or block.get("note"):
        return [f"Ship here: nothing ({block.get('note', 'no candidate')}); machine: {block['machine']}"]
    lines = [f"Ship here ({block['machine']}; {block['threads']} threads; {block['timing']}, {block['timed_rounds']} rounds; {block['basis']}):"]
    for cls in (FLOAT, QUANTIZED):
        best = block["by_class"].get(cls)
        if best is None:
            continue
        second = best.get("runner_up")
        margin = f"; next {second['artifact']} {second['median_ms']:.3f} ms ({second['median_ms'] / best['median_ms']:.2f}x)" if second else "; the only one"
        lines.append(f"  {cls}: {best['artifact']} ({best['target']} {best['precision']}), median {best['median_ms']:.3f} ms, "
                     f"p90 {best['p90_ms']:.3f} ms{margin}")
    return lines
