"""CenterNet detection: hm/wh/reg maps out; COCO mAP; agreement = same confident boxes as the reference."""

from pathlib import Path

import numpy as np

from ..data.datasets import load_coco, resolve_detection_split
from ..errors import UserError
from .base import COMMON_GATES, GateKind, Task, require_dir

WORST_IMAGES = 4  # images kept per artifact for the report's comparison pictures


def _load_split(root: Path, split: str, preprocessing, limit=None, class_names=None):
    """ROOT/annotations/instances_<split>.json + ROOT/<split>/ images (COCO)."""
    require_dir(root, "dataset folder")
    annotations, images = resolve_detection_split(root, split)
    data = load_coco(annotations, images, preprocessing, limit)
    if class_names is not None and list(class_names) != data.class_names:
        raise UserError(f"{annotations} has categories {data.class_names}, but the model was trained on {list(class_names)}")
    return data


def _metrics(outputs, data, input_size) -> dict:
    from ..evaluate import coco_map, detections_to_coco

    return coco_map(detections_to_coco(outputs, data, input_size), data)


def _reference_extras(outputs, input_size) -> dict:
    from ..evaluate import confident_detections

    return {"detections": confident_detections(outputs, input_size)}


def _agreement(reference: dict, outputs, data, input_size) -> tuple[float, list[str]]:
    from ..evaluate import confident_detections
    from ..validation.drift import detection_agreement, match_detections

    mine = confident_detections(outputs, input_size)
    disagreements = []
    for index, (ref, other) in enumerate(zip(reference["detections"], mine)):
        _, missed, extra = match_detections(ref, other)
        disagreements.append((len(missed) + len(extra), index))
    worst = [str(data.paths[i]) for count, i in sorted(disagreements, key=lambda t: (-t[0], t[1]))[:WORST_IMAGES]
             if count > 0 and i < len(data.paths)]
    return detection_agreement(reference["detections"], mine), worst


def _predict(outputs, class_names, input_size, image_size, threshold) -> list[tuple]:
    """[(box x1y1x2y2 in original-image pixels, score, class index)] above threshold."""
    from ..evaluate import confident_detections

    height, width = input_size
    scale = np.array([image_size[0] / width, image_size[1] / height] * 2, np.float32)
    return [(box * scale, score, label) for box, score, label in confident_detections(outputs, input_size, threshold)[0]]


def _train(model, train, val, meta, config, out):
    from ..train import train_detector

    return train_detector(model, train, val, meta, config, out)


DETECTION = Task(
    name="detection",
    output_names=("hm", "wh", "reg"),
    metric_names=("map", "map50"),
    headline_metric="map50",
    headline_label="mAP@.5 %",
    agreement_measure="box_agreement",
    agreement_label="box agree %",
    gate_kinds={
        "max_map50_drop": GateKind("map50_drop", "max", "points"),
        "max_map_drop": GateKind("map_drop", "max", "points"),
        "min_box_agreement": GateKind("box_agreement", "min", "%"),
        **COMMON_GATES,
    },
    head_keys=("hm.weight", "heads.hm.2.weight"),
    default_num_classes=80,
    default_train_input_size=128,
    input_multiple=32,
    argmax_output=None,
    load_split=_load_split,
    metrics=_metrics,
    reference_extras=_reference_extras,
    agreement=_agreement,
    bundle_labels=lambda data: None,
    predict=_predict,
    train=_train,
)
