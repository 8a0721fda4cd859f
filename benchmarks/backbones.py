"""The article's CenterNet backbone comparison, reproduced on this machine, plus what deployment buys.

    python benchmarks/backbones.py [--epochs 6] [--train-images 1000] [--threads 2] [--runs 20] [--out benchmarks/results]
    edgemnv2 bench backbones ...   (same thing)

Rows: the article-code `centernet_seed`, and `centernet` with MobileNetV1, MobileNetV2, DLA-34.
Columns: parameters (at the article's 10 classes and as trained), fp32 size, eager fp32 latency at
512x512 (median, batch 1), the best deployed int8 latency at 512x512 (ExecuTorch and TFLite, each
calibrated on real images with the trained weights), and the training loss and mAP@.5 reached on
the shapes detection set under one fixed budget (same epochs, batch 16, 128x128 training input).
The article's own figures are quoted beside each row, labelled as measured on its unknown CPU.
Every figure in one table comes from one run; stages are cached in --out/work so a rerun resumes.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, time_interleaved  # noqa: E402

ARTICLE = {  # the article's table: its CPU is unknown
    "centernet_seed": {"params": "4.3 M (17 MB)", "cpu_time": "600 ms"},
    "centernet_mobilenet_v1": {"params": "3.2 M", "cpu_time": "250 ms"},
    "centernet_mobilenet_v2": {"params": "4.3 M (17 MB)", "cpu_time": "600 ms"},
    "centernet_dla34": {"params": "20 M (DLASeg)", "cpu_time": "1.2 s"},
}
ROWS = [  # (row name, registry name, kwargs)
    ("centernet_seed", "centernet_seed", {}),
    ("centernet_mobilenet_v1", "centernet", {"backbone": "mobilenet_v1"}),
    ("centernet_mobilenet_v2", "centernet", {"backbone": "mobilenet_v2"}),
    ("centernet_dla34", "centernet", {"backbone": "dla34", "neck_channels": 64, "head_channels": 256}),
]
LATENCY_INPUT = 512
ARTICLE_CLASSES = 10


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _gmacs(model) -> float:
    """Multiply-accumulates of conv and linear layers for one 512x512 image, in billions."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.numel() * module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        else:
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, LATENCY_INPUT, LATENCY_INPUT))
    for hook in hooks:
        hook.remove()
    return total / 1e9


def ensure_data(root: Path, train_images: int) -> Path:
    from edgemnv2.data.shapes import ShapesConfig, generate

    marker = root / f".complete-{train_images}"
    if not marker.exists():
        generate(root, ShapesConfig(detection_counts=(train_images, 300, 64)), tasks=("detection",))
        marker.write_text("ok")
    return root / "detection"


def _architecture_key(model) -> str:
    """Changes whenever the architecture does (names and shapes of every tensor)."""
    import hashlib

    layout = repr([(k, tuple(v.shape)) for k, v in model.state_dict().items()])
    return hashlib.sha256(layout.encode()).hexdigest()[:8]


def train_row(name, arch, kwargs, data, work: Path, epochs: int, train_size: int, train_images: int) -> dict:
    """Train under the shared budget. -> {checkpoint, train_loss, map50, seconds}.

    Cached under a key of the budget and the architecture, so a rerun resumes, and a changed model
    or budget retrains instead of silently reusing stale weights."""
    from edgemnv2.checkpoint import CheckpointMeta
    from edgemnv2.tasks import DETECTION
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.data.shapes import DETECTION_CLASSES
    from edgemnv2.train import TrainConfig, seeded_model

    # the data is always the built-in shapes (ensure_data): its classes are known without loading it
    model = seeded_model(arch, TrainConfig.seed, num_classes=len(DETECTION_CLASSES), **kwargs)
    key = f"{name}-e{epochs}-n{train_images}-s{train_size}-{_architecture_key(model)}"
    cache = work / f"{key}.train.json"
    if cache.exists():
        return json.loads(cache.read_text())
    preprocessing = Preprocessing((train_size, train_size))
    train = DETECTION.load_split(data, "train", preprocessing)
    val = DETECTION.load_split(data, "val", preprocessing, class_names=train.class_names)
    meta = CheckpointMeta(arch, "detection", train.class_names, preprocessing, dict(kwargs))
    checkpoint = work / f"{key}.pt"
    result = DETECTION.train(model, train, val, meta, TrainConfig(epochs=epochs, batch_size=16, lr=3e-3), checkpoint)
    record = {"checkpoint": str(checkpoint), "train_loss": result.history[-1]["train_loss"],
              "map50": result.best_metrics.get("val_map50", 0.0), "seconds": result.seconds, "epochs": epochs}
    cache.write_text(json.dumps(record))
    return record


