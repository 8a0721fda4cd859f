"""Per-layer quantization sensitivity: which layer did it, when an int8 gate fails?

Both graphs come from torch.export of the same folded model, so every op of the fp32 graph keeps
its name in the PT2E-quantized graph (which only adds quantize/dequantize nodes). Two passes:

  * cumulative: the int8 graph runs normally; each conv/linear output is compared with fp32's.
    Errors add up with depth, so the last layers always look worst here.
  * isolated: every op of the int8 graph that also exists in fp32 is fed the fp32 value of its
    inputs, so a layer's figure is only its own input rounding + weight rounding. This is the
    column that names the culprit.

An output layer (one whose value reaches a graph output through no other conv/linear) has its
output rounded once more with no later layer to see it: its isolated figure includes that rounding,
measured at the graph output. SQNR still understates such layers: the task decides on them directly
(argmax, heatmap peaks, the score ranking of AP), and int8 rounding makes ties the float model never
has. On the demo detector, the heatmap head's last conv alone was the whole int8 mAP@.5 drop on every
quantizer (XNNPACK 0.83 -> 0.01, LiteRT 0.83 -> 0.01, FX x86 1.11 -> -0.14 points, kept in float),
while its SQNR stayed high. So `output_layers` names them, and convert --max-drop tries them first.

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
    feeds_output: bool = False  # its value reaches a graph output through no other layer (output_layers)


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


def _graph_outputs(graph_module: torch.fx.GraphModule) -> list:
    """The output node's values, flattened in order (a tuple of maps, or one tensor)."""
    output = next(n for n in graph_module.graph.nodes if n.op == "output")
    return list(torch.utils._pytree.tree_leaves(output.args[0]))


def _output_layer_nodes(float_graph: torch.fx.GraphModule) -> dict[str, int]:
    """{layer node name: index of the graph output it feeds} for each conv/linear whose value reaches
    a graph output through no other layer (shape ops and activations may be between), first output first."""
    found: dict[str, int] = {}
    for index, value in enumerate(_graph_outputs(float_graph)):
        stack, seen = [value], set()
        while stack:
            node = stack.pop()
            if not isinstance(node, torch.fx.Node) or node in seen:
                continue
            seen.add(node)
            if node.op == "call_function" and node.target in LAYER_OPS:
                found.setdefault(node.name, index)
                continue
            stack.extend(node.all_input_nodes)
    return found


def output_layers(float_graph: torch.fx.GraphModule) -> list[str]:
    """The module paths of the output layers, in the order of the outputs they feed (a detector's
    heatmap head first, as the network returns it)."""
    nodes = {n.name: n for n in float_graph.graph.nodes}
    ordered = sorted(_output_layer_nodes(float_graph).items(), key=lambda item: item[1])
    return list(dict.fromkeys(_module_path(nodes[name]) for name, _ in ordered))


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
    feeding = _output_layer_nodes(float_graph)
    sums = {name: np.zeros(3) for name in names}  # signal, cumulative noise, isolated noise
    rounding = {index: np.zeros(2) for index in set(feeding.values())}  # per output: signal, noise of its own rounding
    with torch.no_grad():
        for image in progress(images, "per-layer sensitivity"):
            x = torch.from_numpy(np.ascontiguousarray(image[None]))
            reference = _Recorder(float_graph, shared)
            reference_outputs = torch.utils._pytree.tree_leaves(reference.run(x))
            cumulative = _Recorder(quantized_graph, names)
            cumulative.run(x)
            isolated = _Recorder(quantized_graph, names, substitute=reference.values)
            isolated_outputs = torch.utils._pytree.tree_leaves(isolated.run(x))
            for name in names:
                ref = reference.values[name].double()
                sums[name] += [float((ref**2).sum()), float(((ref - cumulative.values[name].double()) ** 2).sum()),
                               float(((ref - isolated.values[name].double()) ** 2).sum())]
            for index in rounding:  # fp32 values into the ops after the output layer: what is left is their own rounding
                ref = reference_outputs[index].double()
                rounding[index] += [float((ref**2).sum()), float(((ref - isolated_outputs[index].double()) ** 2).sum())]
    results = []
    for node in layers:
        signal, cumulative_noise, isolated_noise = sums[node.name]
        if node.name in feeding:  # relative noise powers add: the layer's own error, then its output's rounding
            out_signal, out_noise = rounding[feeding[node.name]]
            isolated_noise += signal * out_noise / max(out_signal, 1e-30)
        kind = "linear" if node.target is torch.ops.aten.linear.default else _conv_kind(node)
        results.append(LayerSensitivity(node.name, _module_path(node), kind, _sqnr(signal, isolated_noise), _sqnr(signal, cumulative_noise),
                                        node.name in feeding))
    return sorted(results, key=lambda r: r.isolated_sqnr_db)


def _conv_kind(node) -> str:
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    weight = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
    kernel = "x".join(str(s) for s in weight.shape[2:]) if weight is not None else "?"
    return f"conv {kernel}" + (" depthwise" if groups and groups > 1 else "")
