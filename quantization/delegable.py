"""Rewrites that keep a graph inside XNNPACK: the same numbers, in ops its delegate takes.

Measured with `edgemnv2 profile` on the demo detector (CenterNet MobileNetV2 0.5, 128 px, int8):
ExecuTorch's XNNPACK partitioner has no nearest-upsampling op, so each of the neck's three 2x
upsamples split the graph into another delegate call, ran as a portable kernel (0.17 ms in all)
and cost a dequantize/quantize pair and NCHW/NHWC transposes at each split: about a third of the
int8 time. Rewritten as views and concatenations (NearestUpsample2x) it stays inside the delegate:
one call, fp32 1.063 -> 0.916 ms and int8 0.901 -> 0.801 ms (same detector, one interleaved run).
(The other exact form, a depthwise 2x2 stride-2 transposed conv of ones, XNNPACK does take, but
its grouped deconvolution measured 0.9 ms for the largest upsample alone: slower than the split.)
"""

import copy

import torch
from torch import fx, nn
from torch.nn import functional as F


class NearestUpsample2x(nn.Module):
    """F.interpolate(x, scale_factor=2, mode="nearest") from views and two-way concatenations, the
    data-movement ops XNNPACK's partitioner takes (its unsqueeze takes only the trailing dimension,
    so views stand in for unsqueezes). Each output pixel is a copy of its source: exact in fp32 and
    int8 alike (a concatenation shares its input's scale)."""

    def forward(self, x):
        n, c, h, w = x.shape
        # each concatenation joins two distinct nodes: the partitioner counts distinct inputs, and
        # refused cat([a, a]) as "fewer than 2 tensors" (left as a portable kernel)
        rows = torch.cat([x.reshape(n, c * h, w, 1), x.reshape(n, c * h, w, 1)], dim=3)  # each pixel twice along its row
        return torch.cat([rows.reshape(n, c * h, 1, 2 * w), rows.reshape(n, c * h, 1, 2 * w)], dim=2).reshape(n, c, 2 * h, 2 * w)  # each row twice


def _is_nearest_2x(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target is not F.interpolate:
        return False
    scale = node.kwargs.get("scale_factor", node.args[2] if len(node.args) > 2 else None)
    mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
    size = node.kwargs.get("size", node.args[1] if len(node.args) > 1 else None)
    return size is None and mode == "nearest" and scale in (2, 2.0, (2, 2), (2.0, 2.0))


def nearest_upsampling_as_copies(model: nn.Module) -> tuple[nn.Module, int]:
    """(a copy of model with every nearest 2x F.interpolate of its fx graphs made a
    NearestUpsample2x, how many). Models that are not fx graphs (or have none) come back as they are."""
    graphs = [m for m in model.modules() if isinstance(m, fx.GraphModule) and any(_is_nearest_2x(n) for n in m.graph.nodes)]
    if not graphs:
        return model, 0
    model = copy.deepcopy(model)
    count = 0
    for graph_module in [m for m in model.modules() if isinstance(m, fx.GraphModule)]:
        nodes = [n for n in graph_module.graph.nodes if _is_nearest_2x(n)]
        if not nodes:
            continue
        for node in nodes:
            name = f"nearest_upsample_{count}"
            graph_module.add_submodule(name, NearestUpsample2x())
            with graph_module.graph.inserting_after(node):
                replacement = graph_module.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(replacement)
            graph_module.graph.erase_node(node)
            count += 1
        graph_module.recompile()
    return model, count
