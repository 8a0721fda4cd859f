"""The fastest file this CPU runs: MobileNetV2 1.0 at 224 and CenterNet MobileNetV2 1.0 at 512, fp32
and int8 on every target, timed together, and the article's detector code beside them.

    python benchmarks/fastest.py [--threads 2] [--runs 20] [--calib-size 32] [--out benchmarks/results]
    edgemnv2 bench fastest ...   (same thing)

Weights are fresh (speed does not depend on them); int8 is still calibrated on real images (the
built-in shapes, generated on the fly). Every runnable artifact and both eager references are loaded,
then timed round-robin in one pass (edgemnv2.timing.time_interleaved), so every ratio in
a table comes from one run on one machine. CoreML is converted but cannot run on Linux: its rows say
so and carry no time. bf16 (OpenVINO's) is made and timed where OpenVINO's CPU plugin offers it.

One row is not an edgemnv2 artifact: OpenVINO running the ONNX target's int8 file (its QDQ graph)
directly, beside OpenVINO's own NNCF-quantized IR: which of the two int8 graphs the CPU plugin runs
faster is the `openvino` target's design question, answered per CPU kind.

Results are kept per CPU kind: fastest.json holds one entry per machine line, and fastest.md shows
them all, so a run on another CPU adds its table instead of replacing this one's.
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
from conversion import onnx as ONNX  # noqa: E402
from edgemnv2.device.runtime_adapters import NoRuntime, openvino_compiled, openvino_offers_bf16  # noqa: E402
from edgemnv2.timing import cpu_features  # noqa: E402

MODELS = {  # name -> (registry name, kwargs, task, input size)
    "mobilenet_v2_1.0_224": ("mobilenet_v2", {"width_mult": 1.0}, "classification", 224),
    "centernet_mobilenet_v2_1.0_512": ("centernet", {"backbone": "mobilenet_v2"}, "detection", 512),
}
ARTICLE_DETECTOR = "centernet_seed"  # the article's detector code, eager fp32: what the 10x goal is against
GOAL_OVER_ARTICLE = 10.0
CLASSES = 10


def precisions_here() -> list[str]:
    """fp32 and int8, and bf16 where OpenVINO's CPU plugin computes it on this CPU (the target that makes it)."""
    try:
        offered = openvino_offers_bf16()
    except ImportError:
        offered = False
    return ["fp32", "int8"] + (["bf16"] if offered else [])


def convert_model(name: str, work: Path, calib_size: int, precisions: list[str]) -> tuple[Path, Path]:
    """A fresh-weight checkpoint of `name` and every target x (fp32, int8) of it -> (checkpoint, artifacts folder)."""
    from conversion.pipeline import ConversionRequest, run_conversion
    from edgemnv2.checkpoint import CheckpointMeta, save_checkpoint
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.data.shapes import ShapesConfig, generate
    from edgemnv2.models import create_model
    from quantization.ptq import QuantRecipe

    arch, kwargs, task, size = MODELS[name]
    data = work / "data"
    if not (data / task).exists():
        config = ShapesConfig(classification_counts=(1, 1, calib_size), detection_counts=(1, 1, calib_size))
        generate(data, config, tasks=(task,))
    torch.manual_seed(0)
    model = create_model(arch, num_classes=CLASSES, **kwargs)
    meta = CheckpointMeta(arch, task, [f"class_{i}" for i in range(CLASSES)], Preprocessing((size, size)), dict(kwargs))
    checkpoint = work / f"{name}.pt"
    save_checkpoint(checkpoint, model, meta)
    out = work / f"{name}_artifacts"
    run_conversion(ConversionRequest(checkpoint, out, ("all",), tuple(precisions), data / task, QuantRecipe(calibration_size=calib_size), force=True))
    return checkpoint, out


def load_rows(name: str, checkpoint: Path, folder: Path, threads: int) -> tuple[list[dict], dict]:
    """-> (rows, runners): eager fp32, then every artifact; a row that cannot run here says why."""
    from conversion import TARGETS
    from edgemnv2.artifacts import RuntimeUnavailable, find_artifacts
    from edgemnv2.checkpoint import load_checkpoint
    from edgemnv2.evaluate import torch_runner
    from edgemnv2.models import create_model

    model, _ = load_checkpoint(checkpoint)
    rows = [{"model": name, "key": (name, "eager"), "target": "pytorch eager", "precision": "fp32", "mb": sum(p.numel() for p in model.parameters()) * 4 / 1e6}]
    runners = {(name, "eager"): torch_runner(model)}
    if MODELS[name][2] == "detection":
        article = create_model(ARTICLE_DETECTOR, num_classes=CLASSES).eval()
        rows.append({"model": name, "key": (name, ARTICLE_DETECTOR), "target": "article's detector code, eager", "precision": "fp32",
                     "mb": sum(p.numel() for p in article.parameters()) * 4 / 1e6})
        runners[(name, ARTICLE_DETECTOR)] = torch_runner(article)
    for artifact, manifest in find_artifacts(folder):
        key = (name, artifact.name)
        row = {"model": name, "key": key, "target": manifest["target"], "precision": manifest["precision"], "mb": manifest["artifact_bytes"] / 1e6}
        try:
            runners[key] = TARGETS[manifest["target"]].load(artifact, manifest, threads)
        except RuntimeUnavailable as exc:
            row["status"] = f"not run: {exc}"
        rows.append(row)
        if manifest["target"] == ONNX.SPEC.name and manifest["precision"] == "int8":
            key = (name, artifact.name + " in OpenVINO")
            qdq = {**{k: v for k, v in row.items() if k != "status"}, "key": key, "not_an_artifact": True,
                   "target": f"OpenVINO CPU plugin reading the {ONNX.SPEC.name} int8 file (QDQ)"}
            try:
                runners[key] = openvino_runner(artifact, threads)
            except (ImportError, NoRuntime) as exc:
                qdq["status"] = f"not run: {exc}"
            rows.append(qdq)
    return rows, runners


