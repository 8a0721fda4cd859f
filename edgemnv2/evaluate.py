"""Task metrics for any runner: a callable taking an NCHW float32 batch and returning a list of
float32 arrays. Torch models, TorchScript, ExecuTorch, TFLite, ONNX and CoreML runners all fit, so
every artifact is scored by exactly the same code as the checkpoint it came from.

Scoring streams: batches are decoded in the background (data/stream.py), each batch becomes a few
numbers per image (the task's `score`), and the metrics are reduced at the end (tally.py).
"""

import contextlib
import io
from typing import Callable, Sequence

import numpy as np
import torch

from .data.stream import batches
from .models.decode import detections
from .tally import Tally

Runner = Callable[[np.ndarray], list[np.ndarray]]


def torch_runner(model: torch.nn.Module) -> Runner:
    model.eval()
    device = next(model.parameters()).device  # a model still on the GPU it trained on

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(batch).to(device))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().cpu().numpy() for o in out]

    return run


def evaluate_runner(runner: Runner, split, batch_size: int = 32, indices: Sequence[int] | None = None,
                    description: str = "evaluating") -> dict[str, float]:
    """Task metrics (fractions) of one runner over a split (or the positions `indices` of it)."""
    from .tasks import get_task

    task = get_task(split.task)
    tally = Tally()
    for batch in batches(split, batch_size, indices, description=description):
        tally.add(batch.indices, task.score(runner(split.preprocessing.normalize(batch.images)), batch, split))
    return task.reduce_metrics(*tally.ordered(), split)


def finite_images(outputs: list[np.ndarray]) -> np.ndarray:
    """(N,) bool: every value of every output of the image is finite. An image that is not counts as
    wrong in every measure (a miss for top-k and mAP, a disagreement, the worst SQNR): argmax takes
    NaN as the largest value and argsort puts it last, so left to themselves the measures disagree."""
    finite = np.ones(len(outputs[0]), bool)
    for output in outputs:
        values = np.asarray(output)
        if np.issubdtype(values.dtype, np.floating):
            finite &= np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return finite


def top_k_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the label is among the k highest logits (never for a row with a non-finite logit)."""
    order = np.argsort(-logits, axis=1)[:, : min(k, logits.shape[1])]
    return (order == labels[:, None]).any(axis=1) & finite_images([logits])


def coco_detections(outputs: list[np.ndarray], original_sizes: np.ndarray, input_size: tuple[int, int], top_k: int = 100) -> list[np.ndarray]:
    """Raw (hm, wh, reg) maps -> per image (K, 6) float32 [x, y, w, h, score, label] in original-image pixels."""
    boxes, scores, labels = detections(outputs, top_k, input_size)
    height, width = input_size
    per_image = []
    for b, s, l, (orig_h, orig_w), finite in zip(boxes.numpy(), scores.numpy(), labels.numpy(), original_sizes, finite_images(outputs)):
        if not finite:  # non-finite maps find nothing (finite_images)
            per_image.append(np.zeros((0, 6), np.float32))
            continue
        xyxy = b * np.array([orig_w / width, orig_h / height] * 2, np.float32)
        xywh = np.concatenate([xyxy[:, :2], np.maximum(0.0, xyxy[:, 2:] - xyxy[:, :2])], axis=1)
        per_image.append(np.concatenate([xywh, s[:, None], l[:, None].astype(np.float32)], axis=1).astype(np.float32))
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
    for b, s, l, finite in zip(boxes.numpy(), scores.numpy(), labels.numpy(), finite_images(outputs)):
        keep = (s >= threshold) & finite  # non-finite maps find nothing (finite_images)
        per_image.append([(box, float(score), int(label)) for box, score, label in zip(b[keep], s[keep], l[keep])])
    return per_image
