"""`convert --max-drop POINTS`: when an int8 artifact loses more accuracy than the budget, find a
recipe that keeps it, for any target, measured in the target's own runtime.

Each int8 artifact is scored on held-out images (the data's `val` split, or `--accuracy-data`;
never the calibration images) in its real runtime (CoreML on Linux: its labelled simulation) and
compared with the fp32 model on the same images. Over budget, the search tries, in order, and stops
at the first candidate that meets it:
  1. calibration: the other activation observers, then the best one on 4x the calibration images;
  2. cross-layer equalization, with and without bias correction (quantization/equalize.py), which
     matters most for per-tensor weights;
  3. mixed precision: layers kept in float (at most 10% of them; `QuantRecipe.float_modules`, which
     every target honours in its own way: unannotated for XNNPACK and LiteRT, qconfig None for
     TorchScript FX, excluded nodes for ONNX Runtime), the smallest such set found by doubling, then
     bisecting, in this order: the layers producing the class-score outputs (the logits, a heatmap: the
     task decides on their values), then the layers the per-layer sensitivity ranks worst;
  4. quantization-aware training (quantization/qat.py): the best recipe so far, its weights
     fine-tuned for a few epochs on the training split (`--train-data`, default the `train` split
     beside the calibration images; never the held-out ones) under the target's own fake
     quantization, then quantized as usual;
  5. another precision, only those the user allows (`--allow-precision int8_weights,fp16`, in that
     order; the ones the target makes): a weight-only or float artifact that meets the budget is
     written under its own name (`<stem>.<target>.<precision>.<ext>`) and the int8 file that
     missed is removed, so no deploy script picks it up.
Every candidate is a full evaluation: converted by the target, run on the held-out images. The
search spends at most MAX_EVALUATIONS; the manifest and `validate` record what it did.
"""

import dataclasses
import math
import shutil
import tempfile
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemnv2.artifacts import RuntimeUnavailable, manifest_path
from edgemnv2.errors import UserError, did_you_mean
from edgemnv2.evaluate import torch_runner
from edgemnv2.precision import get_precision
from edgemnv2.tasks import evaluate_runner, get_task
from edgemnv2.timing import time_interleaved, time_runner
from edgemnv2.validation.gates import load_gates
from quantization.ptq import OBSERVER_NAMES, QuantRecipe, pt2e_quantize
from quantization.qat import QatRecipe
from quantization.sensitivity import layer_sensitivity

from . import pt2e_quantizers, target_names
from .job import TRAINED_RANGES, ConversionJob
from .manifest import target_fields
from .preparation import calibration_images, equalized
from .writer import SIDECARS, ArtifactResult, ArtifactWriter, remove_artifact, sidecar_path, sidecar_temp

MAX_EVALUATIONS = 20
# the quantizer the layers-kept-in-float step ranks layers with, whatever the target (a proxy: its per-layer
# SQNR orders the layers; the target's own runtime then measures each candidate)
RANKING_QUANTIZER = "xnnpack"
STEPS = ("calibration", "equalization", "mixed-precision", "qat")  # in the order the search tries them
MAX_FLOAT_FRACTION = 0.10  # at most this share of the layers kept in float
LARGER_CALIBRATION = 4  # the calibration step also tries this many times the images
TIMED_RUNS = 10
WARMUP_RUNS = 10