def openvino_runner(onnx_file: Path, threads: int):
    """OpenVINO's CPU plugin on an ONNX file, compiled as the openvino target's runners compile its IR."""
    request = openvino_compiled(onnx_file, threads, weights="").create_infer_request()
    return lambda batch: request.infer({0: batch})


def summarize(rows: list[dict]) -> dict:
    """Per model: the fastest file per precision class, and for the detector its speed-up over the article's code."""
    out = {}
    for name in MODELS:
        mine = [r for r in rows if r["model"] == name and r.get("median_ms") and r["target"] not in ("pytorch eager",) and "article" not in r["target"]
                and not r.get("not_an_artifact")]
        best = {}
        for cls in ("fp32", "bf16", "int8"):
            members = [r for r in mine if r["precision"] == cls]
            if members:
                fastest = min(members, key=lambda r: r["median_ms"])
                best[cls] = {"target": fastest["target"], "precision": fastest["precision"], "median_ms": fastest["median_ms"], "p90_ms": fastest["p90_ms"]}
        article = next((r for r in rows if r["model"] == name and "article" in r["target"]), None)
        if article and "int8" in best:
            ratio = article["median_ms"] / best["int8"]["median_ms"]
            best["over_article"] = {"article_ms": article["median_ms"], "ratio": ratio, "goal": GOAL_OVER_ARTICLE, "met": ratio >= GOAL_OVER_ARTICLE}
        out[name] = best
    return out


def markdown(results: dict) -> str:
    lines = ["# The fastest file on each CPU kind", "",
             "`python benchmarks/fastest.py` (fresh weights, int8 calibrated on the built-in shapes; every row of one table timed round-robin "
             "in one run; batch 1). CoreML cannot run on Linux: its rows are converted, not timed.", ""]
    for kind, result in results.items():
        lines += [f"## {kind}", "", f"- machine: {result['machine']}", f"- CPU flags that matter here: {', '.join(result['cpu_flags']) or 'none of the int8 ones'}",
                  f"- {result['threads']} threads, {result['runs']} timed rounds, measured {result['created']}", ""]
        for name, best in result["summary"].items():
            picks = "; ".join(f"{cls}: {b['target']} {b['precision']} {b['median_ms']:.2f} ms" for cls, b in best.items() if cls != "over_article")
            lines.append(f"- **{name}**: fastest {picks}")
            if "over_article" in best:
                o = best["over_article"]
                lines.append(f"  - against the article's detector code eager fp32 ({o['article_ms']:.1f} ms): **{o['ratio']:.1f}x** "
                             f"(goal {o['goal']:g}x: {'met' if o['met'] else 'missed'})")
        lines += ["", "| model | target | precision | MB | median ms | p90 ms | vs eager fp32 |", "|---|---|---|---|---|---|---|"]
        for r in result["rows"]:
            eager = next(e for e in result["rows"] if e["model"] == r["model"] and e["target"] == "pytorch eager")
            if r.get("median_ms"):
                cells = [f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{eager['median_ms'] / r['median_ms']:.2f}x"]
            else:
                cells = [r.get("status", "not run"), "", ""]
            lines.append(f"| {r['model']} | {r['target']} | {r['precision']} | {r['mb']:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calib-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgemnv2-fastest-"))
    rows, runners, precisions = [], {}, precisions_here()
    for name in MODELS:
        print(f"== convert {name} to every target ({', '.join(precisions)})", file=sys.stderr, flush=True)
        started = time.perf_counter()
        checkpoint, folder = convert_model(name, work, args.calib_size, precisions)
        print(f"   {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        mine, loaded = load_rows(name, checkpoint, folder, args.threads)
        rows += mine
        runners.update(loaded)
    print(f"== timing {len(runners)} runners round-robin, {args.runs} rounds", file=sys.stderr, flush=True)
    # one pass per input size (a 224 and a 512 sample), interleaved within each
    for name, (_, _, _, size) in MODELS.items():
        sample = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        timed = time_interleaved({key: r for key, r in runners.items() if key[0] == name}, sample, warmup=3, runs=args.runs)
        for row in rows:
            if row["key"] in timed:
                row.update(median_ms=timed[row["key"]]["median_ms"], p90_ms=timed[row["key"]]["p90_ms"])
    for row in rows:
        row["key"] = list(row["key"])
    result = {"machine": machine(), "cpu_flags": cpu_features(),
              "threads": args.threads, "runs": args.runs, "created": time.strftime("%Y-%m-%d %H:%M"), "rows": rows, "summary": summarize(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "fastest.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results[result["machine"]] = result  # one entry per CPU kind
    store.write_text(json.dumps(results, indent=1))
    (args.out / "fastest.md").write_text(markdown(results))
    print(markdown({result["machine"]: result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
