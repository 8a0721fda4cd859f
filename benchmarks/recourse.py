"""Accuracy recourse (`convert --max-drop`) on the demo models: per case and target, the drop with
post-training quantization only and after quantization-aware training, what the search chose, the
epochs, evaluations and minutes it spent and the latency cost.

    python benchmarks/recourse.py --demo OUT_OF_MAKE_DEMO [--cases 1,3] [--qat-loss distill] [--out benchmarks/results/recourse.json]

Cases (issue #31): the demo detector on TorchScript x86 (--max-drop 0.5, mAP@.5 points); the demo
detector on ExecuTorch, TFLite, ONNX and CoreML W8A8 (simulated on Linux: labelled) at --max-drop
0.3; per-tensor weights on the demo classifier (--max-drop 0.25, top-1) and detector (--max-drop
0.5) on ExecuTorch and TFLite. Drops are in points on the demo's val split, measured in each
runtime; latency ratios are the chosen artifact over the all-int8 one, timed round-robin by the
search itself (batch 1, the machine and threads recorded).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine  # noqa: E402
from conversion import onnx as ONNX  # noqa: E402  (a target named through its module, as the architecture test asks)

CASES = [
    # (case, model, targets, extra convert arguments)
    ("torchscript x86, --max-drop 0.5", "detector", ["torchscript"], ["--max-drop", "0.5"]),
    ("--max-drop 0.3", "detector", ["executorch", "tflite", ONNX.TARGET.name, "coreml"], ["--max-drop", "0.3"]),
    ("per-tensor, --max-drop 0.25", "classifier", ["executorch", "tflite"], ["--per-tensor", "--max-drop", "0.25"]),
    ("per-tensor, --max-drop 0.5", "detector", ["executorch", "tflite"], ["--per-tensor", "--max-drop", "0.5"]),
]


def _fine_tunings(attempts: list[dict] | None) -> list[dict]:
    """The search's fine-tuning runs: its trained-ranges and calibrated attempts share one, counted once."""
    return list({(q["seconds"], tuple(q["loss_per_epoch"])): q for q in (a["qat"] for a in attempts or [] if a.get("qat"))}.values())


def _qat_minutes(runs: list[dict]) -> float | None:
    return round(sum(q["seconds"] for q in runs) / 60, 1) if runs else None


def _best(attempts: list[dict], qat: bool) -> float | None:
    drops = [a["drop"] for a in attempts or [] if (a["step"] == "qat") == qat and a.get("drop") is not None]
    return min(drops) if drops else None


def run_case(demo: Path, case: str, model: str, targets: list[str], extra: list[str], threads: int) -> list[dict]:
    import subprocess

    data = demo / "data" / ("classification" if model == "classifier" else "detection")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgemnv2-recourse-bench-") as out:
        command = [sys.executable, "-m", "edgemnv2", "convert", "--checkpoint", str(demo / f"{model}.pt"), "--precision", "int8",
                   "--calib-data", str(data), "--out", out, "--threads", str(threads), "--json", *extra]
        for target in targets:
            command += ["--target", target]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{case} {model}: convert failed:\n{done.stderr[-2000:]}")
        for manifest_file in sorted(Path(out).glob("*.manifest.json")):
            manifest = json.loads(manifest_file.read_text())
            record = manifest.get("recourse")
            if not record:
                raise SystemExit(f"{case} {model}: {manifest['artifact']} has no recourse record:\n{done.stderr[-2000:]}")
            qat_runs = _fine_tunings(record.get("attempts"))
            rows.append({"case": case, "model": model, "target": manifest["target"], "metric": record.get("metric"),
                         "budget": record.get("max_drop"), "drop_before": record["before"]["drop"], "drop_after": record["after"]["drop"],
                         "drop_ptq_only": _best(record.get("attempts"), qat=False), "drop_after_qat": _best(record.get("attempts"), qat=True),
                         "qat_epochs": qat_runs[0]["epochs"] if qat_runs else None,
                         "qat_minutes": _qat_minutes(qat_runs),
                         "minutes": round(record.get("seconds", 0) / 60, 1),
                         "met": record.get("met"), "chosen": record["chosen"]["description"], "float_layers": len(record.get("float_layers", [])),
                         "evaluations": record.get("evaluations"), "latency_ratio": record.get("latency_ratio"),
                         "measured_on": record.get("measured_on"), "attempts": record.get("attempts")})
    return rows


def table(rows: list[dict]) -> str:
    def points(value):
        return "-" if value is None else f"{value:.2f}"

    lines = ["| case | model | target | all-int8 (first try) | PTQ only (best) | after QAT | met | chosen | float layers | QAT epochs | QAT min | search min | evaluations | latency x |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        latency = f"{r['latency_ratio']:.2f}" if r["latency_ratio"] else "n/a (simulated)"
        lines.append(f"| {r['case']} | {r['model']} | {r['target']}{' *' if r['measured_on'] != 'runtime' else ''} | {points(r['drop_before'])} | {points(r['drop_ptq_only'])} | "
                     f"{points(r['drop_after_qat'])} | {'yes' if r['met'] else 'no'} ({points(r['drop_after'])}) | {r['chosen']} | {r['float_layers']} | "
                     f"{r['qat_epochs'] or '-'} | {r['qat_minutes'] if r['qat_minutes'] is not None else '-'} | {r['minutes']} | {r['evaluations']} | {latency} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="the output folder of `make demo` (classifier.pt, detector.pt, data/); required unless --render")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "recourse.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default="all", help="comma-separated case numbers (1-based) or all")
    parser.add_argument("--qat-loss", default="task", choices=("task", "distill"), help="the qat step's loss (convert --qat-loss)")
    parser.add_argument("--render", type=Path, help="print the table of a saved result (its --out file) instead of running")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        for row in saved["rows"]:  # figures derived from the attempts, as run_case derives them now
            row["qat_minutes"] = _qat_minutes(_fine_tunings(row.get("attempts")))
        print(f"Machine: {saved['machine']}; {saved['threads']} threads; QAT loss: {saved.get('qat_loss', 'task')}")
        print(table(saved["rows"]))
        return
    if args.demo is None:
        parser.error("--demo is required (the output folder of `make demo`)")
    chosen = range(len(CASES)) if args.cases == "all" else [int(c) - 1 for c in args.cases.split(",")]
    rows = []
    for index in chosen:
        case, model, targets, extra = CASES[index]
        print(f"[{index + 1}/{len(CASES)}] {case}: {model} on {', '.join(targets)}", flush=True)
        rows += run_case(args.demo, case, model, targets, [*extra, "--qat-loss", args.qat_loss], args.threads)
        print(table(rows[-len(targets):]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "qat_loss": args.qat_loss, "rows": rows}, indent=2))
    print(table(rows))
    print("* CoreML: simulated on Linux (the converted torch program run in PyTorch), never a device measurement.")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
