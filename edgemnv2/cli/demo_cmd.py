"""`edgemnv2 demo`: the whole product on the built-in shapes data, end to end, one command."""

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from conversion.pipeline import run_conversion
from quantization.ptq import QuantRecipe

from ..checkpoint import CheckpointMeta, load_checkpoint
from ..data.preprocess import Preprocessing
from ..data.shapes import ShapesConfig, generate
from ..evaluate import evaluate_runner, torch_runner
from ..models import create_model
from ..train import TrainConfig, train_classifier, train_detector
from . import bundle_cmd, validate_cmd
from .common import console, load_split, set_threads

# Demo budgets on a 2-core CPU: the classifier ~5 min, the detector ~10 min.
CLASSIFIER = {"arch": "mobilenet_v2", "width_mult": 0.5, "input": 64, "epochs": 7, "batch": 32, "lr": 4e-3}
DETECTOR = {"arch": "centernet", "width_mult": 0.5, "input": 128, "epochs": 20, "batch": 16, "lr": 3e-3}


def _stage(title: str) -> None:
    console.rule(Text(title, style="bold"))


def demo(
    out: Annotated[Path, typer.Option(help="Folder for data, checkpoints and reports.")] = Path("demo"),
    scale: Annotated[float, typer.Option(help="Dataset size multiplier (1.0 = full demo).")] = 1.0,
    epoch_scale: Annotated[float, typer.Option(help="Training epochs multiplier (1.0 = full demo).")] = 1.0,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
) -> None:
    """Make data -> train classifier and detector -> evaluate -> convert to every target -> validate -> bundles.

    Re-running reuses finished stages (data, checkpoints, artifacts).
    """
    set_threads(threads)
    started = time.perf_counter()
    data_root = out / "data"
    _stage("1. data: synthetic shapes")
    if not (data_root / ".complete").exists():
        base = ShapesConfig()
        config = ShapesConfig(
            classification_counts=tuple(max(20, int(c * scale)) for c in base.classification_counts),
            detection_counts=tuple(max(8, int(c * scale)) for c in base.detection_counts),
        )
        generate(data_root, config)
        (data_root / ".complete").write_text(json.dumps({"scale": scale}))
    console.print(f"data in {data_root}")

    summary = {}
    for name, recipe, root in (("classifier", CLASSIFIER, data_root / "classification"), ("detector", DETECTOR, data_root / "detection")):
        _stage(f"2. train {name}")
        checkpoint = out / f"{name}.pt"
        task = "classification" if name == "classifier" else "detection"
        preprocessing = Preprocessing((recipe["input"], recipe["input"]))
        if not checkpoint.exists():
            train_data = load_split(task, root, "train", preprocessing)
            val_data = load_split(task, root, "val", preprocessing, class_names=train_data.class_names)
            kwargs = {"width_mult": recipe["width_mult"]}
            meta = CheckpointMeta(recipe["arch"], task, train_data.class_names, preprocessing, kwargs)
            model = create_model(recipe["arch"], num_classes=meta.num_classes, **kwargs)
            config = TrainConfig(epochs=max(1, round(recipe["epochs"] * epoch_scale)), batch_size=recipe["batch"], lr=recipe["lr"])
            trainer = train_classifier if task == "classification" else train_detector
            result = trainer(model, train_data, val_data, meta, config, checkpoint)
            console.print(f"trained in {result.seconds:.0f} s")
        _stage(f"3. evaluate {name}")
        model, meta = load_checkpoint(checkpoint)
        val_data = load_split(task, root, "val", meta.preprocessing, class_names=meta.class_names)
        metrics, _ = evaluate_runner(torch_runner(model), val_data, meta.preprocessing)
        summary[name] = {"checkpoint": str(checkpoint), **metrics}
        console.print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        _stage(f"4. convert {name} to every target")
        artifacts = out / "artifacts" / name
        results, _, _ = run_conversion(checkpoint, ["all"], ["all"], root, artifacts, QuantRecipe(), force=False)
        summary[name]["artifacts"] = [
            {"target": r.target, "precision": r.precision, "status": r.status, "bytes": r.size_bytes, "seconds": round(r.seconds, 1), "message": r.message}
            for r in results
        ]
        for r in results:
            console.print(f"  {r.status:>7} {r.target:<19} {r.precision:<13} {r.size_bytes / 1e6:6.2f} MB {r.seconds:6.1f} s {r.message}")
        _stage(f"5. validate {name}: every artifact in its runtime against fp32, default gates")
        reports = out / "reports" / name
        validate_cmd.validate(checkpoint, artifacts, root, gates=None, report_dir=reports, force=True, threads=threads)
        report = json.loads((reports / "report.json").read_text())
        summary[name]["gates_passed"] = report["gates"]["passed"]
        summary[name]["report"] = str(reports / "report.md")
        _stage(f"6. device bundles for {name}")
        bundle_cmd.bundle(checkpoint, artifacts, root, out / "bundles" / name, samples=200, force=True, threads=threads)
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s; summary in {out / 'demo_summary.json'}")
