"""Why int8 does or does not pay: an int8 artifact's profile against its own fp32's, layer by layer,
and this CPU's ceiling for the runtime.

The ceiling is the runtime's int8 GEMM peak over its fp32 GEMM peak, both measured on this CPU
(edgemnv2.layerwise.peak). Convolutions are GEMMs at heart: where the int8 peak is not 1.5x the
fp32 one (without VNNI, x86 has no single instruction for an int8 dot product), the
convolutions cannot reach 1.5x in int8 however the graph is built, and the evidence says so instead
of a promise. Where the ceiling is high, the per-layer rows show which layers fall short of it and
what int8 adds outside the convolutions (quantize and dequantize ops, requantizing adds).
"""

import re

from ..layerwise.records import COMPUTE_KINDS

TARGET_OVER_FP32 = 1.5  # what int8 should buy in latency to be worth shipping for speed
KIND_ORDER = ("conv", "dwconv", "gemm", "other", "overhead")
DTYPE_CODES = {"QS8", "QC8", "QU8", "X8", "F32", "X32", "F16", "X16", "QD8"}  # XNNPACK's operand types in its op names


def _ms_by_layer(profile: dict) -> dict[str, dict]:
    """layer -> {"kind", "macs", "ms"}, summing every runtime op mapped to that layer."""
    layers = {}
    for row in profile["rows"]:
        if row["kind"] in COMPUTE_KINDS and row.get("layer"):
            entry = layers.setdefault(row["layer"], {"kind": row["kind"], "macs": row.get("macs"), "ms": 0.0})
            entry["ms"] += row["ms"]
    return layers


def _ratio(fp32_ms: float | None, int8_ms: float | None) -> float | None:
    return round(fp32_ms / int8_ms, 2) if fp32_ms and int8_ms else None


def ceiling(int8: dict, fp32: dict) -> dict | None:
    """{"int8_gmacs", "fp32_gmacs", "over_fp32"} from the two profiles' measured peaks, or None."""
    peaks = {**(fp32.get("peak_gmacs") or {}), **(int8.get("peak_gmacs") or {})}
    if "int8" not in peaks or "fp32" not in peaks:
        return None
    int8_peak, fp32_peak = peaks["int8"]["gmacs"], peaks["fp32"]["gmacs"]
    return {"int8_gmacs": round(int8_peak, 1), "fp32_gmacs": round(fp32_peak, 1), "over_fp32": round(int8_peak / fp32_peak, 2)}


def compare(int8: dict, fp32: dict) -> dict:
    """Two profiles of the same model in the same runtime -> int8 over fp32 end to end, by op kind,
    and per source layer (int8's execution order), with the ceiling and a verdict."""
    by_layer_int8, by_layer_fp32 = _ms_by_layer(int8), _ms_by_layer(fp32)
    layers = []
    for layer, entry in by_layer_int8.items():
        fp32_ms = by_layer_fp32.get(layer, {}).get("ms")
        layers.append({"layer": layer, "kind": entry["kind"], "macs": entry["macs"], "fp32_ms": round(fp32_ms, 4) if fp32_ms is not None else None,
                       "int8_ms": round(entry["ms"], 4), "int8_over_fp32": _ratio(fp32_ms, entry["ms"])})
    kinds = {}
    for kind in KIND_ORDER:
        a, b = fp32["by_kind_ms"].get(kind, 0.0), int8["by_kind_ms"].get(kind, 0.0)
        if a or b:
            kinds[kind] = {"fp32_ms": round(a, 4), "int8_ms": round(b, 4), "int8_over_fp32": _ratio(a, b)}
    compute = [kinds[k] for k in COMPUTE_KINDS if k in kinds]
    compute_fp32, compute_int8 = sum(k["fp32_ms"] for k in compute), sum(k["int8_ms"] for k in compute)
    result = {"fp32_ms": fp32["end_to_end_ms"], "int8_ms": int8["end_to_end_ms"],
              "int8_over_fp32": _ratio(fp32["end_to_end_ms"], int8["end_to_end_ms"]), "target_over_fp32": TARGET_OVER_FP32,
              "compute_over_fp32": _ratio(compute_fp32, compute_int8), "by_kind": kinds, "layers": layers,
              "ceiling": ceiling(int8, fp32), "non_compute_extra": _non_compute_extra(int8, fp32)}
    result["recommend"] = "int8" if (result["int8_over_fp32"] or 0) > 1.0 else "fp32"
    result["verdict"] = verdict(result)
    return result


def _without_dtype(name: str) -> str:
    """"Copy (NC, X8)" -> "Copy (NC)": the same op in either precision, to set them side by side."""
    inside = re.search(r"\(([^)]*)\)", name)
    if not inside:
        return name
    kept = [part.strip() for part in inside.group(1).split(",") if part.strip() not in DTYPE_CODES]
    return name[:inside.start()] + (f"({', '.join(kept)})" if kept else "").strip() + name[inside.end():]