@dataclass
class AccuracyBudget:
    """The most a quantized artifact may lose, in points of the task's headline metric, on held-out images:
    `points`, or (points None) the gates file's max_<metric>_drop for the artifact's task, int8 and target.

    `gates`: a loaded Gates, or a gates file's path ("default": the shipped gates); it sets the budget
    only when `points` is not given. `data`: the held-out images (a dataset root; its `split`); None:
    the calibration data's. `log`: callable(str), one line per evaluation."""

    points: float | None = None
    data: Path | None = None
    split: str = "val"
    limit: int | None = 1000  # held-out images scored per evaluation
    threads: int = 2
    steps: tuple[str, ...] = STEPS  # which recourse steps the search may take
    log: object = None
    gates: object = None
    qat: QatRecipe = QatRecipe()  # the quantization-aware training step's settings
    steps_asked: bool = False  # the user named the steps: a qat step without training images is then an error, not skipped
    train_data: Path | None = None  # its training images (a dataset root; its `train` split); None: beside the calibration images
    allowed_precisions: tuple[str, ...] = ()  # the last step's fallbacks, in the user's order (`--allow-precision`)
    _state: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.points is None and self.gates is None:
            raise UserError("an accuracy budget needs --max-drop points or a --gates file")
        if self.points is not None:
            if not isinstance(self.points, (int, float)) or math.isnan(self.points) or self.points < 0:
                raise UserError(f"--max-drop must be 0 or more points, not {self.points!r}")
            self.points, self.gates = float(self.points), None  # given points are the budget; a gates file beside them is not read
        elif isinstance(self.gates, (str, Path)):
            self.gates = load_gates(self.gates, target_names())
        self.steps = (self.steps,) if isinstance(self.steps, str) else tuple(self.steps)  # one name alone is one name, not its letters
        if self.steps != STEPS:  # steps named through the API are asked for, as --recourse's are: a missing training split is then an error
            self.steps_asked = True
        for step in self.steps:
            if step not in STEPS:
                raise did_you_mean(step, STEPS, "recourse step")
        allowed = (self.allowed_precisions,) if isinstance(self.allowed_precisions, str) else self.allowed_precisions
        self.allowed_precisions = tuple(get_precision(name).name for name in allowed)  # a typo: one line, with the names
        for name in self.allowed_precisions:
            if get_precision(name).full_int8:
                raise UserError(f"--allow-precision {name}: the search already is about {name}; name precisions it may fall back to "
                                "(int16x8, int8_weights, int8_dynamic, fp16, ...)")

    def points_for(self, task, target: str) -> float | None:
        if self.points is not None or self.gates is None:
            return self.points
        return self.gates.limits(task.name, "int8", target).get(task.budget_gate)

    def provenance(self) -> dict:
        record = {"points": self.points, "gates": getattr(self.gates, "source", None), "data": str(self.data), "split": self.split, "limit": self.limit,
                  "steps": list(self.steps)}
        if "qat" in self.steps:
            # records made before the time budget and the loss existed stay valid: their defaults are not recorded
            settings = {k: v for k, v in dataclasses.asdict(self.qat).items() if not (k == "minutes" and v is None) and not (k == "loss" and v == "task")}
            record.update(qat=settings, train_data=str(self.train_data))
        if self.allowed_precisions:  # absent otherwise: records made before the option stay valid
            record["allowed_precisions"] = list(self.allowed_precisions)
        return record

    def say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)


def budget_from_flags(max_drop: float | None = None, gates=None, accuracy_data=None, accuracy_limit: int | None = 1000, recourse_steps=(),
                      train_data=None, allowed_precisions=(), threads: int = 2, on_search=None, qat_epochs: int = QatRecipe.epochs,
                      qat_minutes: float | None = None, qat_loss: str = "task") -> AccuracyBudget | None:
    """`convert`'s budget flags (and the Python API's older keywords, which have the same names) as an
    AccuracyBudget; None when neither --max-drop nor --gates asks for one."""
    if max_drop is None and gates is None:
        if allowed_precisions:
            raise UserError("--allow-precision applies only to the --max-drop search (give --max-drop or --gates)")
        return None
    steps = tuple(recourse_steps or ())
    return AccuracyBudget(max_drop, Path(accuracy_data) if accuracy_data else None, limit=accuracy_limit, threads=threads, steps=steps or STEPS,
                          steps_asked=bool(steps), log=on_search, gates=gates, qat=QatRecipe(epochs=qat_epochs, minutes=qat_minutes, loss=qat_loss),
                          train_data=Path(train_data) if train_data else None, allowed_precisions=tuple(allowed_precisions or ()))


TRAIN_SPLIT = "train"


