"""Per-layer quantization sensitivity: which layer did it, when an int8 gate fails?

Both graphs come from torch.export of the same folded model, so every op of the fp32 graph keeps
its name in the PT2E-quantized graph (which only adds quantize/dequantize nodes). Two passes:

  * cumulative: the int8 graph runs normally; each conv/linear output is compared with fp32's.
    Errors add up with depth, so the last layers always look worst here.
  * isolated: every op of the int8 graph that also exists in fp32 is fed the fp32 value of its
    inputs, so a layer's figure is only its own input rounding + weight rounding. This is the
    column that names the culprit.

An output layer (one whose value reaches a graph output through no other conv/linear) has its
output rounded once more (its quantize/dequantize pair), and no later layer sees that rounding: its
figures include it, measured at that dequantize. SQNR still understates the layers whose outputs
hold class scores: the task decides on them directly (argmax, heatmap peaks, the score ranking of
AP), where int8 rounding makes ties the float model never has (docs/recourse.md has the demo
detector's figures). `output_index` marks output layers; convert --max-drop keeps the score outputs'
layers in float first.

SQNR in dB, accumulated over all evaluation images (higher is better; worst first).
"""

from dataclasses import dataclass

import numpy as np
import torch

from edgemnv2.progress import progress

LAYER_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
# by name: the quantized_decomposed ops exist only once the quantizer's library has registered them
QUANTIZE_OP = "quantized_decomposed::quantize_per_tensor"
DEQUANTIZE_OP = "quantized_decomposed::dequantize_per_tensor"


def _is_op(node: torch.fx.Node, name: str) -> bool:
    # the schema's name is the op's, whatever the overload (.default for static ranges, .tensor for dynamic)
    return node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) and node.target._schema.name == name


@dataclass
class LayerSensitivity:
    node: str
    module: str
    kind: str
    isolated_sqnr_db: float
    cumulative_sqnr_db: float
    output_index: int | None = None  # the graph output its value reaches through no other layer (output_layers); None: not an output layer

    @property
    def feeds_output(self) -> bool:
        return self.output_index is not None


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


def _output_layer_nodes(float_graph: torch.fx.GraphModule) -> dict[str, int]:
    """{layer node name: the first graph output it feeds} for each conv/linear whose value reaches a
    graph output through no other layer (shape ops and activations may be between), ordered by that
    output, then by graph position. Meant for the bare network: an in-graph decode would join the
    heads into one output."""
    output = next(n for n in float_graph.graph.nodes if n.op == "output")
    values: list[torch.fx.Node] = []
    torch.fx.node.map_arg(output.args[0], values.append)  # the output's nodes in order, however nested
    found: dict[str, int] = {}
    for index, value in enumerate(values):
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
    position = {n.name: i for i, n in enumerate(float_graph.graph.nodes)}
    return dict(sorted(found.items(), key=lambda item: (item[1], position[item[0]])))


def output_layers(float_graph: torch.fx.GraphModule) -> list[str]:
    """The module paths of the output layers, in the order of the outputs they feed (a detector's
    heatmap head first, as the network returns it)."""
    nodes = {n.name: n for n in float_graph.graph.nodes}
    return list(dict.fromkeys(_module_path(nodes[name]) for name in _output_layer_nodes(float_graph)))


def _output_rounding(quantized_graph: torch.fx.GraphModule, layers: set[str]) -> dict[str, str]:
    """{layer: the dequantize after its own quantize} for those of `layers` whose output the int8 graph
    rounds (layer -> quantize -> dequantize); a layer kept in float has none."""
    found = {}
    for node in quantized_graph.graph.nodes:
        if node.name not in layers:
            continue
        for quantize in node.users:
            if _is_op(quantize, QUANTIZE_OP):
                dequantize = next((u for u in quantize.users if _is_op(u, DEQUANTIZE_OP)), None)
                if dequantize is not None:
                    found[node.name] = dequantize.name
                    break
    return found


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
    rounded = _output_rounding(quantized_graph, set(feeding))  # output layer -> the dequantize of its rounded output
    recorded = names | set(rounded.values())
    sums = {name: np.zeros(3) for name in names}  # signal, cumulative noise, isolated noise
    with torch.no_grad():
        for image in progress(images, "per-layer sensitivity"):
            x = torch.from_numpy(np.ascontiguousarray(image[None]))
            reference = _Recorder(float_graph, shared)
            reference.run(x)
            cumulative = _Recorder(quantized_graph, recorded)
            cumulative.run(x)
            isolated = _Recorder(quantized_graph, recorded, substitute=reference.values)
            isolated.run(x)
            for name in names:
                ref = reference.values[name].double()
                # an output layer: cumulative is taken after its output's rounding; isolated adds that rounding of its
                # fp32 value (the dequantize in the isolated pass) to its own error, as independent noise powers add
                after = rounded.get(name, name)
                own_rounding = float(((ref - isolated.values[after].double()) ** 2).sum()) if name in rounded else 0.0
                sums[name] += [float((ref**2).sum()), float(((ref - cumulative.values[after].double()) ** 2).sum()),
                               float(((ref - isolated.values[name].double()) ** 2).sum()) + own_rounding]
    results = []
    for node in layers:
        signal, cumulative_noise, isolated_noise = sums[node.name]
        kind = "linear" if node.target is torch.ops.aten.linear.default else _conv_kind(node)
        results.append(LayerSensitivity(node.name, _module_path(node), kind, _sqnr(signal, isolated_noise), _sqnr(signal, cumulative_noise),
                                        feeding.get(node.name)))
    return sorted(results, key=lambda r: r.isolated_sqnr_db)


def _conv_kind(node) -> str:
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    weight = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
    kernel = "x".join(str(s) for s in weight.shape[2:]) if weight is not None else "?"
    return f"conv {kernel}" + (" depthwise" if groups and groups > 1 else "")
