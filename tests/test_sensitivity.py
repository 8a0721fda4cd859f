"""Which layers are output layers, and what their figures count (quantization/sensitivity.py): graph
walks on small exported models, and the test detector's heads."""

import numpy as np
import torch
from torch import nn

from quantization.ptq import QuantRecipe, pt2e_quantize
from quantization.sensitivity import layer_sensitivity, output_layers


class TwoOutputs(nn.Module):
    """`c` feeds the first output through a reshape, `b` the second directly (and runs before `c`);
    `a` feeds only other layers; `e` and `d` are joined by an add before the third output."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)
        self.d, self.e = nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        second = self.b(y)
        return self.c(y).flatten(1), second, self.e(y) + self.d(y)


def _export(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    return torch.export.export(model.eval(), (example,)).module()


def test_output_layers_follow_the_outputs_order_then_the_graph_order():
    graph = _export(TwoOutputs(), torch.zeros(1, 3, 8, 8))
    # outputs first (b runs before c), then graph order within one: the add joins e and d into the third
    assert output_layers(graph) == ["c", "b", "e", "d"]


def test_the_search_keeps_the_class_score_layers_in_float_first():
    """The detector's hm conv (its labelled output) goes first, however well it measures; wh and reg
    keep their SQNR places; a classifier's logits layer goes first."""
    from conversion.recourse import in_search_order
    from edgemnv2.tasks import get_task
    from quantization.sensitivity import LayerSensitivity

    worst_first = [LayerSensitivity("n1", "backbone.2", "conv 1x1", 30.0, 28.0), LayerSensitivity("n2", "heads.reg.3", "conv 1x1", 47.0, 30.0, 2),
                   LayerSensitivity("n3", "heads.hm.3", "conv 1x1", 48.0, 34.0, 0), LayerSensitivity("n4", "heads.wh.3", "conv 1x1", 51.0, 37.0, 1)]
    assert in_search_order(worst_first, get_task("detection")) == ["heads.hm.3", "backbone.2", "heads.reg.3", "heads.wh.3"]
    logits = [LayerSensitivity("n1", "features.3", "conv 1x1", 30.0, 28.0), LayerSensitivity("n2", "classifier.1", "linear", 45.0, 33.0, 0)]
    assert in_search_order(logits, get_task("classification")) == ["classifier.1", "features.3"]


def test_an_output_layers_figures_count_its_outputs_rounding():
    """The last conv's output is rounded by its own quantize/dequantize, which no later layer sees:
    its isolated figure counts that rounding (so it is no better than the rounding alone), and kept in
    float the same layer measures better."""
    from conversion.executorch_program import XNNPACK
    from quantization.sensitivity import QUANTIZE_OP, _is_op

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    images = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)  # the arithmetic, not accuracy
    example = torch.from_numpy(images[:1])
    float_graph = _export(model, example)
    quantized = pt2e_quantize(model, example, XNNPACK.build(QuantRecipe(), False), images)
    layers = {layer.module: layer for layer in layer_sensitivity(float_graph, quantized, images)}
    assert layers["2"].output_index == 0 and layers["2"].feeds_output and not layers["0"].feeds_output

    last = next(n for n in quantized.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.conv2d.default and n.name == "conv2d_1")
    scale, zero_point, low, high = next(u for u in last.users if _is_op(u, QUANTIZE_OP)).args[1:5]
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).double()
    rounded = ((reference / scale).round() + zero_point).clamp(low, high).sub(zero_point) * scale
    rounding_alone_db = 10 * np.log10(float((reference**2).sum() / ((reference - rounded) ** 2).sum()))
    assert layers["2"].isolated_sqnr_db <= rounding_alone_db + 1e-6

    kept = pt2e_quantize(model, example, XNNPACK.build(QuantRecipe(float_modules=("2",)), False), images)
    in_float = {layer.module: layer for layer in layer_sensitivity(float_graph, kept, images)}
    assert in_float["2"].isolated_sqnr_db > layers["2"].isolated_sqnr_db


def test_a_detectors_output_layers_are_its_heads_last_convs_in_output_order(trained_detector):
    """convert --max-drop keeps the class-score output's layer (hm) in float first: the rounding of its
    output was the demo detector's whole int8 mAP@.5 drop (docs/recourse.md)."""
    from edgemnv2.checkpoint import load_checkpoint
    from quantization.fuse import fold_batchnorm

    model, meta = load_checkpoint(trained_detector[0])
    example = torch.zeros(1, 3, *meta.preprocessing.input_size)
    assert output_layers(_export(fold_batchnorm(model), example)) == ["heads.hm.3", "heads.wh.3", "heads.reg.3"]