def for_this_run(budget: AccuracyBudget, calib_data: Path | None) -> AccuracyBudget:
    """The budget as one conversion run uses it: its own copy (the search keeps state on it, and the
    caller's object may serve another run), with the held-out and training images found and checked.
    The held-out images must exist and must not be the calibration images; with the QAT step, the
    training split must exist, hold at least a batch, and not be the held-out images."""
    held_out = budget.data if budget.data is not None else calib_data
    if held_out is None:
        raise UserError("an accuracy budget needs held-out images: --accuracy-data, or --calib-data with a val/ split")
    budget = dataclasses.replace(budget, data=Path(held_out), _state={})
    root = budget.data
    if not root.exists():
        raise UserError(f"--accuracy-data not found: {root}")
    if calib_data is not None and Path(calib_data).resolve() == root.resolve() and not (root / "calib").is_dir():
        raise UserError(f"{root} has no calib/ split, so its {budget.split} images would also be calibration images; "
                        "give --accuracy-data another folder (or a dataset with calib/ and val/ splits)")
    if "qat" in budget.steps:
        folder = Path(budget.train_data or calib_data or ".") / TRAIN_SPLIT
        missing = budget.train_data is None and calib_data is None or not folder.is_dir()
        if missing and (budget.steps_asked or budget.train_data is not None):
            raise UserError(f"the qat recourse step needs a training split: {folder} not found (--train-data names a dataset root with a train/ split)")
        if missing:  # the default steps: the search goes on without QAT, and says so once
            budget.steps = tuple(step for step in budget.steps if step != "qat")
            budget.say(f"no training split at {folder}: the search skips quantization-aware training (--train-data names one)")
            return budget
        budget.train_data = folder.parent
        if folder.resolve() == (root / budget.split).resolve():
            raise UserError(f"{folder} is also the held-out split the budget is measured on; quantization-aware training must not see it")
    return budget


def training_split(budget: AccuracyBudget, meta):
    """The QAT step's training split (None when the search has no such step), loaded lazily."""
    if budget is None or "qat" not in budget.steps:
        return None
    split = get_task(meta.task).load_split(Path(budget.train_data), TRAIN_SPLIT, meta.preprocessing, None, meta.class_names)
    if len(split) < budget.qat.batch_size and not budget.steps_asked:  # the default steps: go on without QAT, saying so
        budget.steps = tuple(step for step in budget.steps if step != "qat")
        budget.say(f"{Path(budget.train_data) / TRAIN_SPLIT} has {len(split)} images, less than a batch: the search skips quantization-aware training")
        return None
    if len(split) < budget.qat.batch_size:
        raise UserError(f"{Path(budget.train_data) / TRAIN_SPLIT} has {len(split)} images: quantization-aware training needs at least "
                        f"a batch ({budget.qat.batch_size})")
    return split


@dataclass
class Candidate:
    step: str
    description: str
    recipe: QuantRecipe
    images: np.ndarray | None = None  # another calibration set (the larger one)
    precision: str | None = None  # another precision than the artifact's (the last step, `--allow-precision`)


@dataclass
class Attempt:
    candidate: Candidate
    metric: float | None
    drop: float | None
    latency_ms: float | None
    size_bytes: int
    message: str = ""
    files: tuple | None = None  # (artifact, manifest) of the candidate, in the search's scratch folder
    fine_tuning: dict | None = None  # what quantization-aware training did (the qat step)

    def record(self) -> dict:
        return {"step": self.candidate.step, "description": self.candidate.description, "metric": self.metric, "drop": self.drop,
                "latency_ms": self.latency_ms, "size_bytes": self.size_bytes, **({"message": self.message} if self.message else {}),
                **({"qat": self.fine_tuning} if self.fine_tuning else {})}


