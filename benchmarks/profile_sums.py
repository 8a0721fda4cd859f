"""How far a per-op profile's rows add up to the end-to-end latency, per runtime, on this machine.

    python benchmarks/profile_sums.py [--runs 30] [--threads 2] [--sizes 128,512] [--json out.json]

The rows of `edgemnv2 profile` are each runtime's own per-op figures: ExecuTorch's ETDump events,
torch.profiler's rows for TorchScript, and for LiteRT (whose pip wheel has no op profiler) times of
growing prefixes of the graph. Their sum against the end-to-end median is a property of the CPU,
the thread pool and the runtime's per-invoke overhead, not of the code: on the test suite's 64 px
detector (0.16 ms end to end in TFLite int8) it was 1.43x on an AMD EPYC with AVX-512 VNNI and about
1.0x on the others. So it is printed here, per runtime and size, with the machine line, and no test asserts it.

CenterNet MobileNetV2 0.5 with freshly initialised weights (time does not depend on them); int8 is
calibrated on the built-in shapes images.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine  # noqa: E402
from edgemnv2.artifacts import find_artifacts  # noqa: E402
from conversion.pipeline import ConversionRequest, run_conversion  # noqa: E402
from edgemnv2.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from edgemnv2.data.preprocess import Preprocessing  # noqa: E402
from edgemnv2.data.shapes import ShapesConfig, generate  # noqa: E402
from edgemnv2.diagnosis.profile import profile_verified  # noqa: E402
from edgemnv2.models import create_model  # noqa: E402
from quantization.ptq import QuantRecipe  # noqa: E402

PROFILED_TARGETS = ("executorch", "tflite", "torchscript")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--sizes", default="128", help="input sizes, comma-separated (the demo detector is 128)")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgemnv2-profile-sums-"))
    generate(work / "data", ShapesConfig(classification_counts=(1, 1, 16), detection_counts=(0, 0, 0)), tasks=("classification",))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        kwargs = {"width_mult": args.width}
        checkpoint = work / f"centernet_{size}.pt"
        meta = CheckpointMeta("centernet", "detection", [f"class_{i}" for i in range(3)], Preprocessing((size, size)), kwargs)
        save_checkpoint(checkpoint, create_model("centernet", num_classes=3, **kwargs), meta)
        out = work / f"artifacts_{size}"
        run_conversion(ConversionRequest(checkpoint, out, tuple(PROFILED_TARGETS), ("fp32", "int8"), work / "data" / "classification", QuantRecipe(calibration_size=16)))
        for artifact, manifest in find_artifacts(out):
            report = profile_verified(artifact, manifest, args.threads, args.runs, peak=False)
            rows.append({"size": size, "target": manifest["target"], "precision": manifest["precision"], "ops": len(report["rows"]),
                         "ops_sum_ms": report["ops_sum_ms"], "end_to_end_ms": report["end_to_end_ms"],
                         "ops_over_end_to_end": report["ops_over_end_to_end"]})
            row = rows[-1]
            print(f"{size:>5} px  {row['target']:<12}{row['precision']:<6}{row['ops']:>5} ops  sum {row['ops_sum_ms']:8.3f} ms  "
                  f"end to end {row['end_to_end_ms']:8.3f} ms  sum/e2e {row['ops_over_end_to_end']:5.2f}", flush=True)
    print(f"\nmachine: {machine()}; {args.threads} threads; medians of {args.runs} runs")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "threads": args.threads, "runs": args.runs, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
