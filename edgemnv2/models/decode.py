"""CenterNet post-processing: heatmap peaks -> boxes in input pixels. Shared by every runtime."""

import numpy as np
import torch
from torch.nn import functional as F


def decode(hm_logits, wh, reg, top_k: int = 100, input_size: tuple[int, int] | None = None):
    """Peaks are pixels equal to the 3x3 max of the sigmoid heatmap; the top-K become detections.

    Accepts torch tensors or numpy arrays of shape (B, C, H, W) / (B, 2, H, W). `wh` and `reg` are
    in output-map pixels (as trained). Boxes come back in input pixels: the output stride is taken
    from input_size / map size, so any input size works (default stride 4).
    Returns (boxes (B, K, 4) x1y1x2y2, scores (B, K), labels (B, K)) as torch tensors.
    """
    hm_logits, wh, reg = (torch.as_tensor(np.asarray(t)) if not isinstance(t, torch.Tensor) else t for t in (hm_logits, wh, reg))
    batch, classes, height, width = hm_logits.shape
    stride_y, stride_x = (input_size[0] / height, input_size[1] / width) if input_size else (4.0, 4.0)
    heat = torch.sigmoid(hm_logits.float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    k = min(top_k, classes * height * width)
    scores, flat = torch.topk(peaks.reshape(batch, -1), k)
    labels = flat // (height * width)
    pixel = flat % (height * width)
    ys, xs = (pixel // width).float(), (pixel % width).float()

    def gather(maps):  # (B, 2, H, W) -> (B, K, 2) at the peak pixels
        flat_maps = maps.float().reshape(batch, 2, -1)
        return torch.gather(flat_maps, 2, pixel.unsqueeze(1).expand(-1, 2, -1)).transpose(1, 2)

    offset, size = gather(reg), gather(wh)
    cx, cy = xs + offset[..., 0], ys + offset[..., 1]
    half_w, half_h = size[..., 0] / 2, size[..., 1] / 2
    boxes = torch.stack(
        [(cx - half_w) * stride_x, (cy - half_h) * stride_y, (cx + half_w) * stride_x, (cy + half_h) * stride_y], dim=-1
    )
    return boxes, scores, labels