class Search:
    """One artifact's search: the evaluations it spent and the best attempt so far."""

    def __init__(self, target, base_job: ConversionJob, jobs, budget: AccuracyBudget, points: float, calib_data: Path | None, writer: ArtifactWriter,
                 scratch: Path):
        self.target, self.base_job, self.jobs, self.budget = target, base_job, jobs, budget
        self.calib_data, self.writer = calib_data, writer
        self.attempts: list[Attempt] = []
        self.scratch = scratch
        self.heldout, self.reference = _heldout(jobs, budget)
        self.simulated = False
        self.requested = base_job.requested_recipe or base_job.recipe  # what the user asked for: the manifest's provenance
        self.points = points

    def timing_sample(self) -> np.ndarray:
        """The image every latency of this search is timed on: the held-out split's first."""
        return self.heldout.preprocessing.normalize(self.heldout.read(0)[0][None])

    @property
    def evaluations(self) -> int:
        return len(self.attempts)

    def met(self, attempt: Attempt | None) -> bool:
        return attempt is not None and attempt.drop is not None and attempt.drop <= self.points

    def best(self) -> Attempt:
        """The attempt with the smallest drop, among those of the artifact's own precision (another
        precision goes into place only when it meets the budget)."""
        scored = [a for a in self.attempts if a.drop is not None and a.candidate.precision is None]
        return min(scored, key=lambda a: a.drop) if scored else self.attempts[0]

    def evaluate_artifact(self, candidate: Candidate, path: Path, manifest: dict) -> Attempt:
        task = get_task(self.base_job.meta.task)
        latency = None  # not measured where the runtime cannot run (CoreML on Linux: simulated)
        try:  # the candidate runs in a runner process (edgemnv2.confine), as every artifact does
            runner = self.target.load(path, manifest, self.budget.threads)
            latency = time_runner(runner, self.timing_sample(), WARMUP_RUNS, TIMED_RUNS)["median_ms"]
        except RuntimeUnavailable:
            if self.target.simulate is None:
                raise
            runner, self.simulated = self.target.simulation(path, manifest, self.budget.threads), True
        with closing(runner):
            metric = 100.0 * evaluate_runner(runner, self.heldout, 16, description=f"held-out check: {candidate.description}")[task.headline_metric]
        attempt = Attempt(candidate, metric, self.reference - metric, latency, manifest.get("artifact_bytes", 0))
        self.attempts.append(attempt)
        verdict = "meets" if self.met(attempt) else "over"
        self.budget.say(f"{self.target.name} {self.base_job.precision.name}: {candidate.description}: drop {attempt.drop:.2f} points "
                        f"({verdict} the {self.points:g}-point budget; evaluation {self.evaluations})")
        return attempt

    def job_for(self, candidate: Candidate) -> ConversionJob:
        options = self.base_job.options
        if candidate.precision is not None:  # the target's options as the user set them, for that precision (not int8's subset)
            options = self.jobs.target_options.get(self.target.name, options)
        return self.jobs.make(self.target.name, candidate.precision or self.base_job.precision.name, candidate.recipe, options, self.budget,
                              images=candidate.images, requested=self.requested)

    def try_candidate(self, candidate: Candidate) -> Attempt | None:
        if self.evaluations >= MAX_EVALUATIONS:
            return None
        job = self.job_for(candidate)
        folder = self.scratch / str(self.evaluations)  # each candidate keeps its files: the chosen one is adopted as it is
        result = self.writer.into(folder, signed=False).replacing().write(self.target, job)
        if result.status != "ok":
            attempt = Attempt(candidate, None, None, None, 0, result.message)
            self.attempts.append(attempt)
            self.budget.say(f"{self.target.name} {job.precision.name}: {candidate.description}: conversion failed: {result.message}")
            return attempt
        attempt = self.evaluate_artifact(candidate, result.path, result.manifest)
        attempt.files, attempt.fine_tuning = (result.path, result.manifest), job.fine_tuning
        return attempt


def _heldout(jobs, budget: AccuracyBudget):
    """The held-out split and the fp32 model's metric on it (computed once per run)."""
    if "heldout" not in budget._state:
        meta = jobs.meta
        task = get_task(meta.task)
        split = task.load_split(Path(budget.data), budget.split, meta.preprocessing, budget.limit, meta.class_names)
        if len(split) == 0:
            raise UserError(f"the '{budget.split}' split of {budget.data} has no images to check the accuracy budget on")
        reference = 100.0 * evaluate_runner(torch_runner(jobs.folded), split, 16, description="held-out check: fp32")[task.headline_metric]
        budget._state["heldout"] = (split, reference)
    return budget._state["heldout"]


def _calibration_candidates(search: Search, base: QuantRecipe) -> list[Candidate]:
    others = [o for o in OBSERVER_NAMES if o != base.observer]
    return [Candidate("calibration", f"calibration: {o} observer, {base.calibration_size} images", dataclasses.replace(base, observer=o)) for o in others]