def int8_runners(checkpoint: Path, data: Path, work: Path, threads: int) -> dict:
    """Convert the trained weights at 512x512 to ExecuTorch and TFLite int8: target -> loaded runner."""
    from conversion import TARGETS
    from edgemnv2.artifacts import find_artifacts
    from conversion.pipeline import ConversionRequest, run_conversion
    from edgemnv2.checkpoint import load_checkpoint, save_checkpoint
    from edgemnv2.data.preprocess import Preprocessing
    from quantization.ptq import QuantRecipe

    out = work / f"{checkpoint.stem}_artifacts"
    if not (out.exists() and list(find_artifacts(out))):  # converted in an earlier run: reuse
        model, meta = load_checkpoint(checkpoint)
        meta.preprocessing = Preprocessing((LATENCY_INPUT, LATENCY_INPUT))
        at_512 = work / f"{checkpoint.stem}_512.pt"
        save_checkpoint(at_512, model, meta)
        run_conversion(ConversionRequest(at_512, out, ("executorch", "tflite"), ("int8",), data, QuantRecipe(calibration_size=32), force=True))
    return {manifest["target"]: TARGETS[manifest["target"]].load(artifact, manifest, threads) for artifact, manifest in find_artifacts(out)}


def run(args) -> dict:
    """Three phases, so that every latency in the table comes from one interleaved timing pass:
    train every row (cached), convert every row (cached), then time all runners round-robin."""
    from edgemnv2.checkpoint import load_checkpoint
    from edgemnv2.evaluate import torch_runner
    from edgemnv2.models import create_model

    torch.set_num_threads(args.threads)
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = ensure_data(work / "data", args.train_images)
    sample = np.random.default_rng(0).standard_normal((1, 3, LATENCY_INPUT, LATENCY_INPUT)).astype(np.float32)
    trained, models, runners = {}, {}, {}
    for name, arch, kwargs in ROWS:
        print(f"== train {name}", file=sys.stderr, flush=True)
        trained[name] = train_row(name, arch, kwargs, data, work, args.epochs, args.train_size, args.train_images)
    for name, arch, kwargs in ROWS:
        print(f"== convert {name}", file=sys.stderr, flush=True)
        checkpoint = Path(trained[name]["checkpoint"])
        int8 = int8_runners(checkpoint, data, work, args.threads)
        if not int8:
            raise SystemExit(f"{name}: no int8 artifact converted; see the conversion messages above")
        models[name] = load_checkpoint(checkpoint)[0]
        runners[(name, "eager")] = torch_runner(models[name])
        runners.update({(name, target): runner for target, runner in int8.items()})
    print(f"== timing {len(runners)} runners interleaved, {args.runs} rounds", file=sys.stderr, flush=True)
    timed = {key: stats["median_ms"] for key, stats in time_interleaved(runners, sample, warmup=2, runs=args.runs).items()}
    rows = []
    for name, arch, kwargs in ROWS:
        model = models[name]
        article_model = create_model(arch, num_classes=ARTICLE_CLASSES, **kwargs)
        int8 = {target: ms for (row, target), ms in timed.items() if row == name and target != "eager"}
        best_target = min(int8, key=int8.get)
        rows.append({
            "row": name, "params_10_classes": _params(article_model), "params_trained": _params(model),
            "gmacs_512": _gmacs(article_model), "fp32_mb": _params(model) * 4 / 1e6, "eager_fp32_ms": timed[(name, "eager")],
            "executorch_int8_ms": int8.get("executorch"), "tflite_int8_ms": int8.get("tflite"),
            "best_int8_ms": int8[best_target], "best_int8_target": best_target,
            "train_loss": trained[name]["train_loss"], "map50": trained[name]["map50"] * 100, "train_seconds": trained[name]["seconds"],
            "article": ARTICLE[name],
        })
    return {"machine": machine(), "threads": args.threads, "runs": args.runs, "latency_input": LATENCY_INPUT, "timing": "interleaved round-robin",
            "training": {"epochs": args.epochs, "batch_size": 16, "input": args.train_size, "train_images": args.train_images, "classes": 6},
            "rows": rows, "goals": goals(rows)}


