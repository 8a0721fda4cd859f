"""Every target x precision on the demo classifier, the demo detector and MobileNetV2 1.0 at 224:
size, drop against fp32, agreement, SQNR, median latency and latency against the target's own fp32.

    python benchmarks/precisions.py --demo DEMO_DIR [--threads 2] [--runs 20] [--out benchmarks/results/precisions]

DEMO_DIR is what `make demo` leaves (classifier.pt, detector.pt, data/). Accuracy is `validate`'s, on
each demo model's whole val split, against the shipped default gates. Latency: per model, every
runnable artifact is loaded and all are timed round-robin in one stretch (benchmarks/common.py), so
a model's ratios come from one run. MobileNetV2 1.0 at 224 has fresh weights (none can be downloaded
here): its rows give size and latency only, since drift on random weights proves nothing.
CoreML converts here but runs only on macOS: its accuracy is the labelled simulation, and it has no
latency.
"""

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, time_interleaved  # noqa: E402
from conversion import TARGETS  # noqa: E402
from edgemnv2.artifacts import RuntimeUnavailable, find_artifacts  # noqa: E402
from conversion.pipeline import ConversionRequest, run_conversion  # noqa: E402
from edgemnv2.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from edgemnv2.data.preprocess import Preprocessing  # noqa: E402
from edgemnv2.data.shapes import ShapesConfig, generate  # noqa: E402
from edgemnv2.models import create_model  # noqa: E402
from edgemnv2.services import validate_artifacts  # noqa: E402
from quantization.ptq import QuantRecipe  # noqa: E402

HEADLINE = {"classification": ("top1_drop", "top1_agreement", "top-1"), "detection": ("map50_drop", "box_agreement", "mAP@.5")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="the folder `make demo` wrote (classifier.pt, detector.pt, data/)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed rounds per artifact (interleaved)")
    parser.add_argument("--calib-size", type=int, default=128)
    parser.add_argument("--without-224", action="store_true", help="the demo models only (a quick check of this script)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precisions"), help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgemnv2-precisions-"))
    started = time.perf_counter()
    models = [("demo classifier", args.demo / "classifier.pt", args.demo / "data" / "classification", "classification", True),
              ("demo detector", args.demo / "detector.pt", args.demo / "data" / "detection", "detection", True),
              *([] if args.without_224 else [("fresh weights", _mobilenet_224(work), work / "data" / "classification", "classification", False)])]
    rows = []
    for label, checkpoint, data, task, accurate in models:
        if not checkpoint.is_file():
            sys.exit(f"{checkpoint} not found: run `make demo` first, or name its folder with --demo")
        out = work / checkpoint.stem
        label = f"{label} ({_describe(checkpoint)})"
        print(f"\n{label}: converting every target x precision ...", flush=True)
        run_conversion(ConversionRequest(checkpoint, out, calib_data=data, recipe=QuantRecipe(calibration_size=args.calib_size)))
        accuracy = {}
        if accurate:
            print(f"{label}: validating (default gates, whole val split) ...", flush=True)
            validate_artifacts(checkpoint, out, data, gates="default", threads=args.threads, runs=3, report_dir=work / f"report_{checkpoint.stem}")
            report = json.loads((work / f"report_{checkpoint.stem}" / "report.json").read_text())
            accuracy = {(r["target"], r["precision"]): r for r in report["artifacts"]}
        print(f"{label}: timing every runnable artifact round-robin ...", flush=True)
        rows += _rows(label, task, out, accuracy, args)
    _write(rows, args, time.perf_counter() - started)
    return 0


def _describe(checkpoint: Path) -> str:
    from edgemnv2.checkpoint import load_checkpoint

    _, meta = load_checkpoint(checkpoint)
    height, width = meta.preprocessing.input_size
    return f"{meta.arch} {meta.model_kwargs.get('width_mult', 1.0):g}, {height}x{width}"


def _mobilenet_224(work: Path) -> Path:
    generate(work / "data", ShapesConfig(classification_counts=(1, 1, 128), classification_size=224, detection_counts=(0, 0, 0)), tasks=("classification",))
    checkpoint = work / "mobilenet_v2_224.pt"
    meta = CheckpointMeta("mobilenet_v2", "classification", [f"class_{i}" for i in range(10)], Preprocessing((224, 224)), {"width_mult": 1.0})
    save_checkpoint(checkpoint, create_model("mobilenet_v2", num_classes=10, width_mult=1.0), meta)
    return checkpoint


def _rows(label: str, task: str, out: Path, accuracy: dict, args) -> list[dict]:
    drop_key, agreement_key, _ = HEADLINE[task]
    found = find_artifacts(out)
    rows = []
    with ExitStack() as stack:
        runners = {}
        for artifact, manifest in found:
            key = (manifest["target"], manifest["precision"])
            try:
                runners[key] = stack.enter_context(closing(TARGETS[manifest["target"]].load(artifact, manifest, args.threads)))
            except RuntimeUnavailable:
                pass
        height, width = found[0][1]["preprocessing"]["input_size"]
        sample = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
        timed = time_interleaved(runners, sample, warmup=3, runs=args.runs) if runners else {}
    for artifact, manifest in found:
        key = (manifest["target"], manifest["precision"])
        measured = (accuracy.get(key) or {}).get("measured", {})
        fp32 = timed.get((manifest["target"], "fp32"), {}).get("median_ms")
        median = timed.get(key, {}).get("median_ms")
        rows.append({"model": label, "target": key[0], "precision": key[1], "size_mb": manifest["artifact_bytes"] / 1e6,
                     "drop": measured.get(drop_key), "agreement": measured.get(agreement_key), "sqnr_db": measured.get("sqnr_db"),
                     "status": (accuracy.get(key) or {}).get("status"), "simulated": key[0] == "coreml",
                     "median_ms": median, "over_fp32": median / fp32 if median and fp32 else None})
    return rows


def _fmt(value, pattern: str, missing: str = "–") -> str:
    return missing if value is None else pattern.format(value)


def _write(rows: list[dict], args, seconds: float) -> None:
    lines = ["# Every target x precision: size, drop, SQNR, latency", "",
             f"`python benchmarks/precisions.py --demo DEMO_DIR --threads {args.threads} --runs {args.runs}`", "",
             f"machine: {machine()}; {args.threads} threads; median of {args.runs} interleaved rounds per model, batch 1; "
             f"{seconds / 60:.0f} min in all", "",
             "| model | target | precision | size MB | drop | agreement % | SQNR dB | gates | median ms | latency / fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gates = (r["status"] or "–") + (" (simulated)" if r["simulated"] and r["status"] else "")
        lines.append(f"| {r['model']} | {r['target']} | {r['precision']} | {r['size_mb']:.2f} | {_fmt(r['drop'], '{:.2f}')} | "
                     f"{_fmt(r['agreement'], '{:.1f}')} | {_fmt(r['sqnr_db'], '{:.1f}')} | {gates} | "
                     f"{_fmt(r['median_ms'], '{:.2f}', 'macOS only' if r['simulated'] else '–')} | {_fmt(r['over_fp32'], '{:.2f}x')} |")
    lines += ["", "drop: points of top-1 (classifier) or mAP@.5 (detector) against the fp32 checkpoint on its val split; "
              "agreement: top-1 or box agreement with fp32. CoreML rows are simulated on Linux (the converted torch program with the "
              "package's weights) and have no latency. MobileNetV2 1.0 at 224 has fresh weights: size and latency only."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "threads": args.threads, "runs": args.runs, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