def _larger_calibration(search: Search, recipe: QuantRecipe) -> Candidate | None:
    if search.calib_data is None:
        return None
    size = recipe.calibration_size * LARGER_CALIBRATION
    images = search.budget._state.get(("calibration", size))
    if images is None:
        images = calibration_images(search.calib_data, search.jobs.meta.preprocessing, size)
        search.budget._state[("calibration", size)] = images
    if len(images) <= recipe.calibration_size:
        return None  # the folder has no more images
    size = len(images)
    return Candidate("calibration", f"calibration: {recipe.observer} observer, {size} images", dataclasses.replace(recipe, calibration_size=size), images)


def _ranked_layers(search: Search, recipe: QuantRecipe, images: np.ndarray | None) -> list[str]:
    """Conv/linear module paths in the order the search keeps them in float: the class-score outputs' layers,
    then the worst isolated SQNR first (quantization/sensitivity.py). Target-independent (the XNNPACK PT2E graph), so
    measured once per recipe and shared by the targets."""
    recipe = dataclasses.replace(recipe, float_modules=())  # measured on the all-int8 graph of the bare network
    key = ("ranking", recipe, id(images))
    if key not in search.budget._state:
        search.budget._state[key] = _measure_ranking(search, recipe, images)
    return search.budget._state[key]


def _measure_ranking(search: Search, recipe: QuantRecipe, images: np.ndarray | None) -> list[str]:
    import torch

    images = search.jobs.images if images is None else images
    calibration = images[: recipe.calibration_size]
    model = equalized(search.jobs.folded, recipe, images, search.jobs.equalized)
    example = torch.from_numpy(calibration[:1].copy())
    float_graph = torch.export.export(model.eval(), (example,)).module()
    quantized = pt2e_quantize(model, example, pt2e_quantizers()[RANKING_QUANTIZER].build(recipe, False), calibration)
    check = search.heldout
    probe = np.concatenate([check.preprocessing.normalize(check.read(i)[0][None]) for i in range(min(16, len(check)))])
    return in_search_order(layer_sensitivity(float_graph, quantized, probe), get_task(search.base_job.meta.task))


def in_search_order(layers: list, task) -> list[str]:
    """Module paths in the order the mixed-precision step keeps them in float: the layers of the class-score
    outputs first (the task's labelled outputs: logits, a heatmap), since the task decides on their values
    directly and their int8 rounding costs more than any SQNR shows (quantization/sensitivity.py); then the
    rest as `layers` has them (worst isolated SQNR first, other output layers' rounding counted in it)."""
    scores = {task.output_names.index(name) for name in task.labelled_outputs if name in task.output_names}
    first = sorted((layer for layer in layers if layer.output_index in scores), key=lambda layer: layer.output_index)
    return list(dict.fromkeys(layer.module for layer in first + layers))


def _mixed_precision(search: Search, recipe: QuantRecipe, images: np.ndarray | None) -> Attempt | None:
    ranked = _ranked_layers(search, recipe, images)
    limit = max(1, math.floor(MAX_FLOAT_FRACTION * len(ranked)))

    def attempt_with(count: int) -> Attempt | None:
        layers = tuple(ranked[:count])
        candidate = Candidate("mixed precision", f"mixed precision: {count} of {len(ranked)} layers in float",
                              recipe.keeping_in_float(*layers), images)
        return search.try_candidate(candidate)

    low, count, found = 0, 1, None  # doubling: the first count that meets the budget
    while count <= limit:
        attempt = attempt_with(count)
        if attempt is None:
            return found
        if search.met(attempt):
            found = attempt
            break
        low = count
        count = limit if count < limit < count * 2 else count * 2
    if found is None:
        return None
    high = count  # bisect between the last count that missed and the first that met
    while high - low > 1:
        middle = (low + high) // 2
        attempt = attempt_with(middle)
        if attempt is None:
            break
        if search.met(attempt):
            found, high = attempt, middle
        else:
            low = middle
    return found


