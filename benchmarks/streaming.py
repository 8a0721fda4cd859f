"""Memory and throughput of `validate` as the validation split grows (issue #14).

    python benchmarks/streaming.py --data DIR [--counts 1000,20000] [--width 0.35] [--before REV]

DIR is a classification dataset root with val/ and calib/ (ImageFolder), e.g. from
`edgemnv2 data shapes --task classification --size 224 --count 20000 --scale 0.4 --workers 2`.
A MobileNetV2 at the data's size is converted to every target (fp32 and int8, calibrated on calib/);
its weights are untrained: this measures memory and speed, not accuracy. Then `validate` runs as
its own process on the first N images for each N in --counts; its resident memory is sampled every
20 ms from /proc (the peak of the whole process, not what validate reports about itself).
With --before REV the same runs are repeated with the code of that git revision (a worktree).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import machine  # noqa: E402


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(command: list[str], env: dict, cwd: Path) -> dict:
    """Run a command; -> exit code, seconds, and its peak RSS sampled every 20 ms.

    `cwd` is the code's own checkout: `python -m` puts the working directory first on sys.path, so
    run from elsewhere it would import that folder's edgemnv2, whatever PYTHONPATH says."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], _rss_kb(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    sampler.join()
    return {"exit": process.returncode, "seconds": time.perf_counter() - started, "peak_rss_mb": peak[0] / 1024, "stderr": stderr[-2000:]}


def prepare(data: Path, work: Path, width: float) -> Path:
    from conversion.pipeline import ConversionRequest, run_conversion
    from edgemnv2.checkpoint import CheckpointMeta, save_checkpoint
    from edgemnv2.data.datasets import list_image_folder
    from edgemnv2.data.images import load_rgb
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.models import create_model
    from quantization.ptq import QuantRecipe

    checkpoint = work / "model.pt"
    if not checkpoint.exists():
        samples, classes = list_image_folder(data / "val")
        side = load_rgb(samples[0][0]).height
        meta = CheckpointMeta("mobilenet_v2", "classification", classes, Preprocessing((side, side)), {"width_mult": width})
        save_checkpoint(checkpoint, create_model("mobilenet_v2", num_classes=len(classes), width_mult=width), meta)
    if not list((work / "artifacts").glob("*.manifest.json")):  # reuse: every code must read the very same artifacts
        run_conversion(ConversionRequest(checkpoint, work / "artifacts", ("all",), ("fp32", "int8"), data, QuantRecipe(calibration_size=128)))
    return checkpoint


def validate_command(checkpoint: Path, artifacts: Path, data: Path, count: int, out: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "edgemnv2.cli.main", "validate", "--checkpoint", str(checkpoint), "--artifacts", str(artifacts),
            "--data", str(data), "--limit", str(count), "--runs", "5", "--threads", str(threads), "--out", str(out), "--force"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--counts", default="1000,20000")
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="keep the checkpoint and artifacts here (reused when present)")
    parser.add_argument("--before", help="also run a git revision's code, e.g. 5f2c114")
    parser.add_argument("--skip-now", action="store_true", help="run only --before's code (the current code's rows are already measured)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="edgemnv2-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = prepare(args.data, work, args.width)
    codes = {} if args.skip_now else {"now": REPO}
    if args.before:
        tree = work / f"code-{args.before}"
        if not tree.exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.before], check=True, capture_output=True)
        codes[args.before] = tree
    runs = []
    for code, tree in codes.items():
        env = dict(os.environ, PYTHONPATH=str(tree), EDGEMNV2_NO_PROGRESS="1")
        for count in (int(c) for c in args.counts.split(",")):
            out = work / f"report-{code}-{count}"
            result = run_measured(validate_command(checkpoint, work / "artifacts", args.data, count, out, args.threads), env, tree)
            report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
            rates = {row["artifact"]: row["measured"].get("images_per_second") for row in report.get("artifacts", [])}
            runs.append({"code": code, "images": count, **{k: v for k, v in result.items() if k != "stderr"}, "images_per_second": rates,
                         "artifacts": len(rates)})
            print(f"{code:>10} {count:>6} images: exit {result['exit']}, {result['seconds']:.0f} s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
            if result["exit"] not in (0, 1):
                print(result["stderr"], file=sys.stderr)
    print(f"\nmachine: {machine()}; {args.threads} threads; MobileNetV2 {args.width} at the data's size; fp32 + int8 of every target")
    print(f"{'code':>10} {'images':>7} {'peak RSS MB':>12} {'seconds':>8} {'images/s (all artifacts)':>26}")
    for r in runs:
        print(f"{r['code']:>10} {r['images']:>7} {r['peak_rss_mb']:>12.0f} {r['seconds']:>8.0f} {r['images'] / r['seconds']:>14.1f} (pass)")
    for code in codes:
        mine = sorted((r for r in runs if r["code"] == code), key=lambda r: r["images"])
        if len(mine) > 1:
            print(f"{code}: peak RSS grows {mine[-1]['peak_rss_mb'] - mine[0]['peak_rss_mb']:+.0f} MB from {mine[0]['images']} to {mine[-1]['images']} images")
    for code in codes:
        latest = max((r for r in runs if r["code"] == code), key=lambda r: r["images"])
        print(f"\nimages/s per artifact ({code} code, {latest['images']} images; inside the runtime during the accuracy pass):")
        for name, rate in latest["images_per_second"].items():
            print(f"  {name:<48} {'n/a (not run here)' if rate is None else f'{rate:8.1f}'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "threads": args.threads, "width": args.width, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
