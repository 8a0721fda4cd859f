"""CenterNet detection: hm/wh/reg maps out; COCO mAP; agreement = same confident boxes as the reference."""

from pathlib import Path

import numpy as np

from ...data.datasets import load_coco, resolve_detection_split
from ...errors import UserError
from ...evaluate import finite_images
from ..base import COMMON_GATES, GateKind, Task, require_dir
from . import predictions
from .decode import DECODED_OUTPUTS, DecodedDetector, detections, is_decoded, shape_problem
from .draw import side_by_side
from .matching import match_detections
from .metrics import coco_detections, coco_map, confident_detections
from .training import detection_loss, train_detector

WORST_IMAGES = 4  # images kept per artifact for the report's comparison pictures


def _load_split(root: Path, split: str, preprocessing, limit=None, class_names=None):
    """ROOT/annotations/instances_<split>.json + ROOT/<split>/ images (COCO)."""
    require_dir(root, "dataset folder")
    annotations, images = resolve_detection_split(root, split)
    data = load_coco(annotations, images, preprocessing, limit)
    if class_names is not None and list(class_names) != data.class_names:
        raise UserError(f"{annotations} has categories {data.class_names}, but the model was trained on {list(class_names)}")
    return data


def _score(outputs, batch, split) -> dict:
    """The top 100 detections of each image (COCO's limit), kept for mAP: ~2.4 KB per image."""
    return {"detections": coco_detections(outputs, batch.sizes, split.preprocessing.input_size)}


def _reduce_metrics(positions, records, split) -> dict:
    return coco_map(records["detections"], split, positions)


def _compare(reference, outputs, batch, split) -> dict:
    input_size = split.preprocessing.input_size
    matched, total, disagreements = [], [], []
    for ref, other, finite in zip(confident_detections(reference, input_size), confident_detections(outputs, input_size), finite_images(outputs)):
        pairs, missed, extra = match_detections(ref, other)
        if not finite:  # non-finite maps disagree even where the reference found nothing
            pairs, missed = [], [None] * max(len(ref), 1)
        matched.append(len(pairs))
        total.append(max(len(ref), 1) + len(other) if not finite else len(ref) + len(other))
        disagreements.append(len(missed) + len(extra))
    return {"matched": np.array(matched, np.int64), "total": np.array(total, np.int64), "disagreements": np.array(disagreements, np.int64)}


def _reduce_agreement(positions, records, split) -> tuple[float, list[str]]:
    """% of confident detections both share: 2*matched / (n_reference + n_other) over all images;
    and the images where they disagree most (for the report's comparison pictures)."""
    total = int(np.sum(records["total"]))
    agreement = 100.0 if total == 0 else 200.0 * int(np.sum(records["matched"])) / total
    counts = records["disagreements"]
    worst = sorted(((-int(c), int(p)) for c, p in zip(counts, positions) if c > 0))[:WORST_IMAGES]
    return agreement, [str(split.paths[p]) for _, p in worst]


def _predict(outputs, class_names, input_size, image_size, threshold) -> list[tuple]:
    """[(box x1y1x2y2 in original-image pixels, score, class index)] above threshold."""
    height, width = input_size
    scale = np.array([image_size[0] / width, image_size[1] / height] * 2, np.float32)
    return [(box * scale, score, label) for box, score, label in confident_detections(outputs, input_size, threshold)[0]]


def _graph_postprocess(model, meta):
    return DecodedDetector(model, tuple(meta.preprocessing.input_size))


def _postprocessed_references(references, input_size):
    """The host's decode of the fp32 maps, and which output the device runner compares: the sorted
    scores, as validate does (boxes and classes follow near-tie ranking)."""
    boxes, scores, classes = detections(references, input_size=input_size)
    return [boxes.numpy(), scores.numpy(), classes.numpy().astype(np.float32)], [DECODED_OUTPUTS.index("scores")]


def _drift_view(reference, outputs, input_size):
    """A decoded artifact is compared on its sorted top-K scores with the reference's, decoded on
    the host: boxes and classes follow the ranking, which near-equal scores may swap without any
    real difference (box agreement and mAP judge the boxes)."""
    if not is_decoded(outputs):
        return reference, outputs, None
    top_k = np.shape(outputs[1])[1]
    scores = DECODED_OUTPUTS.index("scores")
    return [detections(reference, top_k, input_size)[1].numpy()], [np.asarray(outputs[scores])], ["scores (top-K)"]


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
    default_num_classes=80,
    default_train_input_size=128,
    input_multiple=32,
    argmax_output=None,
    load_split=_load_split,
    score=_score,
    reduce_metrics=_reduce_metrics,
    compare=_compare,
    reduce_agreement=_reduce_agreement,
    bundle_labels=lambda data: None,
    predict=_predict,
    prediction_fields=predictions.prediction_fields,
    write_predictions=predictions.write_predictions,
    trainer=train_detector,
    qat_loss=detection_loss,
    graph_postprocess=_graph_postprocess,
    postprocessed_output_names=("boxes", "scores", "classes"),
    labelled_outputs=("classes", "hm"),
    drift_view=_drift_view,
    postprocessed_references=_postprocessed_references,
    host_postprocess=confident_detections,
    output_problem=shape_problem,
    side_by_side=side_by_side,
)