def _quantization_aware(search: Search) -> Attempt | None:
    """The best recipe so far, its weights fine-tuned under the target's fake quantization."""
    if search.target.fake_quantization is None:
        search.budget.say(f"{search.target.name}: no quantization-aware training for this target")
        return None
    if search.jobs.training is None:
        return None
    best = search.best().candidate
    settings = search.budget.qat
    attempt = None
    # the ranges training learned, where the target's graph is the trained one; else (or if they miss) the fine-tuned weights calibrated
    for ranges in ("trained", "calibrated"):
        if attempt is not None and (attempt.fine_tuning or {}).get("ranges", "").startswith("calibrated"):
            break  # the target could not take the trained ranges: that attempt was the calibrated one already
        distilled = " (distilled from fp32)" if settings.loss == "distill" else ""
        candidate = Candidate("qat", f"quantization-aware training{distilled}, {settings.epochs} epochs at lr {settings.lr:g}, {ranges} ranges ({best.description})",
                              dataclasses.replace(best.recipe, qat=dataclasses.replace(settings, ranges=ranges)), best.images)
        attempt = search.try_candidate(candidate)
        if attempt is not None and ranges == "trained" and not (attempt.fine_tuning or {}).get("ranges", "").startswith("trained"):
            # the target could not take the trained ranges (it says why: app-ready input, in-graph decode, its own quantizer): it
            # calibrated the fine-tuned weights
            why = (attempt.fine_tuning or {}).get("trained_ranges_not_used") or "the target's graph is not the trained network"
            attempt.candidate.description = attempt.candidate.description.replace("trained ranges", f"calibrated ranges ({why})")
        if attempt is None or search.met(attempt):
            return attempt
    return None


def _other_precision(search: Search) -> Attempt | None:
    """The precisions the user allows, in their order, each measured like any candidate."""
    for name in search.budget.allowed_precisions:
        if name not in search.target.spec.precisions:
            search.budget.say(f"{search.target.name}: no {name} artifact from this target (it makes {', '.join(search.target.spec.precisions)})")
            continue
        if search.evaluations >= MAX_EVALUATIONS:
            search.budget.say(f"{search.target.name}: {name} not tried: the search spent its {MAX_EVALUATIONS} evaluations")
            return None
        precision = get_precision(name)
        attempt = search.try_candidate(Candidate("precision", f"{name} instead of {search.base_job.precision.name} ({precision.summary})",
                                                 search.requested, precision=name))
        if attempt is None or search.met(attempt):
            return attempt
    return None


def recover(target, job: ConversionJob, result: ArtifactResult, jobs, budget: AccuracyBudget, calib_data: Path | None,
            writer: ArtifactWriter) -> ArtifactResult:
    """Measure the artifact just written; over budget, search and replace it with the first recipe
    that meets the budget (or, when none does, the best one found, saying so). An artifact whose
    runtime is missing here, or a search that crashes, keeps the artifact as converted and says so
    (as a failed result: the budget was asked for and not checked)."""
    points = budget.points_for(get_task(job.meta.task), target.name)
    if points is None:
        return result  # the gates file sets no drop limit for this target: nothing to hold it to
    scratch = Path(tempfile.mkdtemp(prefix="edgemnv2-recourse-"))  # the candidates' files; gone whatever happens
    try:
        return _recover(target, job, result, jobs, budget, points, calib_data, writer, scratch)
    except UserError:
        raise
    except RuntimeUnavailable as exc:
        reason = f"--max-drop not checked: {exc}"
    except Exception as exc:  # one target's search must not abort the others
        reason = f"--max-drop search failed: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dataclasses.replace(result, status="failed", message=f"{reason} ({result.path.name} is kept as converted, unchecked)")


