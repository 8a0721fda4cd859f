"""Image classification: logits out; top-1/top-5; agreement = same top-1 as the reference."""

from pathlib import Path

import numpy as np

from ...data.datasets import load_image_folder
from ...errors import UserError
from ...evaluate import finite_images
from ..base import COMMON_GATES, GateKind, Task, require_dir
from . import predictions
from .metrics import top_k_hits
from .training import classification_loss, train_classifier


def _load_split(root: Path, split: str, preprocessing, limit=None, class_names=None):
    """ROOT/<split>/<class>/*.png (an ImageFolder tree)."""
    root = require_dir(root, "dataset folder")
    split_dir = root / split
    if not split_dir.is_dir():
        raise UserError(f"no '{split}' split in {root} (expected {split_dir} as an ImageFolder tree)")
    return load_image_folder(split_dir, preprocessing, limit, class_names)


def _score(outputs, batch, split) -> dict:
    labels = split.labels[batch.indices]
    return {"top1": top_k_hits(outputs[0], labels, 1), "top5": top_k_hits(outputs[0], labels, 5)}


def _reduce_metrics(positions, records, split) -> dict:
    return {"top1": float(np.mean(records["top1"])), "top5": float(np.mean(records["top5"]))}


def _compare(reference, outputs, batch, split) -> dict:
    return {"same_top1": (reference[0].argmax(1) == outputs[0].argmax(1)) & finite_images(outputs)}


def _reduce_agreement(positions, records, split) -> tuple[float, list[str]]:
    return float(np.mean(records["same_top1"]) * 100.0), []


def _predict(outputs, class_names, input_size, image_size, threshold) -> list[tuple[str, float]]:
    """Top-5 (class, probability)."""
    logits = outputs[0][0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return [(class_names[i], float(probs[i])) for i in np.argsort(-probs)[:5]]


CLASSIFICATION = Task(
    name="classification",
    output_names=("logits",),
    metric_names=("top1", "top5"),
    headline_metric="top1",
    headline_label="top-1 %",
    agreement_measure="top1_agreement",
    agreement_label="agree %",
    gate_kinds={
        "max_top1_drop": GateKind("top1_drop", "max", "points"),
        "max_top5_drop": GateKind("top5_drop", "max", "points"),
        "min_top1_agreement": GateKind("top1_agreement", "min", "%"),
        **COMMON_GATES,
    },
    default_num_classes=1000,
    default_train_input_size=64,
    input_multiple=1,
    argmax_output=0,
    labelled_outputs=("logits",),
    load_split=_load_split,
    score=_score,
    reduce_metrics=_reduce_metrics,
    compare=_compare,
    reduce_agreement=_reduce_agreement,
    bundle_labels=lambda data: data.labels,
    predict=_predict,
    prediction_fields=predictions.prediction_fields,
    write_predictions=predictions.write_predictions,
    trainer=train_classifier,
    qat_loss=classification_loss,
)
