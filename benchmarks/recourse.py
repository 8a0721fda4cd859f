"""Accuracy recourse (`convert --max-drop`) on the demo models: per case and target, the drop
before and after, what the search chose, the evaluations it spent and the latency cost.

    python benchmarks/recourse.py --demo OUT_OF_MAKE_DEMO [--out benchmarks/results/recourse.json]

Cases (issue #15): the demo detector on TorchScript x86 (--max-drop 1.0); per-tensor weights on
the demo classifier and detector, before and after equalization + bias correction, on ExecuTorch and
TFLite; --max-drop 0.25 (classifier, top-1) and 0.5 (detector, mAP@.5) on ExecuTorch, TFLite, CoreML
W8A8 (simulated on Linux: labelled) and TorchScript. Drops are in points on the demo's val split,
measured in each runtime; latency ratios are the chosen artifact over the all-int8 one, timed in the
same process (batch 1, the machine and threads recorded).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine  # noqa: E402

CASES = [
    # (case, model, targets, extra convert arguments)
    ("torchscript x86, --max-drop 1.0", "detector", ["torchscript"], ["--max-drop", "1.0"]),
    ("per-tensor, equalization + bias correction", "classifier", ["executorch", "tflite"], ["--per-tensor", "--max-drop", "0", "--recourse", "equalization"]),
    ("per-tensor, equalization + bias correction", "detector", ["executorch", "tflite"], ["--per-tensor", "--max-drop", "0", "--recourse", "equalization"]),
    ("--max-drop 0.25", "classifier", ["executorch", "tflite", "coreml", "torchscript"], ["--max-drop", "0.25"]),
    ("--max-drop 0.5", "detector", ["executorch", "tflite", "coreml", "torchscript"], ["--max-drop", "0.5"]),
]


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
            rows.append({"case": case, "model": model, "target": manifest["target"], "metric": record.get("metric"),
                         "budget": record.get("max_drop"), "drop_before": record["before"]["drop"], "drop_after": record["after"]["drop"],
                         "met": record.get("met"), "chosen": record["chosen"]["description"], "float_layers": len(record.get("float_layers", [])),
                         "evaluations": record.get("evaluations"), "latency_ratio": record.get("latency_ratio"),
                         "measured_on": record.get("measured_on"), "attempts": record.get("attempts")})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | model | target | drop before | drop after | met | chosen | float layers | evaluations | latency x |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        latency = f"{r['latency_ratio']:.2f}" if r["latency_ratio"] else "n/a (simulated)"
        lines.append(f"| {r['case']} | {r['model']} | {r['target']}{' *' if r['measured_on'] != 'runtime' else ''} | {r['drop_before']:.2f} | "
                     f"{r['drop_after']:.2f} | {'yes' if r['met'] else 'no'} | {r['chosen']} | {r['float_layers']} | {r['evaluations']} | {latency} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="the output folder of `make demo` (classifier.pt, detector.pt, data/)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "recourse.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default="all", help="comma-separated case numbers (1-based) or all")
    args = parser.parse_args(argv)
    chosen = range(len(CASES)) if args.cases == "all" else [int(c) - 1 for c in args.cases.split(",")]
    rows = []
    for index in chosen:
        case, model, targets, extra = CASES[index]
        print(f"[{index + 1}/{len(CASES)}] {case}: {model} on {', '.join(targets)}", flush=True)
        rows += run_case(args.demo, case, model, targets, extra, args.threads)
        print(table(rows[-len(targets):]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": rows}, indent=2))
    print(table(rows))
    print("* CoreML: simulated on Linux (the converted torch program run in PyTorch), never a device measurement.")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