def _recover(target, job: ConversionJob, result: ArtifactResult, jobs, budget: AccuracyBudget, points: float, calib_data: Path | None,
             writer: ArtifactWriter, scratch: Path) -> ArtifactResult:
    started = time.perf_counter()
    search = Search(target, job, jobs, budget, points, calib_data, writer, scratch)
    baseline = Candidate("as asked", "the requested recipe", job.recipe)
    base = search.evaluate_artifact(baseline, result.path, result.manifest)
    chosen = base if search.met(base) else None
    steps = budget.steps
    if chosen is None and "calibration" in steps:
        for candidate in _calibration_candidates(search, job.recipe):
            attempt = search.try_candidate(candidate)
            if search.met(attempt):
                chosen = attempt
                break
    if chosen is None and "calibration" in steps:
        best = search.best().candidate
        larger = _larger_calibration(search, best.recipe)
        attempt = search.try_candidate(larger) if larger else None
        if search.met(attempt):
            chosen = attempt
    if chosen is None and "equalization" in steps:
        best = search.best().candidate
        for equalization in ("cle+bc", "cle"):
            described = "cross-layer equalization + bias correction" if equalization == "cle+bc" else "cross-layer equalization"
            attempt = search.try_candidate(Candidate("equalization", f"{described} ({best.description})",
                                                     dataclasses.replace(best.recipe, equalization=equalization), best.images))
            if search.met(attempt):
                chosen = attempt
                break
    if chosen is None and "mixed-precision" in steps:
        best = search.best().candidate
        chosen = _mixed_precision(search, best.recipe, best.images)
    if chosen is None and "qat" in steps:
        chosen = _quantization_aware(search)
    if chosen is None and budget.allowed_precisions:
        chosen = _other_precision(search)
    def placed(final: Attempt, met: bool) -> tuple[dict, ConversionJob, tuple]:
        """The search's record, the job whose manifest carries it, and the measured files that go into place."""
        record = _record(search, base, final, met, time.perf_counter() - started)
        job_out = search.job_for(final.candidate)
        job_out.recourse = record
        job_out.calibration_sha256 = job.calibration_sha256  # provenance is what was asked; the recourse record says what was used
        return record, job_out, (result.path, result.manifest) if final is base else final.files

    met = chosen is not None
    final = chosen or search.best()
    record, job_out, files = placed(final, met)
    if final is not base and final.files and not search.simulated:
        record["latency_ratio"] = _latency_ratio(search, (result.path, result.manifest), final.files)
    hint = target.gate_failure_hint(result.manifest) if not met and target.gate_failure_hint is not None else None
    if hint:  # why this target cannot get there, in its own words
        record["summary"] += f"; {hint}"
    if final.candidate.precision is not None:  # another precision met the budget: it replaces the int8 file that missed
        replaced, refusal = _replace_precision(target, job_out, files, result, record, writer)
        if replaced is not None:
            return replaced
        # it could not go into place: the best int8 attempt does, with the search's record, and the run fails saying why
        met = False
        record, job_out, files = placed(search.best(), met)
        record["summary"] += f"; {refusal}"
    # the measured bytes themselves go into place, under the manifest that records the search
    rewritten = writer.replacing().write(_adopting(target, *files), job_out)
    rewritten.seconds = result.seconds + record["seconds"]  # the conversion and its search
    if rewritten.status == "ok" and not met:  # the best artifact found is in place; the run fails, saying by how much
        rewritten.status, rewritten.message = "failed", record["summary"]
    return rewritten


def _replace_precision(target, job: ConversionJob, files: tuple, missed: ArtifactResult, record: dict,
                       writer: ArtifactWriter) -> tuple[ArtifactResult | None, str]:
    """The allowed precision's measured artifact under its own name; then the int8 file that missed
    the budget is removed. An artifact of that precision already there is reused when it was made
    by the same command (a re-run), replaced with --force, and otherwise refused as convert refuses
    it. -> (the result, "") or (None, why it could not go into place)."""
    import json

    try:
        written = writer.write(_adopting(target, *files), job)
    except UserError as exc:  # another artifact of that precision is there, made from other inputs
        return None, f"{job.precision.name} met it, but {exc}"
    if written.status not in ("ok", "skipped"):  # skipped: this command made it before (a re-run), and it is up to date
        return None, f"{job.precision.name} met it, but writing it failed: {written.message}"
    remove_artifact(missed.path)
    if written.status == "skipped":
        written.manifest = json.loads(manifest_path(written.path).read_text())
        written.size_bytes = written.manifest.get("artifact_bytes", 0)
    kept = f"{written.path.name} is up to date; " if written.status == "skipped" else ""
    return dataclasses.replace(written, status="ok", seconds=missed.seconds + record["seconds"],
                               message=f"{missed.precision} missed the budget; {record['summary']} ({kept}{missed.path.name} removed)"), ""


