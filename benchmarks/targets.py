"""Latency and size of every artifact of MobileNetV2 1.0 at 224x224, batch 1, beside eager fp32.

    python benchmarks/targets.py [--checkpoint CKPT] [--threads 2] [--runs 30]
    python benchmarks/targets.py --sizes [--runs 30] [--json out.json]   # int8 over fp32 at the four shipped sizes,
                                                                          # with each int8's per-op profile against its fp32

Without a checkpoint a 10-class MobileNetV2 1.0 is built (speed does not depend on the weights);
int8 is still calibrated on real images (the built-in shapes, generated on the fly).
One run, same threads for every row, all rows timed round-robin; ratios are computed within this run.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, time_interleaved  # noqa: E402
from conversion import TARGETS  # noqa: E402
from edgemnv2.artifacts import RuntimeUnavailable, find_artifacts  # noqa: E402
from conversion.pipeline import ConversionRequest, run_conversion  # noqa: E402
from edgemnv2.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint  # noqa: E402
from edgemnv2.data.preprocess import Preprocessing  # noqa: E402
from edgemnv2.data.shapes import ShapesConfig, generate  # noqa: E402
from edgemnv2.evaluate import torch_runner  # noqa: E402
from edgemnv2.models import create_model  # noqa: E402
from edgemnv2.validation.recommend import by_class_from, ship_here_lines  # noqa: E402
from quantization.ptq import QuantRecipe  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--calib-size", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    parser.add_argument("--sizes", action="store_true", help="ExecuTorch and TFLite, fp32 and int8, at the four sizes the product ships")
    parser.add_argument("--no-profiles", dest="profiles", action="store_false", help="--sizes without the per-op evidence (faster)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgemnv2-bench-"))
    generate(work / "data", ShapesConfig(classification_counts=(1, 1, args.calib_size), detection_counts=(0, 0, 0)), tasks=("classification",))
    if args.sizes:
        return four_sizes(args, work)
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = work / "mobilenet_v2_224.pt"
        meta = CheckpointMeta("mobilenet_v2", "classification", [f"class_{i}" for i in range(10)], Preprocessing((224, 224)), {"width_mult": 1.0})
        save_checkpoint(checkpoint, create_model("mobilenet_v2", num_classes=10), meta)
    model, meta = load_checkpoint(checkpoint)
    started = time.perf_counter()
    results, _, _ = run_conversion(ConversionRequest(checkpoint, work / "artifacts", calib_data=work / "data" / "classification", recipe=QuantRecipe(calibration_size=args.calib_size)))
    conversion_seconds = time.perf_counter() - started
    sample = np.random.default_rng(0).standard_normal((1, 3, *meta.preprocessing.input_size)).astype(np.float32)
    # Load every runnable artifact, then time all of them round-robin in one pass: machine drift
    # over the minutes of a run then hits every row alike, and the ratios stay honest.
    runners = {"eager": torch_runner(model)}
    rows = [{"key": "eager", "target": "pytorch eager", "precision": "fp32", "bytes": sum(p.numel() * 4 for p in model.parameters())}]
    for artifact, manifest in find_artifacts(work / "artifacts"):
        row = {"key": artifact.name, "target": manifest["target"], "precision": manifest["precision"], "bytes": manifest["artifact_bytes"]}
        try:
            runners[artifact.name] = TARGETS[manifest["target"]].load(artifact, manifest, args.threads)
        except RuntimeUnavailable as exc:
            row.update(median_ms=None, p90_ms=None, min_ms=None, status=f"not run: {exc}")
        rows.append(row)
    timed = time_interleaved(runners, sample, warmup=3, runs=args.runs)
    for row in rows:
        if row["key"] in timed:
            row.update(timed[row["key"]], status="measured")
    eager = timed["eager"]
    own_fp32 = {r["target"]: r["median_ms"] for r in rows if r["precision"] == "fp32" and r["median_ms"]}
    print(f"\nMobileNetV2 1.0, {meta.preprocessing.input_size[0]}x{meta.preprocessing.input_size[1]}, batch 1, {args.threads} threads, {args.runs} timed rounds, interleaved")
    print(f"machine: {machine()}")
    print(f"conversion of all targets x precisions: {conversion_seconds:.0f} s "
          f"({', '.join(f'{r.target}/{r.precision} {r.seconds:.0f}s' for r in results)})\n")
    header = f"{'target':<20}{'precision':<14}{'size MB':>9}{'median ms':>11}{'p90 ms':>9}{'vs eager':>10}{'vs own fp32':>13}  status"
    print(header)
    print("-" * len(header))
    for r in rows:
        median = r["median_ms"]
        vs_eager = f"{eager['median_ms'] / median:.2f}x" if median else "n/a"
        vs_fp32 = f"{own_fp32[r['target']] / median:.2f}x" if median and r["target"] in own_fp32 and r["precision"] != "fp32" else ""
        median_text = f"{median:.2f}" if median else "n/a"
        p90_text = f"{r['p90_ms']:.2f}" if r["p90_ms"] else "n/a"
        print(f"{r['target']:<20}{r['precision']:<14}{r['bytes'] / 1e6:>9.2f}{median_text:>11}{p90_text:>9}{vs_eager:>10}{vs_fp32:>13}  {r['status']}")
    print("\nCoreML: converted on this machine, runs only on macOS: no latency is shown for it here.")
    print("torchscript_mobile int8 uses qnnpack, the ARM engine: on x86 its latency says nothing about a phone.")
    ship_here = ship_here_block(rows, args)
    print("\n".join(ship_here_lines(ship_here)))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "threads": args.threads, "conversion_seconds": conversion_seconds, "rows": rows,
                                         "ship_here": ship_here}, indent=2))
    return 0


def ship_here_block(rows: list[dict], args) -> dict:
    """The fastest measured file per precision class, from this run's round-robin table. This benchmark
    scores no accuracy, so nothing here is gate-checked: `validate --gates` is what
    names the file to ship (it re-times the ones that passed, the same way)."""
    measured = [{"artifact": r["key"], "target": r["target"], "precision": r["precision"], "median_ms": r["median_ms"], "p90_ms": r["p90_ms"]}
                for r in rows if r["key"] != "eager" and r.get("median_ms")]
    return {"machine": machine(), "threads": args.threads, "timed_rounds": args.runs, "timing": "round-robin over every runnable artifact, one run, batch 1",
            "basis": "speed only: accuracy not scored, gates not checked (validate --gates checks them)", **by_class_from(measured)}


# The sizes the product ships: the demo's two models, the paper's classifier and the article's detector.
SIZES = (
    ("demo classifier: MobileNetV2 0.5, 64 px", "mobilenet_v2", "classification", 64, {"width_mult": 0.5}),
    ("demo detector: CenterNet MobileNetV2 0.5, 128 px", "centernet", "detection", 128, {"width_mult": 0.5}),
    ("MobileNetV2 1.0, 224 px", "mobilenet_v2", "classification", 224, {"width_mult": 1.0}),
    ("CenterNet MobileNetV2 1.0, 512 px", "centernet", "detection", 512, {"width_mult": 1.0}),
)
SIZE_TARGETS = ("executorch", "tflite")


def four_sizes(args, work: Path) -> int:
    """int8 over its own fp32 for ExecuTorch and TFLite at each shipped size (weights freshly
    initialised: latency does not depend on them; int8 calibrated on real images). Each size's four
    artifacts are timed round-robin, so its ratios come from one stretch of the machine's time; then
    each int8 artifact is profiled against its fp32 in the runtime (the per-op evidence), with this
    CPU's int8-over-fp32 GEMM ceiling for the runtime."""
    table = []
    for label, arch, task, size, kwargs in SIZES:
        checkpoint = work / f"{arch}_{size}.pt"
        classes = [f"class_{i}" for i in range(10)]
        save_checkpoint(checkpoint, create_model(arch, num_classes=10, **kwargs), CheckpointMeta(arch, task, classes, Preprocessing((size, size)), kwargs))
        out = work / f"artifacts_{arch}_{size}"
        run_conversion(ConversionRequest(checkpoint, out, tuple(SIZE_TARGETS), ("fp32", "int8"), work / "data" / "classification", QuantRecipe(calibration_size=args.calib_size)))
        found = {(m["target"], m["precision"]): (a, m) for a, m in find_artifacts(out)}
        runners = {key: TARGETS[key[0]].load(a, m, args.threads) for key, (a, m) in found.items()}
        sample = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        timed = time_interleaved(runners, sample, warmup=3, runs=args.runs)
        for target in SIZE_TARGETS:
            fp32, int8 = timed[(target, "fp32")]["median_ms"], timed[(target, "int8")]["median_ms"]
            row = {"size": label, "target": target, "fp32_ms": round(fp32, 3), "int8_ms": round(int8, 3), "int8_over_fp32": round(fp32 / int8, 2)}
            print(f"{label:<52}{target:<12}fp32 {fp32:8.3f} ms   int8 {int8:8.3f} ms   int8 {fp32 / int8:5.2f}x faster", flush=True)
            if args.profiles:
                row["evidence"] = evidence(found[(target, "int8")], found[(target, "fp32")], args, sample, timed[(target, "int8")], timed[(target, "fp32")])
                print(f"    {row['evidence']['verdict']}", flush=True)
            table.append(row)
    print(f"\nmachine: {machine()}; {args.threads} threads; medians of {args.runs} interleaved rounds per size")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "threads": args.threads, "runs": args.runs, "rows": table}, indent=2))
    return 0


def evidence(int8, fp32, args, sample: np.ndarray, int8_timing: dict, fp32_timing: dict) -> dict:
    """The int8 artifact's per-op profile against its fp32's, held against the round-robin latencies
    above (so the verdict's end-to-end ratio is the table's), with the runtime's measured ceiling."""
    from edgemnv2.diagnosis.profile import profile_against_fp32

    _, comparison = profile_against_fp32(int8, fp32, args.threads, args.runs, sample, (int8_timing["median_ms"], fp32_timing["median_ms"]))
    return {key: comparison[key] for key in ("ceiling", "compute_over_fp32", "by_kind", "non_compute_extra", "verdict")}


if __name__ == "__main__":
    sys.exit(main())
