"""What a task is to the rest of the product: one object per task, so adding a task (or changing
one) is one file here, not branches in validation, reports, gates, bundles, predict and checkpoints.
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.stream import batches
from ..errors import UserError
from ..tally import Tally
from ..train import fine_tune


@dataclass(frozen=True)
class GateKind:
    measure: str  # key in a report row's "measured" dict
    bound: str  # "max" or "min"
    unit: str


# Gates every task has: raw-output drift, speed and size.
COMMON_GATES = {
    "min_sqnr_db": GateKind("sqnr_db", "min", "dB"),
    "max_abs_error": GateKind("max_abs_error", "max", ""),
    "max_latency_ms": GateKind("latency_median_ms", "max", "ms"),
    "max_size_mb": GateKind("size_mb", "max", "MB"),
}


@dataclass(frozen=True)
class Task:
    name: str
    output_names: tuple[str, ...]  # what every artifact returns, in order
    metric_names: tuple[str, ...]  # task metrics, in percent in reports
    headline_metric: str  # the report's accuracy column and plot axis
    headline_label: str
    agreement_measure: str  # the report row's agreement key
    agreement_label: str
    gate_kinds: dict[str, GateKind]
    default_num_classes: int  # for `info` on a model without a checkpoint
    default_train_input_size: int  # `train` without --input-size (small: CPU training)
    input_multiple: int  # input sides must be multiples of this (the detector's stride-32 features)
    # the output holding one score per class, whose argmax is the predicted label (the classifier's logits):
    # the device runner compares its argmax, CoreML wraps it in its classify op, TFLite's metadata labels
    # it. None: the task has no such output
    argmax_output: int | None
    # behaviour
    load_split: Callable[..., Any]  # (root, split, preprocessing, limit, class_names) -> a lazy split (data/datasets.py)
    # Scoring streams (evaluate.py, validation): per batch, a few numbers per image; reduced at the end (tally.py).
    score: Callable[[list[np.ndarray], Any, Any], dict]  # (outputs, batch, split) -> per-image metric records
    reduce_metrics: Callable[[np.ndarray, dict, Any], dict]  # (positions, records, split) -> fractions in [0, 1]
    compare: Callable[[list[np.ndarray], list[np.ndarray], Any, Any], dict]  # (reference outputs, outputs, batch, split) -> per-image agreement records
    reduce_agreement: Callable[[np.ndarray, dict, Any], tuple[float, list[str]]]  # -> (%, worst image paths)
    bundle_labels: Callable[[Any], np.ndarray | None]
    predict: Callable[..., list]  # (outputs of one image, class_names, input_size, image size, threshold) -> predictions
    # predict: (what one image gave, class names) -> edgemnv2.Prediction's fields; and the command's output
    # (predict(path) -> (image, found), model name, class names, files, out folder, threshold, force, console)
    # -> (--json payload fields, closing line or None)
    prediction_fields: Callable[[list, list[str]], dict]
    write_predictions: Callable[..., tuple[dict, str | None]]
    # its training loop: (model, train, val, meta, config, out, placement, *, evaluate) -> TrainResult (Task.train)
    trainer: Callable[..., Any]
    # its loss on one batch, for quantization-aware fine-tuning: (module, split, batch, meta, rng) -> tensor (Task.fine_tune)
    qat_loss: Callable[..., Any]
    # Post-processing an artifact may carry in its graph (the detector's decode): (model, meta) ->
    # the model with it, whose outputs are `postprocessed_output_names`. None: the task has none.
    graph_postprocess: Callable[..., Any] | None = None
    postprocessed_output_names: tuple[str, ...] = ()
    # The outputs whose values index the class labels, in order of preference (an app file's metadata
    # attaches the labels file to the first one it has): a classifier's logits; a detector's decoded
    # classes, else its heatmap's channels
    labelled_outputs: tuple[str, ...] = ()
    # Which outputs drift (SQNR) is measured on: (reference outputs, outputs) -> (reference, outputs,
    # names), e.g. a decoded detector against the host-decoded reference. None: all, as they are.
    drift_view: Callable[..., Any] | None = None
    # An artifact with that post-processing in its graph is checked by the device runner against the
    # host's post-processing of the fp32 outputs: (fp32 outputs, input size) -> (expected outputs,
    # indices of those the runner compares). None: the task has none.
    postprocessed_references: Callable[..., tuple] | None = None
    # The host's share of that post-processing: (outputs, input size) -> anything (timed by validate
    # for artifacts that return the raw outputs, so graph and host decode compare end to end).
    host_postprocess: Callable[..., Any] | None = None
    # (outputs) -> why they cannot be this task's (None: they can): checked before an artifact's
    # outputs are scored or drawn (a file may return anything).
    output_problem: Callable[[list], str | None] = lambda outputs: None
    # Two models' outputs for one image drawn side by side (detectors' boxes), for `predict --compare`
    # and validate's worst images: (image, left, right, class names, left name, right name) ->
    # (picture, disagreements). None: this task's outputs are compared by validate's figures alone.
    side_by_side: Callable[..., tuple] | None = None

    @property
    def budget_gate(self) -> str:
        """The gate bounding the headline metric's drop (max_top1_drop, max_map50_drop): a gates file's
        limit for it is `convert --gates`' accuracy budget."""
        return next(name for name, kind in self.gate_kinds.items() if kind.bound == "max" and kind.measure == f"{self.headline_metric}_drop")

    def evaluate(self, runner, split, batch_size: int = 32, indices=None, description: str = "evaluating") -> dict[str, float]:
        """This task's metrics (fractions) of one runner over a split (or the positions `indices` of it).
        Scoring streams: batches are decoded in the background (data/stream.py), each batch becomes a
        few numbers per image (`score`), and the metrics are reduced at the end (tally.py)."""
        tally = Tally()
        for batch in batches(split, batch_size, indices, description=description):
            tally.add(batch.indices, self.score(runner(split.preprocessing.normalize(batch.images)), batch, split))
        return self.reduce_metrics(*tally.ordered(), split)

    def train(self, model, train, val, meta, config, out, placement=None):
        """Train `model` and save its best checkpoint to `out`, judged by this task's metrics -> TrainResult."""
        return self.trainer(model, train, val, meta, config, out, placement=placement, evaluate=self.evaluate)

    def fine_tune(self, module, data, meta, settings, after_epoch=None, teacher=None) -> dict:
        """Quantization-aware fine-tuning of a prepared module with this task's loss -> what it did.
        `teacher`: the fp32 model, whose outputs are the targets when the recipe's loss is "distill"."""
        if settings.loss == "distill":
            if teacher is None:
                raise ValueError("distillation needs the fp32 model as its teacher")
            teacher = teacher.eval()
            return fine_tune(module, data, meta, settings, functools.partial(self.qat_loss, teacher=teacher), after_epoch)
        return fine_tune(module, data, meta, settings, self.qat_loss, after_epoch)

    def percent_metrics(self, positions: np.ndarray, records: dict, split) -> dict:
        return {k: v * 100 for k, v in self.reduce_metrics(positions, records, split).items()}


def require_dir(path: Path, what: str) -> Path:
    if not Path(path).exists():
        raise UserError(f"{what} not found: {path}")
    return Path(path)


def labelled_output(task: "Task", names: list[str]) -> int:
    """The index among `names` of the output whose values index the labels (Task.labelled_outputs); 0 when none is named."""
    return next((names.index(name) for name in task.labelled_outputs if name in names), 0)