def _non_compute_extra(int8: dict, fp32: dict) -> dict[str, dict]:
    """Non-compute ops (dtype codes dropped) where int8 spends more than fp32, most first: the
    quantize/dequantize ops only int8 has, and data movement that int8 runs slower."""
    def by_name(profile):
        merged = {}
        for name, ms in (profile.get("other_ops_ms") or {}).items():
            name = _without_dtype(name)
            merged[name] = merged.get(name, 0.0) + ms
        return merged

    mine, theirs = by_name(int8), by_name(fp32)
    extra = {name: {"fp32_ms": round(theirs.get(name, 0.0), 4), "int8_ms": round(ms, 4)} for name, ms in mine.items() if ms > theirs.get(name, 0.0)}
    return dict(sorted(extra.items(), key=lambda kv: kv[1]["fp32_ms"] - kv[1]["int8_ms"]))


def _slowest_losers(layers: list[dict], count: int = 3) -> list[dict]:
    """The layers where int8 loses the most time against fp32 (where both times were measured: a
    profile that times prefixes can leave an op at 0 ms, which is no evidence either way)."""
    losing = [row for row in layers if row["fp32_ms"] and row["int8_ms"] > row["fp32_ms"]]
    return sorted(losing, key=lambda row: row["fp32_ms"] - row["int8_ms"])[:count]


def verdict(result: dict) -> str:
    """One paragraph: does int8 reach the target here, and if not, the measured reasons."""
    over = result["int8_over_fp32"]
    head = f"int8 runs {over:.2f}x its fp32 ({result['int8_ms']:.3f} ms against {result['fp32_ms']:.3f} ms)"
    if over >= TARGET_OVER_FP32:
        return f"{head}: it pays."
    reasons = []
    top = result["ceiling"]
    if top and top["over_fp32"] < TARGET_OVER_FP32:
        reasons.append(f"this CPU's int8 GEMM peak in this runtime is only {top['over_fp32']:.2f}x its fp32 peak "
                       f"({top['int8_gmacs']:.0f} against {top['fp32_gmacs']:.0f} GMAC/s), so no int8 convolution can run "
                       f"{TARGET_OVER_FP32}x faster here")
    elif top:
        reasons.append(f"the int8 GEMM peak is {top['over_fp32']:.2f}x the fp32 one here, but the convolutions reach only "
                       f"{result['compute_over_fp32'] or 0:.2f}x")
    kinds = ", ".join(f"{kind} {entry['int8_over_fp32']:.2f}x" for kind, entry in result["by_kind"].items() if entry["int8_over_fp32"])
    if kinds:
        reasons.append(f"int8 over fp32 by op kind: {kinds}")
    extra = result["non_compute_extra"]
    if extra:
        reasons.append("outside the convolutions int8 spends more on " +
                       ", ".join(f"{name} {entry['int8_ms']:.3f} ms (fp32 {entry['fp32_ms']:.3f})" for name, entry in list(extra.items())[:3]))
    losers = _slowest_losers(result["layers"])
    if losers:
        reasons.append("slowest in int8: " + ", ".join(f"{row['layer']} ({row['kind']}) {row['int8_ms']:.3f} against {row['fp32_ms']:.3f} ms" for row in losers))
    short = "is not faster" if over <= 1.0 else f"falls short of {TARGET_OVER_FP32}x"
    return f"{head}: {short}; " + "; ".join(reasons) + f". Faster here: {result['recommend']}."


def table_text(result: dict) -> str:
    """Markdown: int8 against fp32 by op kind, then per source layer."""
    lines = ["| kind | fp32 ms | int8 ms | int8 over fp32 |", "|---|---|---|---|"]
    for kind, entry in result["by_kind"].items():
        lines.append(f"| {kind} | {entry['fp32_ms']:.4f} | {entry['int8_ms']:.4f} | {_cell(entry['int8_over_fp32'])} |")
    lines += ["", "| layer | kind | MMACs | fp32 ms | int8 ms | int8 over fp32 |", "|---|---|---|---|---|---|"]
    for row in result["layers"]:
        macs = f"{row['macs'] / 1e6:.2f}" if row["macs"] else ""
        fp32_ms = f"{row['fp32_ms']:.4f}" if row["fp32_ms"] is not None else ""
        lines.append(f"| {row['layer']} | {row['kind']} | {macs} | {fp32_ms} | {row['int8_ms']:.4f} | {_cell(row['int8_over_fp32'])} |")
    return "\n".join(lines)


def _cell(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio else ""
