"""Per-layer quantization sensitivity: which layer did it, when an int8 gate fails?

Both graphs come from torch.export of the same folded model, so every op of the fp32 graph keeps
its name in the PT2E-quantized graph (which only adds quantize/dequantize nodes). Two passes:

  * cumulative: the int8 graph runs normally; each conv/linear output is compared with fp32's.
    Errors add up with depth, so the last layers always look worst here.
  * isolated: every op of the int8 graph that also exists in fp32 is fed the fp32 value of its
    inputs, so a layer's figure is only its own input rounding + weight rounding. This is the
    column that names the culprit.

SQNR in dB, accumulated over all evaluation images (higher is better; worst first).
"""

from dataclasses import dataclass

import numpy as np
import torch

from edgemnv2.progress import progress

LAYER_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)


@dataclass
class LayerSensitivity:
    node: str
    module: str
    kind: str
    isolated_sqnr_db: float
    cumulative_sqnr_db: float


class _Recorder(torch.fx.Interpreter):
    """Runs a graph, records chosen node outputs, optionally substitutes reference values."""

    def __init__(self, module, record: set[str], substitute: dict | None = None):
        super().__init__(module)
        self.record, self.substitute, self.values = record, substitute, {}

    def run_node(self, node):
        value = super().run_node(node)
        # clone: ReLU6(inplace=True) exports as hardtanh_, which would overwrite a kept conv output
        if node.name in self.record:
            self.values[node.name] = value.detach().clone()
        if self.substitute is not None and node.name in self.substitute:
            value = self.substitute[node.name].clone()
        return value


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else node.name


def _sqnr(signal: float, noise: float) -> float:
    return 200.0 if noise == 0 else float(10 * np.log10(max(signal, 1e-30) / noise))


def layer_sensitivity(float_graph: torch.fx.GraphModule, quantized_graph: torch.fx.GraphModule, images: np.ndarray) -> list[LayerSensitivity]:
    """`images`: (N, 3, H, W) float32, preprocessed real images. Worst (lowest isolated SQNR) first."""
    layers = [n for n in float_graph.graph.nodes if n.op == "call_function" and n.target in LAYER_OPS]
    names = {n.name for n in layers}
    quantized_names = {n.name for n in quantized_graph.graph.nodes}
    missing = names - quantized_names
    if missing:
        raise ValueError(f"quantized graph lost layer names {sorted(missing)[:3]}; both graphs must come from one export")
    shared = {n.name for n in float_graph.graph.nodes if n.op == "call_function" and n.name in quantized_names}
    sums = {name: np.zeros(3) for name in names}  # signal, cumulative noise, isolated noise
    with torch.no_grad():
        for image in progress(images, "per-layer sensitivity"):
            x = torch.from_numpy(np.ascontiguousarray(image[None]))
            reference = _Recorder(float_graph, shared)
            reference.run(x)
            cumulative = _Recorder(quantized_graph, names)
            cumulative.run(x)
            isolated = _Recorder(quantized_graph, names, substitute=reference.values)
            isolated.run(x)
            for name in names:
                ref = reference.values[name].double()
                sums[name] += [float((ref**2).sum()), float(((ref - cumulative.values[name].double()) ** 2).sum()),
                               float(((ref - isolated.values[name].double()) ** 2).sum())]
    results = []
    for node in layers:
        signal, cumulative_noise, isolated_noise = sums[node.name]
        kind = "linear" if node.target is torch.ops.aten.linear.default else _conv_kind(node)
        results.append(LayerSensitivity(node.name, _module_path(node), kind, _sqnr(signal, isolated_noise), _sqnr(signal, cumulative_noise)))
    return sorted(results, key=lambda r: r.isolated_sqnr_db)


def _conv_kind(node) -> str:
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    weight = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
    kernel = "x".join(str(s) for s in weight.shape[2:]) if weight is not None else "?"
    return f"conv {kernel}" + (" depthwise" if groups and groups > 1 else "")
