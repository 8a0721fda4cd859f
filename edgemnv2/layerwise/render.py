"""A profile as rows, a text table and a PNG."""

from pathlib import Path

from .records import COMPUTE_KINDS, RuntimeOp


def profile_rows(ops: list[RuntimeOp], peak: dict | None) -> list[dict]:
    """One dict per op: op, layer, ms, share, MACs, achieved GMAC/s, fraction of this CPU's peak."""
    total = sum(op.ms for op in ops) or 1.0
    rows = []
    for index, op in enumerate(ops):
        gmacs = op.macs / (op.ms * 1e6) if op.macs and op.ms > 0 else None
        peak_value = (peak or {}).get(op.dtype)
        rows.append({"index": index, "op": op.name, "kind": op.kind, "layer": op.layer, "dtype": op.dtype, "delegated": op.delegated,
                     "ms": round(op.ms, 4), "share": round(op.ms / total, 4), "macs": op.macs,
                     "gmacs": round(gmacs, 2) if gmacs is not None else None,
                     "peak_fraction": round(gmacs / peak_value, 3) if gmacs is not None and peak_value else None})
    return rows


def summary_by_kind(rows: list[dict]) -> dict:
    """ms per op kind, and per op name for the non-compute ops (what a user can act on)."""
    kinds, others = {}, {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0.0) + row["ms"]
        if row["kind"] not in COMPUTE_KINDS:
            label = row["op"].split(" #")[0]
            others[label] = others.get(label, 0.0) + row["ms"]
    return {"by_kind_ms": {k: round(v, 4) for k, v in kinds.items()},
            "other_ops_ms": dict(sorted(((k, round(v, 4)) for k, v in others.items()), key=lambda kv: -kv[1]))}


def _cell(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def table_text(rows: list[dict], top: int | None = None) -> str:
    """Markdown table, ops in execution order (or the `top` slowest)."""
    chosen = sorted(rows, key=lambda r: -r["ms"])[:top] if top else rows
    lines = ["| # | op | layer | ms | share | MMACs | GMAC/s | of peak |", "|---|---|---|---|---|---|---|---|"]
    for row in chosen:
        lines.append(f"| {row['index']} | {row['op']} | {row['layer'] or ''} | {row['ms']:.4f} | {row['share']:.1%} | "
                     f"{_cell(row['macs'] and row['macs'] / 1e6, '.2f')} | {_cell(row['gmacs'], '.1f')} | {_cell(row['peak_fraction'], '.1%')} |")
    return "\n".join(lines)


def write_png(rows: list[dict], title: str, dest: Path, top: int = 30) -> None:
    """Horizontal bars of the `top` slowest ops, coloured by kind, labelled with the source layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"conv": "#1f77b4", "dwconv": "#2ca02c", "gemm": "#9467bd", "other": "#ff7f0e", "overhead": "#7f7f7f"}
    chosen = sorted(rows, key=lambda r: -r["ms"])[:top][::-1]
    figure, axes = plt.subplots(figsize=(10, 0.3 * len(chosen) + 1.5))
    labels = [f"{r['op'][:40]}" + (f"  [{r['layer']}]" if r["layer"] else "") for r in chosen]
    axes.barh(range(len(chosen)), [r["ms"] for r in chosen], color=[colours.get(r["kind"], "#333333") for r in chosen])
    axes.set_yticks(range(len(chosen)), labels, fontsize=7)
    for position, row in enumerate(chosen):
        note = f"{row['share']:.1%}" + (f", {row['peak_fraction']:.0%} of peak" if row["peak_fraction"] is not None else "")
        axes.text(row["ms"], position, " " + note, va="center", fontsize=6)
    axes.set_xlabel("median ms per run")
    axes.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    axes.legend(handles, list(colours), fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(dest, dpi=110)
    plt.close(figure)
