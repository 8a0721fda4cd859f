"""Which detections two models share: greedy one-to-one matching by label and IoU (the detector's box
agreement in validate and its comparison pictures count with it)."""

import numpy as np


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def match_detections(reference, other, iou_threshold: float = 0.5):
    """Greedy one-to-one matching of two detection lists [(box xyxy, score, label)] by IoU and label.

    -> (matched pairs as index tuples, unmatched reference indices, unmatched other indices).
    """
    pairs, used = [], set()
    order = sorted(range(len(reference)), key=lambda i: -reference[i][1])
    other_boxes = np.array([d[0] for d in other], np.float64).reshape(-1, 4)
    for i in order:
        box, _, label = reference[i]
        if not len(other):
            break
        ious = _iou(np.asarray(box, np.float64), other_boxes)
        best = None
        for j in np.argsort(-ious):
            if ious[j] < iou_threshold:
                break
            if j not in used and other[j][2] == label:
                best = int(j)
                break
        if best is not None:
            used.add(best)
            pairs.append((i, best))
    matched_ref = {i for i, _ in pairs}
    return pairs, [i for i in range(len(reference)) if i not in matched_ref], [j for j in range(len(other)) if j not in used]


def detection_agreement(reference_per_image, other_per_image, iou_threshold: float = 0.5) -> float:
    """% of confident detections the two models share (same label, IoU >= threshold), as
    2*matched / (n_reference + n_other) over all images: 100 means the same objects were found."""
    matched = total = 0
    for reference, other in zip(reference_per_image, other_per_image):
        pairs, _, _ = match_detections(reference, other, iou_threshold)
        matched += len(pairs)
        total += len(reference) + len(other)
    return 100.0 if total == 0 else 200.0 * matched / total
