"""Task metrics for any runner: a callable taking an NCHW float32 batch and returning a list of
float32 arrays. Torch models, TorchScript, ExecuTorch, TFLite and CoreML runners all fit, so every
artifact is scored by exactly the same code as the checkpoint it came from.
"""

import contextlib
import io
from typing import Callable

import numpy as np
import torch

from .data.datasets import DetectionData
from .data.preprocess import Preprocessing
from .models.decode import decode
from .progress import progress

Runner = Callable[[np.ndarray], list[np.ndarray]]


def torch_runner(model: torch.nn.Module) -> Runner:
    model.eval()

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(batch))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().numpy() for o in out]

    return run


def run_dataset(runner: Runner, images: np.ndarray, preprocessing: Preprocessing, batch_size: int = 32, description: str = "inference") -> list[np.ndarray]:
    """Run a runner over (N, H, W, 3) uint8 images; outputs concatenated along the batch axis."""
    chunks: list[list[np.ndarray]] = []
    starts = range(0, len(images), batch_size)
    for start in progress(starts, description):
        chunks.append(runner(preprocessing.normalize(images[start : start + batch_size])))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    order = np.argsort(-logits, axis=1)
    top1 = float(np.mean(order[:, 0] == labels))
    k = min(5, logits.shape[1])
    top5 = float(np.mean((order[:, :k] == labels[:, None]).any(axis=1)))
    return {"top1": top1, "top5": top5}


def detections_to_coco(outputs: list[np.ndarray], data: DetectionData, input_size: tuple[int, int], top_k: int = 100) -> list[dict]:
    """Decode raw (hm, wh, reg) maps into COCO result dicts in original-image pixels."""
    results = []
    boxes, scores, labels = decode(*outputs[:3], top_k=top_k, input_size=input_size)
    height, width = input_size
    for i, image_id in enumerate(data.image_ids):
        orig_h, orig_w = data.original_sizes[i]
        scale = np.array([orig_w / width, orig_h / height] * 2, np.float32)
        image_boxes = boxes[i].numpy() * scale
        for box, score, label in zip(image_boxes, scores[i].numpy(), labels[i].numpy()):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({
                "image_id": int(image_id), "category_id": int(data.category_ids[int(label)]),
                "bbox": [x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1)], "score": float(score),
            })
    return results


def _ground_truth(data: DetectionData):
    """pycocotools COCO object for exactly the images in `data` (original-image pixels)."""
    from pycocotools.coco import COCO

    images, annotations = [], []
    height, width = data.images.shape[1:3]
    for i, image_id in enumerate(data.image_ids):
        orig_h, orig_w = data.original_sizes[i]
        images.append({"id": int(image_id), "width": orig_w, "height": orig_h})
        scale = np.array([orig_w / width, orig_h / height] * 2, np.float32)
        for box, label in zip(data.boxes[i] * scale, data.labels[i]):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(image_id), "category_id": int(data.category_ids[int(label)]),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": cid, "name": name} for cid, name in zip(data.category_ids, data.class_names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_map(results: list[dict], data: DetectionData) -> dict[str, float]:
    """COCO mAP@[.5:.95] and mAP@.5 with pycocotools (the reference implementation)."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"map": 0.0, "map50": 0.0}
    gt = _ground_truth(data)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = [int(i) for i in data.image_ids]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": max(0.0, float(evaluator.stats[0])), "map50": max(0.0, float(evaluator.stats[1]))}


def evaluate_runner(runner: Runner, data, preprocessing: Preprocessing, batch_size: int = 32) -> tuple[dict[str, float], list[np.ndarray]]:
    """Task metrics plus the raw outputs (kept for drift comparisons)."""
    from .tasks import get_task

    outputs = run_dataset(runner, data.images, preprocessing, batch_size)
    return get_task(data.task).metrics(outputs, data, preprocessing.input_size), outputs


CONFIDENT_SCORE = 0.3  # detections at or above this score are what a user would draw and count


def confident_detections(outputs: list[np.ndarray], input_size: tuple[int, int], threshold: float = CONFIDENT_SCORE, top_k: int = 100) -> list[list[tuple]]:
    """Per image: [(box x1y1x2y2 in input pixels, score, label)] with score >= threshold."""
    boxes, scores, labels = decode(*outputs[:3], top_k=top_k, input_size=input_size)
    per_image = []
    for b, s, l in zip(boxes.numpy(), scores.numpy(), labels.numpy()):
        keep = s >= threshold
        per_image.append([(box, float(score), int(label)) for box, score, label in zip(b[keep], s[keep], l[keep])])
    return per_image