def goals(rows) -> dict:
    by = {r["row"]: r for r in rows}
    mnv2, seed, v1 = by["centernet_mobilenet_v2"], by["centernet_seed"], by["centernet_mobilenet_v1"]
    return {
        "mnv2_params_at_most_article_4.3M": mnv2["params_10_classes"] <= 4.3e6,
        "mnv2_eager_not_slower_than_seed": mnv2["eager_fp32_ms"] <= seed["eager_fp32_ms"],
        "mnv2_best_int8_speedup_vs_seed_eager": seed["eager_fp32_ms"] / mnv2["best_int8_ms"],
        "mnv2_best_int8_at_least_8x_seed_eager": seed["eager_fp32_ms"] / mnv2["best_int8_ms"] >= 8.0,
        "mnv2_map50_above_mobilenet_v1": mnv2["map50"] > v1["map50"],
    }


def markdown(result: dict) -> str:
    t = result["training"]
    lines = [
        "# CenterNet backbones on this machine",
        "",
        f"Machine: {result['machine']}; {result['threads']} threads; latency = median of {result['runs']} runs, batch 1, {result['latency_input']}x{result['latency_input']} input; "
        f"all runners timed round-robin in one pass, so machine drift hits every row alike.",
        f"Training budget (same for every row): {t['epochs']} epochs, batch {t['batch_size']}, {t['input']}x{t['input']} input, {t['train_images']} shapes images, {t['classes']} classes.",
        "",
        "| detector | params (10 cls) | GMACs @512 | fp32 MB | eager fp32 ms | ExecuTorch int8 ms | TFLite int8 ms | best int8 vs seed eager "
        "| train loss | mAP@.5 % | article: params | article: CPU time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    seed_eager = next(r["eager_fp32_ms"] for r in result["rows"] if r["row"] == "centernet_seed")
    for r in result["rows"]:
        ms = {k: ("n/a" if r[k] is None else f"{r[k]:.1f}") for k in ("executorch_int8_ms", "tflite_int8_ms")}
        lines.append(f"| {r['row']} | {r['params_10_classes'] / 1e6:.2f} M | {r['gmacs_512']:.2f} | {r['fp32_mb']:.1f} | {r['eager_fp32_ms']:.1f} | {ms['executorch_int8_ms']} | "
                     f"{ms['tflite_int8_ms']} | {seed_eager / r['best_int8_ms']:.1f}x | {r['train_loss']:.3f} | {r['map50']:.1f} | "
                     f"{r['article']['params']} | {r['article']['cpu_time']} |")
    lines += ["", "The article's columns are its own figures, measured on its unknown CPU; they are quoted, not reproduced.",
              "DLA-34 here uses edgemnv2's nearest-upsample top-down neck, not DLASeg's deformable IDA-up (no export path for DCN).",
              "", "Goals:", ""]
    lines += [f"- {k}: {v:.2f}" if isinstance(v, float) else f"- {k}: {'met' if v else 'MISSED'}" for k, v in result["goals"].items()]
    return "\n".join(lines) + "\n"


def plot(result: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in result["rows"]:
        ax.scatter([r["eager_fp32_ms"]], [r["map50"]], marker="o", s=60, label=f"{r['row']} eager fp32")
        ax.scatter([r["best_int8_ms"]], [r["map50"]], marker="s", s=60, label=f"{r['row']} {r['best_int8_target']} int8")
        ax.plot([r["best_int8_ms"], r["eager_fp32_ms"]], [r["map50"], r["map50"]], color="grey", alpha=0.4)
    ax.set_xscale("log")
    ax.set_xlabel(f"latency at {result['latency_input']}x{result['latency_input']}, ms (median, batch 1, {result['threads']} threads, log)")
    ax.set_ylabel("mAP@.5 % on shapes (fp32 weights, same training budget)")
    ax.set_title("CenterNet backbones: latency vs accuracy", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(dest)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backbones.json").write_text(json.dumps(result, indent=2))
    (args.out / "backbones.md").write_text(markdown(result))
    plot(result, args.out / "backbones.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
