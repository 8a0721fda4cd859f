"""The validation report, four ways: a terminal table, report.json (schema: docs/report.md),
report.md, and a PNG of accuracy against latency. Every file is written atomically."""

import json
from pathlib import Path

from rich.table import Table
from rich.text import Text

from ..fileio import atomic_output
from ..tasks import get_task
from .recommend import ship_here_lines
from .validate import COULD_NOT_RUN, ERROR, GATE_FAILED, NOT_CHECKED, PASSED, REFUSED

STATUS_STYLE = {PASSED: "green", GATE_FAILED: "red", COULD_NOT_RUN: "yellow", REFUSED: "red", ERROR: "red"}


def _task(report: dict):
    return get_task(report["checkpoint"]["task"])


def headline_metric(report: dict) -> str:
    return _task(report).headline_metric


def _fmt(value, digits=2, suffix=""):
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _rss(measured: dict) -> str:
    if measured.get("peak_rss_mb") is None:
        return "n/a"
    return f"{measured['peak_rss_mb']:.0f} (+{measured.get('rss_increase_mb') or 0:.0f})"


def _throughput(images_per_second, batch) -> str:
    return "n/a" if images_per_second is None else f"{images_per_second:.0f} (b{batch})"


def _agreement_key(report: dict) -> str:
    return _task(report).agreement_measure


def rows_for_display(report: dict) -> list[list[str]]:
    metric, agree = headline_metric(report), _agreement_key(report)
    ref = report["reference"]
    decode = _task(report).host_postprocess is not None
    rows = [["eager (reference)", "fp32", "-", _fmt(ref["metrics"][metric]), "-", "-", "-", _fmt(ref["latency_median_ms"]), _fmt(ref["latency_p90_ms"]),
             *([_postprocess(ref)] if decode else []), "-", _throughput(ref.get("images_per_second"), ref.get("batch")), "-", "reference"]]
    for a in report["artifacts"]:
        m = a["measured"]
        simulated = a["measured_on"] == "simulated"
        status = a["status"] + (" (simulated)" if simulated and a["status"] not in NOT_CHECKED else "")
        rows.append([
            a["target"], a["precision"], _fmt(m.get("size_mb")),
            _fmt(a["metrics"].get(metric)) + (" *" if simulated else ""),
            _fmt(m.get(f"{metric}_drop"), 2), _fmt(m.get(agree), 1), _fmt(m.get("sqnr_db"), 1),
            _fmt(m.get("latency_median_ms")), _fmt(m.get("latency_p90_ms")), *([_postprocess(m)] if decode else []), _fmt(m.get("load_ms"), 0),
            _throughput(m.get("images_per_second"), a.get("batch")), _rss(m),
            status,
        ])
    return rows


def _postprocess(measured: dict) -> str:
    """The decode column: in the graph (the latency includes it), or on the host, with its cost."""
    where = measured.get("postprocess")
    if where == "host":
        return f"host +{measured['host_postprocess_ms']:.2f} ms"
    return where or "n/a"


def columns(report: dict) -> list[str]:
    task = _task(report)
    decode = ["decode"] if task.host_postprocess is not None else []
    return ["target", "precision", "size MB", task.headline_label, "drop", task.agreement_label, "SQNR dB", "median ms", "p90 ms", *decode, "load ms",
            "img/s (batch)", "peak RSS MB (+artifact)", "status"]


def terminal_table(report: dict) -> Table:
    # Text objects, not str: rich never parses them as markup (file names are user text)
    table = Table(*columns(report), title=Text(f"validation of {Path(report['checkpoint']['path']).name} on {report['data']['images']} {report['data']['split']} images, {report['threads']} threads"))
    for row in rows_for_display(report):
        style = next((s for k, s in STATUS_STYLE.items() if row[-1].startswith(k)), "")
        table.add_row(*(Text(cell) for cell in row[:-1]), Text(row[-1], style=style))
    return table


def failure_lines(report: dict) -> list[str]:
    lines = []
    for a in report["artifacts"]:
        for gate in a["gates"]:
            if not gate["passed"]:
                lines.append(f"{a['artifact']}: gate failed: {gate['describe']}")
        if a["status"] == GATE_FAILED and a["note"]:
            lines.append(f"{a['artifact']}: hint: {a['note']}")
        if a["status"] in NOT_CHECKED:
            lines.append(f"{a['artifact']}: {a['status']}: {a['note']}")
    gates = report["gates"]
    if gates.get("unmatched") == "fail":
        lines += [f"gates {section} checked nothing: no such artifact in the folder" for section in gates.get("unchecked", [])]
    return lines


