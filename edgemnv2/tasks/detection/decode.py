"""CenterNet post-processing: heatmap peaks -> boxes in input pixels. Shared by every runtime.

The same code runs on the host (after any artifact that returns the raw maps) and inside the graph
(`DecodedDetector`, exported by every target with `--set TARGET.decode=graph`), so the two can only
differ by the runtime's arithmetic. It is written to export everywhere: static shapes, top-K, integer
index arithmetic and gathers (TFLite TOPK_V2/FLOOR_DIV/GATHER, XNNPACK plus ExecuTorch's portable
kernels, Core ML topk/floor_div/gather_along_axis, ONNX TopK/GatherElements).
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_TOP_K = 100  # COCO's detections-per-image limit
DECODED_OUTPUTS = ("boxes", "scores", "classes")  # what a DecodedDetector returns


def decode_maps(hm_logits: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor, top_k: int, stride: tuple[float, float]):
    """(B, C, H, W) heatmap logits, (B, 2, H, W) sizes and offsets in map pixels ->
    boxes (B, K, 4) x1y1x2y2 in input pixels, scores (B, K), classes (B, K), in the maps' dtype."""
    batch, classes, height, width = hm_logits.shape
    heat = torch.sigmoid(hm_logits)
    # a peak is a pixel equal to the max of its 3x3 neighbourhood (CenterNet's NMS-free decode)
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
    k = min(top_k, classes * height * width)
    scores, flat = torch.topk(peaks.reshape(batch, -1), k)
    # floor division and remainder, not `flat - labels * area`: XNNPACK's quantizer turns the scalar
    # of a mul or sub into a float tensor before annotating, and the int64 index came out float
    area = height * width
    labels, pixel = torch.div(flat, area, rounding_mode="floor"), torch.remainder(flat, area)
    ys, xs = torch.div(pixel, width, rounding_mode="floor"), torch.remainder(pixel, width)
    # coremltools computes integer floor_div through float and hands gather float indices unless
    # they are cast back to int explicitly; the round trip is a no-op everywhere else.
    index = pixel.int().long().unsqueeze(1).expand(-1, 2, -1)  # (B, 2, K)
    offset = torch.gather(reg.reshape(batch, 2, -1), 2, index)
    size = torch.gather(wh.reshape(batch, 2, -1), 2, index)
    dtype = heat.dtype
    cx, cy = xs.to(dtype) + offset[:, 0], ys.to(dtype) + offset[:, 1]
    half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
    stride_y, stride_x = stride
    boxes = torch.stack([(cx - half_w) * stride_x, (cy - half_h) * stride_y, (cx + half_w) * stride_x, (cy + half_h) * stride_y], dim=-1)
    return boxes, scores, labels.to(dtype)


class CenterNetDecode(nn.Module):
    """The decode as a module: quantizers leave it in float by its name (`DecodedDetector.decode`)."""

    def __init__(self, top_k: int, input_size: tuple[int, int]):
        super().__init__()
        self.top_k, self.input_size = top_k, tuple(input_size)

    def forward(self, hm_logits, wh, reg):
        height, width = hm_logits.shape[-2:]
        return decode_maps(hm_logits, wh, reg, self.top_k, (self.input_size[0] / height, self.input_size[1] / width))


class DecodedDetector(nn.Module):
    """A CenterNet whose graph ends in its decode: image in, (boxes, scores, classes) out."""

    FLOAT_MODULES = ("decode",)  # submodules every quantizer keeps in float (max-pool, top-K, gathers)

    def __init__(self, net: nn.Module, input_size: tuple[int, int], top_k: int = DEFAULT_TOP_K):
        super().__init__()
        self.net = net
        self.decode = CenterNetDecode(top_k, input_size)

    def forward(self, x):
        hm, wh, reg = self.net(x)[:3]
        return self.decode(hm, wh, reg)


def is_decoded(outputs) -> bool:
    """Raw maps are 4-D (B, C, H, W); a decoded detector's first output is boxes (B, K, 4)."""
    return np.ndim(outputs[0]) == 3


def shape_problem(outputs) -> str | None:
    """Why these cannot be a detector's outputs (None: they can): raw hm (B, C, H, W) with wh and reg
    (B, 2, H, W), or decoded boxes (B, K, 4) with scores and classes (B, K). An artifact's outputs
    are checked before anything indexes them."""
    shapes = [tuple(np.shape(o)) for o in outputs]
    if len(shapes) == 3 and len(shapes[0]) == 3:
        batch, top_k = shapes[0][:2]
        ok = shapes == [(batch, top_k, 4), (batch, top_k), (batch, top_k)]
    else:
        ok = len(shapes) >= 3 and len(shapes[0]) == 4 and shapes[1] == shapes[2] == (shapes[0][0], 2, *shapes[0][2:])
    return None if ok else (f"outputs of shapes {shapes}: a detector returns hm (B, C, H, W), wh and reg (B, 2, H, W), "
                            "or boxes (B, K, 4), scores and classes (B, K)")


def decode(hm_logits, wh, reg, top_k: int = DEFAULT_TOP_K, input_size: tuple[int, int] | None = None):
    """Peaks are pixels equal to the 3x3 max of the sigmoid heatmap; the top-K become detections.

    Accepts torch tensors or numpy arrays of shape (B, C, H, W) / (B, 2, H, W). `wh` and `reg` are
    in output-map pixels (as trained). Boxes come back in input pixels: the output stride is taken
    from input_size / map size, so any input size works (default stride 4).
    Returns (boxes (B, K, 4) x1y1x2y2, scores (B, K), labels (B, K) int64) as torch tensors.
    """
    hm_logits, wh, reg = (t if isinstance(t, torch.Tensor) else torch.as_tensor(np.asarray(t)) for t in (hm_logits, wh, reg))
    height, width = hm_logits.shape[-2:]
    stride = (input_size[0] / height, input_size[1] / width) if input_size else (4.0, 4.0)
    with torch.no_grad():
        boxes, scores, labels = decode_maps(hm_logits.float(), wh.float(), reg.float(), top_k, stride)
    return boxes, scores, labels.long()


def detections(outputs, top_k: int = DEFAULT_TOP_K, input_size: tuple[int, int] | None = None):
    """(boxes, scores, labels) from whatever a detector artifact returns: its raw maps (decoded
    here) or its in-graph decode's outputs (taken as they are, at most top_k per image)."""
    if not is_decoded(outputs):
        return decode(*outputs[:3], top_k=top_k, input_size=input_size)
    boxes, scores, labels = (torch.as_tensor(np.asarray(o, np.float32)) for o in outputs[:3])
    return boxes[:, :top_k], scores[:, :top_k], labels[:, :top_k].round().long()
