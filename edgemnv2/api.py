"""The Python API: `from edgemnv2 import convert, validate, predict`.

The CLI commands are thin wrappers over the same services; these functions take the same
choices as keyword arguments and return result objects instead of printing. Errors are the
CLI's: `edgemnv2.errors.UserError` (bad input) and `CheckFailed` (a check failed).

    import edgemnv2
    result = edgemnv2.convert(model, "artifacts/", meta=meta, targets=["tflite", "executorch"],
                              precisions=["int8"], calib_data="data/classification",
                              budget=edgemnv2.AccuracyBudget(gates="default"))
    outcome = edgemnv2.validate(result.checkpoint, "artifacts/", "data/classification", gates="default")
    assert outcome.passed, outcome.report["gates"]["reasons"]
    for p in edgemnv2.predict("artifacts/model.tflite.int8.tflite", "photos/"):
        print(p.path, p.top5[0])
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from torch import nn

from conversion.pipeline import ConversionRequest, run_conversion
from conversion.recourse import AccuracyBudget
from conversion.writer import ArtifactResult
from quantization.recipe import QatRecipe, QuantRecipe

from .api_compat import older_spelling
from .checkpoint import CheckpointMeta, save_checkpoint
from .data.images import is_image_file, list_images
from .errors import UserError
from .evaluate import torch_runner
from .prediction.sources import Source, open_source, predict_image
from .services import ValidationOutcome, validate_artifacts
from .tasks import get_task


@dataclass
class ConversionResult:
    checkpoint: Path  # what the artifacts were converted from (and what `validate` compares them with)
    artifacts: list[ArtifactResult]
    unsupported: list[tuple[str, str, str]]  # (target, precision, why)
    fold_max_relative_error: float
    calibration_images: int

    @property
    def ok(self) -> bool:
        return all(a.status != "failed" for a in self.artifacts)

    @property
    def paths(self) -> list[Path]:
        return [a.path for a in self.artifacts if a.path is not None and a.status != "failed"]


@dataclass
class Prediction:
    path: Path
    task: str
    top5: list[tuple[str, float]] = field(default_factory=list)  # classifiers: (class, probability)
    detections: list[tuple] = field(default_factory=list)  # detectors: (box x1y1x2y2 in image pixels, score, class name)


def convert(model: nn.Module | str | Path, out: str | Path, *, meta: CheckpointMeta | None = None, targets: Sequence[str] = ("all",),
            precisions: Sequence[str] = ("all",), calib_data: str | Path | None = None, recipe: QuantRecipe | None = None,
            budget: AccuracyBudget | None = None, target_options: dict[str, dict] | None = None, input_size: tuple[int, int] | None = None,
            force: bool = False, sign_key: str | Path | None = None, name: str = "model", arch: str | None = None,
            on_start=None, on_result=None, **older_keywords) -> ConversionResult:
    """Fold, quantize and export a checkpoint file, or a model in memory, to every requested target.

    A model in memory (an `nn.Module` built by `edgemnv2.models.create_model`, trained however you
    like) needs its `meta` (architecture, task, class names, preprocessing); it is saved as
    `<out>/<name>.pt` first, so every artifact's manifest names the exact weights it came from and
    `validate` can compare against them. `arch`: only for a bare state-dict file.

    recipe: how to quantize (`edgemnv2.QuantRecipe(observer=, per_channel=, calibration_size=,
    equalization=)`; default the well-behaved one). target_options: {target: {option: value}}, e.g.
    {"tflite": {"input": "nchw"}} (`edgemnv2 convert --help` lists them). input_size: (height, width)
    to export at instead of the checkpoint's, for fully convolutional models (recorded in each
    manifest; `validate` checks such an artifact at its own size).

    budget: an `edgemnv2.AccuracyBudget` for int8, e.g. AccuracyBudget(points=0.5) or
    AccuracyBudget(gates="default"): each int8 artifact is measured on held-out images (its `data`,
    default `calib_data`'s val split) and, over the budget, re-made by the recourse search
    (conversion/recourse.py; docs/recourse.md), whose lines go to the budget's `log`.

    on_start(target, precision, index, total) and on_result(ArtifactResult) report progress. The
    flat keywords of earlier versions (calib_size=, observer=, max_drop=, server_engine=, ...) still
    work, with a DeprecationWarning naming their new place."""
    if older_keywords:
        recipe, budget, target_options = older_spelling(older_keywords, recipe, budget, target_options)
    out = Path(out)
    if isinstance(model, nn.Module):
        if meta is None:
            raise UserError("convert(model_in_memory) needs meta=CheckpointMeta(arch, task, class_names, preprocessing, model_kwargs)")
        checkpoint = save_checkpoint(out / f"{name}.pt", model, meta, force=force)
    else:
        checkpoint = Path(model)
    request = ConversionRequest(checkpoint, out, targets, precisions, calib_data, recipe or QuantRecipe(), target_options or {},
                                budget, input_size, force, sign_key, arch)
    results, plan, info = run_conversion(request, on_start=on_start, on_result=on_result)
    return ConversionResult(checkpoint, results, plan.skipped, info["fold_max_relative_error"], info["calibration_images"])


def validate(checkpoint: str | Path, artifacts: str | Path, data: str | Path, *, gates: str | Path | None = None, split: str = "val",
             limit: int | None = None, threads: int = 2, runs: int = 20, out: str | Path | None = None, force: bool = False,
             verify_key: str | Path | None = None, batch_size: int = 16, workers: int | None = None, arch: str | None = None,
             profile: bool = False, require_confinement: bool = False) -> ValidationOutcome | None:
    """Every artifact in `artifacts` through its real runtime against the checkpoint's fp32 outputs on
    `data`'s split; writes report.json/.md/.png into `out` (default: the artifacts folder).
    -> ValidationOutcome: .report (docs/report.md), .paths, .passed (all gates met and checked);
    None on torchrun ranks other than 0 (rank 0 holds the merged report). profile: add each artifact's per-op profile."""
    return validate_artifacts(Path(checkpoint), Path(artifacts), Path(data), gates=gates, split=split, limit=limit, threads=threads, runs=runs,
                              report_dir=Path(out) if out else None, force=force, verify_key=Path(verify_key) if verify_key else None,
                              batch_size=batch_size, workers=workers, arch=arch, profile=profile, require_confinement=require_confinement)


def predict(model: nn.Module | str | Path, images: str | Path | Sequence[str | Path], *, meta: CheckpointMeta | None = None,
            threshold: float = 0.3, threads: int = 2, verify_key: str | Path | None = None, trust_artifact: bool = False) -> list[Prediction]:
    """Top-5 (classifiers) or detections above `threshold` (detectors) for each image: a file, a
    folder (recursively), or a list of files. `model`: a checkpoint, an artifact, or a module + meta.
    An artifact runs in a runner process (edgemnv2.confine); one without its manifest is refused
    where runners cannot be confined unless `trust_artifact`."""
    source = _source(model, meta, threads, verify_key, trust_artifact)
    if isinstance(images, (str, Path)):
        images = list_images(Path(images)) if Path(images).is_dir() else [Path(images)]
    files = [Path(p) for p in images]
    if not files:
        raise UserError("no images to predict on")
    predictions = []
    for path in files:
        if not is_image_file(path):
            raise UserError(f"{path} is not an image file (expected one of .png, .jpg, ...)")
        _, found = predict_image(source, path, threshold)
        predictions.append(Prediction(path, source.task, **get_task(source.task).prediction_fields(found, source.class_names)))
    return predictions


def _source(model, meta: CheckpointMeta | None, threads: int, verify_key, trust_artifact: bool = False) -> Source:
    if isinstance(model, nn.Module):
        if meta is None:
            raise UserError("predict(model_in_memory) needs meta=CheckpointMeta(...)")

        return Source("model in memory", meta.task, meta.class_names, meta.preprocessing, torch_runner(model))
    return open_source(Path(model), threads, verify_key=Path(verify_key) if verify_key else None, trust_artifact=trust_artifact)


__all__ = ["AccuracyBudget", "ConversionResult", "Prediction", "QatRecipe", "QuantRecipe", "ValidationOutcome", "convert", "predict", "validate"]