def notes(report: dict) -> list[str]:
    out = [f"Machine: {report['machine']}; {report['threads']} threads; latency = median of {report['timed_runs']} timed runs after warm-up, batch 1; "
           "img/s = images per second through the runtime during the accuracy pass, at the batch shown (b1: the artifact takes one image per call)."]
    processes = report.get("processes", {})
    if processes.get("world_size", 1) > 1:
        out.append(f"{processes['world_size']} processes (torchrun): each scored every {processes['world_size']}th batch; metrics are over all images; "
                   "latency is the median over ranks, img/s the sum over ranks.")
    simulated = [a for a in report["artifacts"] if a["measured_on"] == "simulated"]
    # the target's simulation_note, which the row's note starts with (unless a failure replaced it)
    for why in sorted({a["note"].split(" (")[0] if a["note"].startswith("simulated") else "simulated" for a in simulated}):
        out.append(f"* {why}: these rows are the exact torch program that was converted, run in PyTorch; no latency is shown because none was measured.")
    out.append("drop = reference minus artifact, in points; SQNR of the raw outputs against the reference (worst output).")
    if _task(report).host_postprocess is not None:
        out.append("decode: graph = the artifact returns boxes, scores and classes (its latency includes the decode; SQNR is of its sorted "
                   "top-K scores); host +X ms = it returns the raw maps and the runner decodes them, which costs X ms more on this CPU.")
    for a in report["artifacts"]:
        recourse = a.get("recourse") or {}
        if recourse:
            latency = f", latency x{recourse['latency_ratio']:.2f}" if recourse.get("latency_ratio") else ""
            ranges = f"; QAT ranges: {recourse['qat_ranges']}" if recourse.get("qat_ranges") else ""
            out.append(f"{a['artifact']}: convert --max-drop {recourse['max_drop']:g}: {recourse['summary']} "
                       f"({recourse['evaluations']} evaluations{latency}; on {recourse['measured_on']} held-out images{ranges})")
        speed = a.get("speed") or {}
        if speed.get("why"):
            out.append(f"{a['artifact']}: recommend {speed['recommend']} for speed: {speed['why']}")
        profile = a.get("profile") or {}
        if profile:
            kinds = ", ".join(f"{kind} {ms:.3f}" for kind, ms in sorted(profile["by_kind_ms"].items(), key=lambda kv: -kv[1]))
            out.append(f"{a['artifact']}: per-op profile, ms by kind: {kinds} (ops add up to {profile['ops_over_end_to_end']:.0%} of end to end)")
    gates = report["gates"]
    if gates.get("unchecked") and gates.get("unmatched") == "warn":
        out.append(f"gate sections with no artifact here (unmatched = \"warn\" in {gates['source']}): {', '.join(gates['unchecked'])}")
    return out + ship_here_lines(report.get("ship_here"))


def markdown(report: dict, comparison_images: list[Path] | None = None) -> str:
    cols = columns(report)
    lines = [f"# Validation report: {Path(report['checkpoint']['path']).name}", "",
             f"{report['checkpoint']['arch']} ({report['checkpoint']['task']}), {report['data']['images']} images of the '{report['data']['split']}' split of "
             f"`{report['data']['path']}`. Gates: {report['gates']['source'] or 'none'} -> **{'passed' if report['gates']['passed'] else 'FAILED'}**.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row) + " |" for row in rows_for_display(report)]
    lines.append("")
    lines += [f"- {n}" for n in notes(report)]
    failures = failure_lines(report)
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    if comparison_images:
        lines += ["", "## Where int8 and fp32 disagree most", "", "Left: fp32 reference; right: int8 artifact. Boxes only one side has are drawn dashed.", ""]
        lines += [f"![{p.stem}]({p.name})" for p in comparison_images]
    return "\n".join(lines) + "\n"


def plot(report: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = headline_metric(report)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ref = report["reference"]
    ax.scatter([ref["latency_median_ms"]], [ref["metrics"][metric]], marker="*", s=180, color="black", label="eager fp32 (reference)", zorder=3)
    left_out = []
    for a in report["artifacts"]:
        latency = a["measured"].get("latency_median_ms")
        if latency is None or a["metrics"].get(metric) is None:
            left_out.append(f"{a['target']} {a['precision']}")
            continue
        marker = "o" if a["precision"] == "fp32" else "s"
        ax.scatter([latency], [a["metrics"][metric]], marker=marker, s=50, label=f"{a['target']} {a['precision']}", zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel(f"median latency, ms (batch 1, {report['threads']} threads, log scale)")
    ax.set_ylabel(_task(report).headline_label)
    title = "accuracy vs latency per target x precision"
    if left_out:
        title += "\nnot plotted (no measured latency): " + ", ".join(left_out)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_output(dest, force=True) as temp:
        fig.savefig(temp, format="png")
    plt.close(fig)


def write_reports(report: dict, out_dir: Path, comparison_images: list[Path] | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "png": out_dir / "accuracy_latency.png"}
    with atomic_output(paths["json"], force=True) as temp:
        temp.write_text(json.dumps(report, indent=2, default=float))
    with atomic_output(paths["md"], force=True) as temp:
        temp.write_text(markdown(report, comparison_images), errors="backslashreplace")  # a file name need not be UTF-8
    plot(report, paths["png"])
    return paths
