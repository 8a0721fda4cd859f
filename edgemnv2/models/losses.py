"""CenterNet training targets and losses."""

import math

import numpy as np
import torch
from torch.nn import functional as F

SIZE_LOSS_WEIGHT = 0.1
OFFSET_LOSS_WEIGHT = 1.0


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius rule: the largest corner shift keeping IoU >= min_overlap (3 cases)."""
    a1, b1 = 1, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """Max-splat a 2D Gaussian (sigma = diameter / 6) centred at (cx, cy), in place."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    ys, xs = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    gaussian = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    height, width = heatmap.shape
    left, right = min(cx, radius), min(width - cx, radius + 1)
    top, bottom = min(cy, radius), min(height - cy, radius + 1)
    region = heatmap[cy - top : cy + bottom, cx - left : cx + right]
    patch = gaussian[radius - top : radius + bottom, radius - left : radius + right]
    np.maximum(region, patch, out=region)


def build_targets(boxes: np.ndarray, labels: np.ndarray, num_classes: int, map_size: tuple[int, int], stride: float):
    """Dense targets for one image. boxes: (N, 4) x1y1x2y2 in input pixels.

    Returns heatmap (C, H, W), wh (2, H, W) and offset (2, H, W) in map pixels, mask (H, W).
    """
    height, width = map_size
    heatmap = np.zeros((num_classes, height, width), np.float32)
    wh = np.zeros((2, height, width), np.float32)
    offset = np.zeros((2, height, width), np.float32)
    mask = np.zeros((height, width), np.float32)
    for (x1, y1, x2, y2), label in zip(boxes / stride, labels):
        box_w, box_h = x2 - x1, y2 - y1
        if box_w <= 0 or box_h <= 0:
            continue
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
        cx, cy = int(min(centre[0], width - 1)), int(min(centre[1], height - 1))
        radius = max(0, int(gaussian_radius(math.ceil(box_h), math.ceil(box_w))))
        draw_gaussian(heatmap[int(label)], cx, cy, radius)
        wh[:, cy, cx] = box_w, box_h
        offset[:, cy, cx] = centre[0] - cx, centre[1] - cy
        mask[cy, cx] = 1.0
    return heatmap, wh, offset, mask


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (CenterNet eq. 1) on logits, normalised by #objects.

    Written with logsigmoid so that confident logits never produce log(0).
    """
    prob = torch.sigmoid(logits)
    positive = target.eq(1).float()
    pos_term = F.logsigmoid(logits) * (1 - prob).pow(alpha) * positive
    neg_term = F.logsigmoid(-logits) * prob.pow(alpha) * (1 - target).pow(beta) * (1 - positive)
    num_pos = positive.sum().clamp(min=1.0)
    return -(pos_term.sum() + neg_term.sum()) / num_pos


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 at object centres only; mask (B, H, W)."""
    weight = mask.unsqueeze(1)
    return (torch.abs(pred - target) * weight).sum() / (weight.sum() * pred.shape[1]).clamp(min=1.0)


def centernet_loss(outputs, heatmap, wh, offset, mask) -> tuple[torch.Tensor, dict[str, float]]:
    hm_logits, pred_wh, pred_offset = outputs
    parts = {
        "hm": focal_loss(hm_logits, heatmap),
        "wh": SIZE_LOSS_WEIGHT * masked_l1(pred_wh, wh, mask),
        "reg": OFFSET_LOSS_WEIGHT * masked_l1(pred_offset, offset, mask),
    }
    total = sum(parts.values())
    return total, {name: value.item() for name, value in parts.items()}


def centernet_distillation(outputs, teacher_outputs) -> torch.Tensor:
    """The student's maps fitted to a teacher's (the fp32 model's) on the same images: the heatmap by
    binary cross-entropy against the teacher's probabilities (less the teacher's own entropy, so a
    perfect copy scores 0), size and offset by L1 where the teacher sees an object (weighted by its
    peak probability over classes), each normalised by the teacher's heatmap mass, as the focal loss
    is by the object count; the size and offset weights are the training loss's."""
    (hm_logits, pred_wh, pred_offset), (teacher_logits, teacher_wh, teacher_offset) = outputs[:3], teacher_outputs[:3]
    target = torch.sigmoid(teacher_logits)
    mass = target.sum().clamp(min=1.0)
    cross = F.binary_cross_entropy_with_logits(hm_logits, target, reduction="sum")
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="sum")
    weight = target.amax(dim=1, keepdim=True)
    where = weight.sum().clamp(min=1.0)
    size = (weight * (pred_wh - teacher_wh).abs()).sum() / where
    offset = (weight * (pred_offset - teacher_offset).abs()).sum() / where
    return (cross - entropy) / mass + SIZE_LOSS_WEIGHT * size + OFFSET_LOSS_WEIGHT * offset
