"""The detector's figures: COCO mAP with pycocotools over the decoded maps, and the confident detections
a user would draw and count (agreement, predict)."""

import contextlib
import io

import numpy as np

from ...evaluate import finite_images
from .decode import detections


def coco_detections(outputs: list[np.ndarray], original_sizes: np.ndarray, input_size: tuple[int, int], top_k: int = 100) -> list[np.ndarray]:
    """Raw (hm, wh, reg) maps -> per image (K, 6) float32 [x, y, w, h, score, label] in original-image pixels."""
    boxes, scores, labels = detections(outputs, top_k, input_size)
    height, width = input_size
    per_image = []
    for b, s, image_labels, (orig_h, orig_w), finite in zip(boxes.numpy(), scores.numpy(), labels.numpy(), original_sizes, finite_images(outputs)):
        if not finite:  # non-finite maps find nothing (finite_images)
            per_image.append(np.zeros((0, 6), np.float32))
            continue
        xyxy = b * np.array([orig_w / width, orig_h / height] * 2, np.float32)
        xywh = np.concatenate([xyxy[:, :2], np.maximum(0.0, xyxy[:, 2:] - xyxy[:, :2])], axis=1)
        per_image.append(np.concatenate([xywh, s[:, None], image_labels[:, None].astype(np.float32)], axis=1).astype(np.float32))
    return per_image


def coco_map(detections: list[np.ndarray], split, indices: np.ndarray) -> dict[str, float]:
    """COCO mAP@[.5:.95] and mAP@.5 with pycocotools (the reference implementation), for the
    images at `indices` of a DetectionData split, `detections` in the same order."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for position, found in zip(indices.tolist(), detections):
        image_id = int(split.image_ids[position])
        images.append({"id": image_id})
        for (x, y, w, h), label in zip(split.boxes_xywh[position].tolist(), split.labels[position].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(split.category_ids[label]),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        for x, y, w, h, score, label in found.tolist():
            results.append({"image_id": image_id, "category_id": int(split.category_ids[int(label)]), "bbox": [x, y, w, h], "score": score})
    if not results:
        return {"map": 0.0, "map50": 0.0}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": cid, "name": name} for cid, name in zip(split.category_ids, split.class_names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.params.imgIds = [image["id"] for image in images]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": max(0.0, float(evaluator.stats[0])), "map50": max(0.0, float(evaluator.stats[1]))}


CONFIDENT_SCORE = 0.3  # detections at or above this score are what a user would draw and count


def confident_detections(outputs: list[np.ndarray], input_size: tuple[int, int], threshold: float = CONFIDENT_SCORE, top_k: int = 100) -> list[list[tuple]]:
    """Per image: [(box x1y1x2y2 in input pixels, score, label)] with score >= threshold."""
    boxes, scores, labels = detections(outputs, top_k, input_size)
    per_image = []
    for b, s, image_labels, finite in zip(boxes.numpy(), scores.numpy(), labels.numpy(), finite_images(outputs)):
        keep = (s >= threshold) & finite  # non-finite maps find nothing (finite_images)
        per_image.append([(box, float(score), int(label)) for box, score, label in zip(b[keep], s[keep], image_labels[keep])])
    return per_image
