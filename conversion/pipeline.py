"""checkpoint -> fold BN (verified on real images) -> per target x precision: quantize + convert."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgemnv2.artifacts import manifest_path
from edgemnv2.checkpoint import CheckpointMeta, load_checkpoint
from edgemnv2.errors import UserError
from edgemnv2.fileio import sha256_of
from edgemnv2.models import get_spec
from edgemnv2.precision import get_precision
from edgemnv2.signing import tool as signing_tool
from edgemnv2.tasks import get_task
from quantization.ptq import QuantRecipe
from quantization.qat import fine_tuned

from . import TARGETS, get_target
from .fine_tune import recipe_of
from .job import ConversionJob
from .manifest import stale_reason
from .preparation import calibration_images, calibration_sha256, equalized, prepare_model
from .recourse import AccuracyBudget, for_this_run, recover, training_split
from .target import DECODE
from .writer import ArtifactResult, ArtifactWriter

ALL = "all"


@dataclass
class ConversionPlan:
    pairs: list[tuple[str, str]]  # (target, precision)
    skipped: list[tuple[str, str, str]]  # (target, precision, reason)


def plan(targets: list[str], precisions: list[str]) -> ConversionPlan:
    """Expand 'all' and refuse combinations no requested target supports."""
    names = list(TARGETS) if ALL in targets else [get_target(t).spec.name for t in targets]
    for precision in precisions:
        if precision != ALL:
            get_precision(precision)  # a typo gets the valid names, not "not supported by ..."
    pairs, skipped = [], []
    for name in names:
        supported = TARGETS[name].spec.precisions
        # `all`: every precision but those made only on request; naming one beside it adds it
        wanted = [p for p in supported if p not in TARGETS[name].spec.on_request or p in precisions] if ALL in precisions else precisions
        for precision in wanted:
            if precision in supported:
                pairs.append((name, precision))
            else:
                skipped.append((name, precision, f"not supported (supported: {', '.join(supported)})"))
    if not pairs:
        detail = "; ".join(f"{t}: {', '.join(TARGETS[t].spec.precisions)}" for t in names)
        raise UserError(f"nothing to convert: precision {', '.join(precisions)} is not supported by {', '.join(names)} ({detail})")
    return ConversionPlan(pairs, skipped)


def _with_postprocessing(model: torch.nn.Module, meta: CheckpointMeta, recipe: QuantRecipe, options: dict, wrapped_models: dict) -> tuple:
    """(model, recipe, postprocessed): with the task's in-graph post-processing when the target's
    decode option asks for it; its modules stay float in every quantizer. One wrapper per model and
    run (`wrapped_models`), so the jobs that share a model share its wrapped form too (TFLite's fp32
    file, made once for every precision made from it)."""
    task = get_task(meta.task)
    if task.graph_postprocess is None or options.get(DECODE) != "graph":
        return model, recipe, False
    if id(model) not in wrapped_models:  # the entry keeps the model alive: its id stays its own
        wrapped_models[id(model)] = (model, task.graph_postprocess(model, meta).eval())
    wrapped = wrapped_models[id(model)][1]
    return wrapped, recipe.keeping_in_float(*getattr(wrapped, "FLOAT_MODULES", ())), True


def refuse_stale(jobs: list[tuple[str, ConversionJob]], writer: ArtifactWriter) -> None:
    """Before converting anything: an artifact already in the writer's folder that was built from
    other inputs (checkpoint, recipe, calibration set, tools) is never silently kept or replaced."""
    stale = []
    for target, job in jobs:
        final = writer.path(TARGETS[target].spec, job.precision)
        if manifest_path(final).exists():
            reason = stale_reason(manifest_path(final), job.provenance(writer.checkpoint_sha256))
            if reason:
                stale.append(f"{final.name} ({reason})")
    if stale:
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        raise UserError(f"{writer.out_dir} already holds {stale[0]}{more}; pass --force to replace them, or convert into another --out")


def at_input_size(meta: CheckpointMeta, size: tuple[int, int] | None) -> tuple[CheckpointMeta, tuple[int, int] | None]:
    """The checkpoint's description with another network input size (`convert --input-size`), and
    that size when it differs from the checkpoint's (None when it does not). Fully convolutional
    models (the detector; the classifier, whose global pooling takes any size) take any multiple of
    their total stride; an architecture with a fixed pooling window takes only its own size."""

    current = tuple(meta.preprocessing.input_size)
    if isinstance(size, int):  # the API's input_size=320
        size = (size, size)
    if size is not None and (len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size)):
        raise UserError(f"input size must be (height, width) in pixels, not {size!r}")
    if size is None or tuple(size) == current:
        return meta, None
    height, width = size
    spec = get_spec(meta.arch)
    if spec.fixed_input:
        raise UserError(f"--input-size {height}x{width}: {meta.arch} takes only {current[0]}x{current[1]} (a fixed pooling window)")
    multiple = spec.input_multiple
    if height % multiple or width % multiple or min(height, width) < multiple:
        nearest = "x".join(str(max(multiple, round(side / multiple) * multiple)) for side in (height, width))
        raise UserError(f"--input-size {height}x{width}: {meta.arch} takes sides that are multiples of {multiple} (its total stride); "
                        f"the nearest is {nearest}")
    preprocessing = dataclasses.replace(meta.preprocessing, input_size=(height, width))
    return dataclasses.replace(meta, preprocessing=preprocessing), (height, width)


@dataclass(frozen=True)
class ConversionRequest:
    """What one conversion run is asked to make: which checkpoint, into which folder, for which
    targets and precisions, from which calibration images and recipe.

    target_options: {target name: {option: value}} (e.g. {"torchscript": {"engine": "onednn"}}).
    input_size: (height, width) to export at instead of the checkpoint's (at_input_size).
    budget: an AccuracyBudget (conversion/recourse.py): each int8 artifact is measured on held-out
    images and, when it loses more than the budget, re-made by the recourse search.
    arch: only for a bare state-dict checkpoint."""

    checkpoint: Path
    out_dir: Path
    targets: tuple[str, ...] = (ALL,)
    precisions: tuple[str, ...] = (ALL,)
    calib_data: Path | None = None
    recipe: QuantRecipe = QuantRecipe()
    target_options: dict[str, dict] = dataclasses.field(default_factory=dict)
    budget: AccuracyBudget | None = None
    input_size: tuple[int, int] | None = None
    force: bool = False
    sign_key: Path | None = None
    arch: str | None = None

    def __post_init__(self):
        # paths and sequences as the caller had them: str or Path, list or tuple
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        for name in ("targets", "precisions"):  # one name alone is one name, not its letters
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        for name in ("calib_data", "sign_key"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, "target_options", dict(self.target_options or {}))


def run_conversion(request: ConversionRequest, on_start=None, on_result=None) -> tuple[list[ArtifactResult], ConversionPlan, dict]:
    """Make every artifact `request` asks for. on_start(target, precision, index, total) before each
    conversion; on_result(ArtifactResult) after. -> (results, the plan, {fold error, calibration images})."""
    work = plan(list(request.targets), list(request.precisions))
    for name in request.target_options:
        get_target(name)  # a typo in a target's name is not silently ignored
    options = {name: TARGETS[name].option_values(request.target_options.get(name)) for name, _ in work.pairs}
    model, meta = load_checkpoint(request.checkpoint, request.arch)
    meta, resized = at_input_size(meta, request.input_size)
    recipe, calib_data = request.recipe, request.calib_data
    if meta.qat:  # fine-tuned by `train --qat` for one weight scheme: int8 uses it (conversion/fine_tune.py)
        recipe = recipe_of(meta.qat, recipe)
    needs_calibration = [p for _, p in work.pairs if get_precision(p).needs_calibration]
    if needs_calibration and calib_data is None:
        raise UserError(f"{needs_calibration[0]} conversion needs --calib-data: a folder of real images (random tensors give broken int8 models)")
    if request.sign_key is not None:
        if not request.sign_key.is_file():
            raise UserError(f"signing key not found: {request.sign_key}")
        signing_tool()  # no model-signing tool: one line before any conversion, not a failure per artifact
    budget = for_this_run(request.budget, calib_data) if request.budget is not None else None
    images = calibration_images(calib_data, meta.preprocessing, recipe.calibration_size) if calib_data else None
    check = images if images is not None else np.zeros((1, 3, *meta.preprocessing.input_size), np.float32)
    folded, fold_error = prepare_model(model, meta, check)
    writer = ArtifactWriter(request.out_dir, request.checkpoint.stem, sha256_of(request.checkpoint), request.force, request.sign_key)
    jobs = JobFactory(folded, meta, images, training_split(budget, meta), resized, options)
    planned = [(target, jobs.make(target, precision, recipe, options[target], budget)) for target, precision in work.pairs]
    if not request.force:
        refuse_stale(planned, writer)
    results = []
    for index, (target, job) in enumerate(planned, start=1):
        if on_start:
            on_start(target, job.precision.name, index, len(planned))
        result = writer.write(TARGETS[target], job)
        if budget is not None and result.status == "ok" and job.precision.full_int8:
            result = recover(TARGETS[target], job, result, jobs, budget, calib_data, writer)
        results.append(result)
        if on_result:
            on_result(result)
    return results, work, {"fold_max_relative_error": fold_error, "calibration_images": 0 if images is None else len(images)}


class JobFactory:
    """Conversion jobs of one run: the folded model, with the recipe's equalization and the
    target's in-graph post-processing; quantized graphs and equalized models built once and shared."""

    def __init__(self, folded: torch.nn.Module, meta: CheckpointMeta, images: np.ndarray | None, training=None, resized=None,
                 target_options: dict[str, dict] | None = None):
        """training: the split quantization-aware training fine-tunes on (a recipe with `qat` needs it);
        resized: the input size convert --input-size asked for, when it is not the checkpoint's;
        target_options: {target: its option values as set}, before options_for keeps a precision's
        (the recourse search's other-precision candidates need them whole)."""
        self.folded, self.meta, self.images, self.training, self.resized = folded, meta, images, training, resized
        self.target_options = target_options or {}
        self.shared_graphs: dict = {}
        self.equalized: dict = {}
        self.hashes: dict = {}
        self.fine_tunes: dict = {}
        self.wrapped_models: dict = {}  # id(model) -> (model, with its in-graph post-processing)

    def make(self, target: str, precision: str, recipe: QuantRecipe, options: dict, budget=None, images: np.ndarray | None = None,
             requested: QuantRecipe | None = None) -> ConversionJob:
        """`images`: another calibration set than the run's (the recourse search's larger one);
        `requested`: the recipe the user asked for, when the search chose `recipe` instead."""
        images = self.images if images is None else images
        chosen = get_precision(precision)
        options = TARGETS[target].options_for(options, precision)
        # equalization reads activation ranges on the calibration images: only for the precisions that calibrate
        model = equalized(self.folded, recipe, images, self.equalized) if chosen.needs_calibration else self.folded
        qat = None
        if chosen.quantized and recipe.qat is not None:
            qat = self.fine_tuned(target, model, recipe, options, images)
            model = qat.model
        model, job_recipe, postprocessed = _with_postprocessing(model, self.meta, recipe, options, self.wrapped_models)
        calibration = images[: recipe.calibration_size] if images is not None else None
        key = (id(images), recipe.calibration_size)
        if calibration is not None and key not in self.hashes:
            self.hashes[key] = calibration_sha256(calibration)
        return ConversionJob(model, self.meta, chosen, job_recipe, images, self.shared_graphs, options, self.hashes.get(key),
                             TARGETS[target].tools_for(precision), postprocessed, budget=budget, requested_recipe=requested, qat=qat,
                             resized=self.resized)

    def fine_tuned(self, target: str, model: torch.nn.Module, recipe: QuantRecipe, options: dict, images: np.ndarray | None):
        """The model fine-tuned under the target's fake quantization (quantization/qat.py QatResult):
        once per scheme, target options that change it, and recipe; shared by the targets that quantize alike."""

        scheme = TARGETS[target].fake_quantization
        if scheme is None:
            raise UserError(f"{target} offers no quantization-aware training")
        if self.training is None:
            raise UserError("quantization-aware training needs a training split (--train-data)")
        key = (scheme.name, scheme.options_used(options), dataclasses.replace(recipe, qat=dataclasses.replace(recipe.qat, ranges="trained")), id(images))
        if key not in self.fine_tunes:
            task = get_task(self.meta.task)
            height, width = self.meta.preprocessing.input_size
            example = torch.from_numpy(images[:1].copy()) if images is not None else torch.zeros(1, 3, height, width)
            self.fine_tunes[key] = fine_tuned(model, example, recipe, options, scheme,
                                              lambda module, settings, after_epoch: task.fine_tune(module, self.training, self.meta, settings, after_epoch, teacher=model),
                                              images)
        return self.fine_tunes[key]