def _latency_ratio(search: Search, base_files: tuple, final_files: tuple) -> float | None:
    """The chosen artifact's latency over the all-int8 one's, timed round-robin in one stretch. Each
    attempt's own latency was taken minutes apart: on a shared machine that gave ratios from 0.02 to
    1.44 for recipes that keep the very same graph (round-robin on a quiet machine: 0.98-0.99)."""

    with ExitStack() as stack:
        try:
            runners = {name: stack.enter_context(closing(search.target.load(path, manifest, search.budget.threads)))
                       for name, (path, manifest) in (("base", base_files), ("final", final_files))}
        except RuntimeUnavailable:
            return None
        # 3 warm-ups once gave a TorchScript x86 ratio of 2.14 that the same two files, timed again, put at
        # 1.09; more warm-up costs milliseconds and keeps first-run effects (TorchScript's profiling
        # executor specialises its graph over the first calls) out of the ratio
        timed = time_interleaved(runners, search.timing_sample(), warmup=WARMUP_RUNS, runs=2 * TIMED_RUNS)
    return timed["final"]["median_ms"] / timed["base"]["median_ms"]


def _adopting(target, artifact: Path, manifest: dict):
    """`target`, whose convert copies an artifact already made (and measured) instead of converting
    again: its bytes, its sidecars and its target-specific manifest fields."""
    def copy(job, dest: Path) -> dict:
        shutil.copyfile(artifact, dest) if artifact.is_file() else shutil.copytree(artifact, dest)
        # the measured file was quantized with QAT's trained ranges or calibrated: its manifest says so again
        trained = (manifest.get("quantization") or {}).get("qat") or {}
        job.trained_ranges_used = trained.get("ranges") == TRAINED_RANGES
        job.ranges_not_trained = trained.get("trained_ranges_not_used")
        # and the calibration that ran, when its target's quantizer calibrates its own way (NNCF, ai-edge-quantizer)
        observer = ((manifest.get("quantization") or {}).get("calibration") or {}).get("observer")
        if observer and observer != job.recipe.observer:
            job.observer_used = observer
        sidecars = {}
        for suffix in manifest.get("sidecars") or {}:
            temp = sidecar_temp(dest, suffix)
            shutil.copyfile(sidecar_path(artifact, manifest, suffix), temp)
            sidecars[suffix] = temp
        return {**target_fields(manifest), SIDECARS: sidecars}

    return dataclasses.replace(target, convert=copy)


def _record(search: Search, base: Attempt, final: Attempt, met: bool, seconds: float) -> dict:
    task = get_task(search.base_job.meta.task)
    recipe = final.candidate.recipe
    float_layers = [m for m in recipe.float_modules if m not in search.base_job.recipe.float_modules]
    latency_ratio = final.latency_ms / base.latency_ms if final.latency_ms and base.latency_ms else None
    if final is base and met:
        summary = f"met without recourse: drop {base.drop:.2f} <= {search.points:g} points"
    elif met:
        summary = f"{final.candidate.description}: drop {base.drop:.2f} -> {final.drop:.2f} <= {search.points:g} points"
    else:
        tried = "quantization-aware training included" if any(a.candidate.step == "qat" for a in search.attempts) else \
            f"at most {MAX_FLOAT_FRACTION:.0%} of the layers in float"
        summary = (f"budget not met: best drop {final.drop:.2f} > {search.points:g} points ({final.candidate.description}) after "
                   f"{search.evaluations} evaluations; the search ran out of steps ({tried})")
    return {
        "max_drop": search.points, "metric": task.headline_metric, "met": met, "summary": summary,
        "heldout": {"data": str(search.budget.data), "split": search.budget.split, "images": len(search.heldout)},
        "reference_metric": search.reference,
        "before": {"metric": base.metric, "drop": base.drop, "latency_ms": base.latency_ms, "size_bytes": base.size_bytes},
        "after": {"metric": final.metric, "drop": final.drop, "latency_ms": final.latency_ms, "size_bytes": final.size_bytes},
        "chosen": {"step": final.candidate.step, "description": final.candidate.description, "recipe": recipe.to_dict(),
                   **({"precision": final.candidate.precision, "instead_of": search.base_job.precision.name} if final.candidate.precision else {})},
        "float_layers": float_layers,
        **({"qat": final.fine_tuning} if final.fine_tuning else {}),
        "latency_ratio": latency_ratio,
        "size_ratio": final.size_bytes / base.size_bytes if base.size_bytes else None,
        "measured_on": search.target.spec.simulation_note.replace(" — ", " (", 1) + ")" if search.simulated else "runtime",
        "evaluations": search.evaluations, "max_evaluations": MAX_EVALUATIONS, "seconds": round(seconds, 1),
        "attempts": [a.record() for a in search.attempts],
    }
