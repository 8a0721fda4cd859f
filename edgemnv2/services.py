"""Library services: what the commands do, without the command line.

The CLI parses options, calls one of these and prints; benchmarks, the demo and users' scripts
call them directly. This module sits above `conversion` (it needs the targets' loaders); the
layers below the artifacts layer (models, data, tasks, checkpoint, artifacts, ...) never import
`conversion` (tests/test_architecture.py checks the import graph).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from conversion import pt2e_quantizers, target_names
from conversion.pipeline import ConversionRequest, run_conversion
from conversion.preparation import calibration_images, prepare_model
from conversion.recourse import AccuracyBudget
from quantization.ptq import QuantRecipe, pt2e_quantize
from quantization.sensitivity import layer_sensitivity as measure

from .bundle import make_bundles
from .checkpoint import CheckpointMeta, load_checkpoint
from .data.preprocess import Preprocessing
from .data.shapes import ShapesConfig, generate
from .distributed import world
from .errors import CheckFailed, UserError, did_you_mean
from .evaluate import torch_runner
from .fileio import refuse_overwrite
from .models import get_spec
from .prediction.compare import worst_disagreements
from .signing import tool as signing_tool
from .tasks import evaluate_runner, get_task
from .train import TrainConfig, seeded_model
from .validation.gates import Gates, load_gates
from .validation.report import write_reports
from .validation.validate import ValidationSettings, validate


def _verify_key_usable(verify_key: Path | None) -> None:
    if verify_key is not None:
        if not Path(verify_key).is_file():
            raise UserError(f"verification key not found: {verify_key}")
        signing_tool()  # no verifier installed is a setup mistake for the whole run, not per artifact


@dataclass
class ValidationOutcome:
    report: dict
    paths: dict[str, Path]
    gates: Gates | None  # None: validated without a gates file (only finite outputs and "was it checked" decide)

    @property
    def passed(self) -> bool:
        return self.report["gates"]["passed"]


def validate_artifacts(checkpoint: Path, artifacts: Path, data: Path, *, gates: str | Path | None = None, split: str = "val",
                       limit: int | None = None, threads: int = 2, runs: int = 20, report_dir: Path | None = None,
                       arch: str | None = None, verify_key: Path | None = None, force: bool = False, batch_size: int = 16,
                       workers: int | None = None, profile: bool = False, require_confinement: bool = False) -> ValidationOutcome | None:
    """Every artifact in `artifacts` through its real runtime against the checkpoint's fp32 eager
    outputs; writes report.json/.md/.png (and, for detectors, comparison pictures).

    Under torchrun every rank scores its share of the images and rank 0 writes the one report;
    the other ranks return None."""
    if runs < 1:
        raise UserError("--runs must be at least 1")
    if batch_size < 1 or (workers is not None and workers < 1):
        raise UserError("--batch-size and --workers must be at least 1")
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    report_dir = Path(report_dir or artifacts)
    refuse_overwrite(report_dir / "report.json", force)
    # Without a gates file no limit is applied, but the verdict keeps its one rule: every artifact in
    # the folder was checked and ran to finite outputs, else it is not passed (and the CLI exits 1).
    loaded_gates = load_gates(gates, target_names()) if gates is not None else None
    _verify_key_usable(verify_key)
    settings = ValidationSettings(threads=threads, runs=runs, batch_size=batch_size, workers=workers, profile=profile,
                                  require_confinement=require_confinement)
    report = validate(Path(checkpoint), Path(artifacts), Path(data), split, settings, loaded_gates, arch, limit, verify_key, world())
    if report is None:  # not rank 0
        return None
    try:
        comparisons = worst_disagreements(report, checkpoint, artifacts, report_dir, threads, verify_key=verify_key)
    except (CheckFailed, UserError) as exc:  # the folder changed while it was being validated: not a pass
        comparisons = []
        report["gates"]["reasons"].append(f"comparison pictures: {exc}")
        report["gates"]["passed"] = False  # none when no row names worst images
    return ValidationOutcome(report, write_reports(report, report_dir, comparisons), loaded_gates)


def bundle_artifacts(checkpoint: Path, artifacts: Path, data: Path, out_dir: Path, *, samples: int = 200, split: str = "val",
                     gates: str | Path | None = None, arch: str | None = None, force: bool = False, verify_key: Path | None = None,
                     sign_key: Path | None = None) -> list[Path]:
    """One self-contained device bundle per artifact converted from `checkpoint`; with sign_key, each signed whole."""
    if samples < 1:
        raise UserError("--samples must be at least 1")
    _verify_key_usable(verify_key)
    if sign_key is not None:
        if not Path(sign_key).is_file():
            raise UserError(f"signing key not found: {sign_key}")
        signing_tool()  # before the references are computed, not after
    model, meta = load_checkpoint(checkpoint, arch)
    dataset = get_task(meta.task).load_split(Path(data), split, meta.preprocessing, samples, meta.class_names)
    return make_bundles(Path(checkpoint), model, meta, Path(artifacts), dataset, Path(out_dir), load_gates(gates, target_names()), force, verify_key,
                        sign_key)


def layer_sensitivity(checkpoint: Path, data: Path, *, quantizer: str = "xnnpack", observer: str = "histogram", per_tensor: bool = False,
                      calib_size: int = 128, images: int = 16, arch: str | None = None) -> list:
    """Per-layer int8 SQNR against fp32 (quantization/sensitivity.py), worst first."""
    import torch

    quantizers = pt2e_quantizers()  # what the targets quantize with (Target.pt2e_quantizer)
    if quantizer not in quantizers:
        raise did_you_mean(quantizer, list(quantizers), "quantizer")
    if images < 1:
        raise UserError("--images must be at least 1")
    model, meta = load_checkpoint(checkpoint, arch)
    recipe = QuantRecipe(observer=observer, per_channel=not per_tensor, calibration_size=calib_size)
    calib = calibration_images(data, meta.preprocessing, calib_size)
    folded, _ = prepare_model(model, meta, calib)
    example = torch.from_numpy(calib[:1].copy())
    quantized = pt2e_quantize(folded, example, quantizers[quantizer].build(recipe, False), calib)
    float_graph = torch.export.export(folded.eval(), (example,)).module()
    # evaluation images: the validation split when there is one, never the calibration images
    eval_root = Path(data) / "val" if (Path(data) / "val").is_dir() else Path(data)
    return measure(float_graph, quantized, calibration_images(eval_root, meta.preprocessing, images))


# Demo budgets on a 2-core CPU: the classifier ~5 min, the detector ~10 min.
DEMO_MODELS = {
    "classifier": {"arch": "mobilenet_v2", "width_mult": 0.5, "input": 64, "epochs": 7, "batch": 32, "lr": 4e-3, "data": "classification"},
    "detector": {"arch": "centernet", "width_mult": 0.5, "input": 128, "epochs": 20, "batch": 16, "lr": 3e-3, "data": "detection"},
}


@dataclass
class DemoLog:
    stage: Callable[[str], None] = lambda title: None
    line: Callable[[str], None] = lambda text: None
    validation: Callable[[ValidationOutcome], None] = lambda outcome: None
    summary: dict = field(default_factory=dict)


def run_demo(out: Path, *, scale: float = 1.0, epoch_scale: float = 1.0, threads: int = 2, log: DemoLog | None = None) -> dict:
    """Data -> train classifier and detector -> evaluate -> convert to every target -> validate ->
    bundles, on the built-in shapes data. Re-running reuses finished stages (data, checkpoints, artifacts)."""
    log = log or DemoLog()
    out = Path(out)
    data_root = out / "data"
    log.stage("1. data: synthetic shapes")
    if not (data_root / ".complete").exists():
        base = ShapesConfig()
        generate(data_root, ShapesConfig(
            classification_counts=tuple(max(20, int(c * scale)) for c in base.classification_counts),
            detection_counts=tuple(max(8, int(c * scale)) for c in base.detection_counts),
        ))
        (data_root / ".complete").write_text('{"scale": %r}' % scale)
    log.line(f"data in {data_root}")
    summary = log.summary
    for name, recipe in DEMO_MODELS.items():
        root = data_root / recipe["data"]
        task = get_task(get_spec(recipe["arch"]).task)
        log.stage(f"2. train {name}")
        checkpoint = out / f"{name}.pt"
        if not checkpoint.exists():
            preprocessing = Preprocessing((recipe["input"], recipe["input"]))
            train_data = task.load_split(root, "train", preprocessing)
            val_data = task.load_split(root, "val", preprocessing, class_names=train_data.class_names)
            kwargs = {"width_mult": recipe["width_mult"]}
            meta = CheckpointMeta(recipe["arch"], task.name, train_data.class_names, preprocessing, kwargs)
            config = TrainConfig(epochs=max(1, round(recipe["epochs"] * epoch_scale)), batch_size=recipe["batch"], lr=recipe["lr"])
            model = seeded_model(recipe["arch"], config.seed, num_classes=meta.num_classes, **kwargs)
            result = task.train(model, train_data, val_data, meta, config, checkpoint)
            log.line(f"trained in {result.seconds:.0f} s")
        log.stage(f"3. evaluate {name}")
        model, meta = load_checkpoint(checkpoint)
        val_data = task.load_split(root, "val", meta.preprocessing, class_names=meta.class_names)
        metrics = evaluate_runner(torch_runner(model), val_data)
        summary[name] = {"checkpoint": str(checkpoint), **metrics}
        log.line(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        log.stage(f"4. convert {name} to every target (int8 budget: the default gates)")
        artifacts = out / "artifacts" / name
        # the default gates are the int8 accuracy budget (as `convert --gates default`): an artifact that would fail its
        # gate is re-made by the recourse search (conversion/recourse.py) before validate judges it
        budget = AccuracyBudget(gates="default", threads=threads, log=lambda line: log.line(f"    {line}"))
        results, _, _ = run_conversion(ConversionRequest(checkpoint, artifacts, calib_data=root, budget=budget),
                                       on_start=lambda target, precision, i, n: log.line(f"  [{i}/{n}] converting {target} {precision} ..."))
        summary[name]["artifacts"] = [
            {"target": r.target, "precision": r.precision, "status": r.status, "bytes": r.size_bytes, "seconds": round(r.seconds, 1), "message": r.message}
            for r in results
        ]
        for r in results:
            log.line(f"  {r.status:>7} {r.target:<19} {r.precision:<13} {r.size_bytes / 1e6:6.2f} MB {r.seconds:6.1f} s {r.message}")
        log.stage(f"5. validate {name}: every artifact in its runtime against fp32, default gates")
        outcome = validate_artifacts(checkpoint, artifacts, root, gates="default", report_dir=out / "reports" / name, force=True, threads=threads)
        log.validation(outcome)
        summary[name]["gates_passed"] = outcome.passed
        summary[name]["report"] = str(outcome.paths["md"])
        log.stage(f"6. device bundles for {name}")
        written = bundle_artifacts(checkpoint, artifacts, root, out / "bundles" / name, samples=200, force=True)
        log.line(f"{len(written)} bundles in {out / 'bundles' / name}")
    return summary
