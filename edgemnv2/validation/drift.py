"""How far an artifact's outputs are from the fp32 reference on the same images.

SQNR (signal-to-quantization-noise ratio, dB) is the standard quantization-error figure:
10*log10(sum(ref^2) / sum((ref - out)^2)); 20 dB is ~10% relative error, 40 dB ~1%.
"""

import numpy as np

PERFECT_SQNR_DB = 200.0  # reported when the outputs are bit-identical (infinite SQNR)


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((reference - np.asarray(output, np.float64)) ** 2))
    return sqnr_from_sums(float(np.sum(reference**2)), noise)


def sqnr_from_sums(signal: float, noise: float) -> float:
    """A non-finite noise (NaN or infinity in the outputs) is the worst figure, never min(200, nan) = 200."""
    if not np.isfinite(noise):
        return -PERFECT_SQNR_DB
    if noise == 0.0:
        return PERFECT_SQNR_DB
    if signal == 0.0:
        return -PERFECT_SQNR_DB
    return min(PERFECT_SQNR_DB, 10.0 * np.log10(signal / noise))


def _abs_error(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """|ref - out|, infinite where the output is not finite (np.max would drop or propagate a NaN)."""
    error = np.abs(np.asarray(reference, np.float64) - np.asarray(output, np.float64))
    return np.where(np.isfinite(error), error, np.inf)


def max_abs_error(reference: np.ndarray, output: np.ndarray) -> float:
    return float(np.max(_abs_error(reference, output)))


def top1_agreement(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """% of images where the artifact's top-1 class equals the reference's (never for non-finite logits)."""
    finite = np.isfinite(np.asarray(logits)).all(axis=1)
    return float(np.mean((reference_logits.argmax(1) == logits.argmax(1)) & finite) * 100.0)


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


def drift_records(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    """Per image and output: sum(ref^2), sum((ref - out)^2), max |ref - out|, and how many output
    values are not finite (reduced by reduce_drift; a non-finite value makes the noise infinite)."""
    records = {}
    for k, (ref, out) in enumerate(zip(reference, outputs)):
        ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
        out = np.asarray(out, np.float64).reshape(len(ref), -1)
        error = _abs_error(ref, out)
        records[f"signal_{k}"] = np.sum(ref**2, axis=1)
        records[f"noise_{k}"] = np.sum(error**2, axis=1)
        records[f"max_abs_{k}"] = np.max(error, axis=1)
        records[f"nonfinite_{k}"] = np.sum(~np.isfinite(out), axis=1)
    return records


def reduce_drift(records: dict, names: list[str]) -> dict:
    """SQNR and max abs error per output from per-image records, plus the worst (lowest) SQNR as the headline figure."""
    per_output = {
        name: {"sqnr_db": sqnr_from_sums(float(np.sum(records[f"signal_{k}"])), float(np.sum(records[f"noise_{k}"]))),
               "max_abs_error": float(np.max(records[f"max_abs_{k}"])),
               "nonfinite_values": int(np.sum(records.get(f"nonfinite_{k}", 0)))}
        for k, name in enumerate(names)
    }
    return {
        "sqnr_db": min(v["sqnr_db"] for v in per_output.values()),
        "max_abs_error": max(v["max_abs_error"] for v in per_output.values()),
        "nonfinite_values": sum(v["nonfinite_values"] for v in per_output.values()),
        "per_output": per_output,
    }
