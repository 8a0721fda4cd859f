"""ExecuTorch per-layer outputs, as the XNNPACK delegate computed them.

A .pte's XNNPACK delegate is one opaque call: ETDump from the pip runtime records its kernels' times
but none of their outputs. So `debug` rebuilds the artifact's program from its checkpoint, recipe
and calibration images (the manifest records all three, with hashes), with every conv/linear's int8
output (and its int8 input) added to the program's outputs, lowers it through the same XNNPACK
partitioner and runs it in the ExecuTorch runtime. The rebuilt program must return exactly the
artifact's outputs on every image compared; if it does not, it is not the artifact's program and
nothing is reported from it.

The taps are the quantize ops after each layer: XNNPACK's own int8 tensors, dequantized here with
their scale and zero point.
"""

import functools
import json
from contextlib import closing

import numpy as np
import torch

from edgemnv2.errors import UserError
from edgemnv2.layerwise.records import Capture

from .executorch_program import program_model, to_program

LAYER_OPS = {torch.ops.aten.conv2d.default: "conv", torch.ops.aten.linear.default: "gemm"}
ACTIVATIONS = {torch.ops.aten.hardtanh.default: "relu6", torch.ops.aten.hardtanh_.default: "relu6",
               torch.ops.aten.relu.default: "relu", torch.ops.aten.relu_.default: "relu"}


def _quantized_decomposed():
    return torch.ops.quantized_decomposed


def _quantize_after(node: torch.fx.Node) -> torch.fx.Node | None:
    """The quantize op that takes this layer's output (through its activation, if any)."""
    ops = _quantized_decomposed()
    current = node
    while True:
        quantizes = [user for user in current.users if user.target == ops.quantize_per_tensor.default]
        if quantizes:
            return quantizes[0]
        if len(current.users) != 1:
            return None
        (current,) = current.users
        if current.target not in ACTIVATIONS:
            return None


def _activation(node: torch.fx.Node) -> str | None:
    users = list(node.users)
    return ACTIVATIONS.get(users[0].target) if len(users) == 1 else None


class _Layer:
    """One conv/linear of the int8 graph: where its int8 output and input come from, and its weights."""

    def __init__(self, graph_module: torch.fx.GraphModule, node: torch.fx.Node, output_quantize: torch.fx.Node):
        ops = _quantized_decomposed()
        self.node, self.output_quantize = node, output_quantize
        dequantized_input = node.args[0]
        self.input_quantize = dequantized_input.args[0] if dequantized_input.target == ops.dequantize_per_tensor.default else None
        weight = node.args[1]
        self.weights, self.weight_scales = _dequantized_weights(graph_module, weight)
        bias = node.args[2] if len(node.args) > 2 else None
        self.bias = _constant(graph_module, bias) if isinstance(bias, torch.fx.Node) else None
        self.kind = LAYER_OPS[node.target]
        self.detail: dict = {"activation": _activation(node)}
        if self.kind == "gemm":
            self.detail["op"] = "FULLY_CONNECTED"
        else:
            # aten.conv2d(input, weight, bias, stride, padding, dilation, groups): trailing defaults are left out
            stride, padding, dilation, groups = (list(node.args[3:]) + [[1, 1], [0, 0], [1, 1], 1][len(node.args) - 3:])[:4]
            if groups > 1:
                self.kind = "dwconv"
            self.detail.update(stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation))

    def capture(self, output: torch.Tensor, quantized_input: torch.Tensor | None) -> Capture:
        scale, zero_point, low, high = (float(a) if i == 0 else int(a) for i, a in enumerate(self.output_quantize.args[1:5]))
        detail = dict(self.detail)
        if quantized_input is not None and detail.get("dilation", (1, 1)) == (1, 1):
            input_scale, input_zero_point = float(self.input_quantize.args[1]), int(self.input_quantize.args[2])
            detail["input"] = _dequantize(quantized_input, input_scale, input_zero_point)
            detail["bias"] = self.bias
        return Capture(f"XNNPACK {self.kind} (int8)", self.kind, _dequantize(output, scale, zero_point), output_scale=scale,
                       output_zero_point=zero_point, output_range=((low - zero_point) * scale, (high - zero_point) * scale),
                       weight_scales=self.weight_scales, weights=self.weights, detail=detail)


def _dequantize(value: torch.Tensor, scale: float, zero_point: int) -> np.ndarray:
    return ((value.to(torch.int32) - zero_point).float() * scale).numpy()


def _attribute(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> torch.Tensor:
    return functools.reduce(getattr, node.target.split("."), graph_module)  # targets are dotted paths


def _constant(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> np.ndarray | None:
    if node.op != "get_attr":
        return None
    return _attribute(graph_module, node).detach().float().numpy()


def _dequantized_weights(graph_module: torch.fx.GraphModule, weight: torch.fx.Node) -> tuple[np.ndarray | None, np.ndarray | None]:
    ops = _quantized_decomposed()
    if weight.target == ops.dequantize_per_channel.default:
        values, scales, zero_points, axis = (weight.args[0], weight.args[1], weight.args[2], weight.args[3])
        q, s, z = (_attribute(graph_module, n) for n in (values, scales, zero_points))
        shape = [1] * q.dim()
        shape[axis] = -1
        return ((q.to(torch.int32) - z.reshape(shape)).float() * s.reshape(shape)).numpy(), s.float().numpy()
    if weight.target == ops.dequantize_per_tensor.default:
        q = _attribute(graph_module, weight.args[0])
        scale, zero_point = float(weight.args[1]), int(weight.args[2])
        return _dequantize(q, scale, zero_point), np.array([scale], np.float32)
    return None, None


def tapped_graph(graph_module: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, int, list[_Layer], list[torch.fx.Node]]:
    """The int8 graph returning, after its own outputs, every layer's int8 output and input:
    -> (graph, how many outputs it had, the layers, the tapped quantize nodes in output order)."""
    graph = graph_module.graph
    layers = []
    for node in graph.nodes:
        if node.op == "call_function" and node.target in LAYER_OPS:
            quantize = _quantize_after(node)
            if quantize is None:
                continue  # a layer kept in float: nothing int8 to compare
            layers.append(_Layer(graph_module, node, quantize))
    output = next(node for node in graph.nodes if node.op == "output")
    original = list(output.args[0]) if isinstance(output.args[0], (tuple, list)) else [output.args[0]]
    taps = []
    for layer in layers:
        taps += [layer.output_quantize] + ([layer.input_quantize] if layer.input_quantize is not None else [])
    # each tensor once: XNNPACK's layout pass cannot return one tensor twice
    taps = [tap for tap in dict.fromkeys(taps) if tap not in original]
    output.args = (tuple(original) + tuple(taps),)
    graph._codegen = torch.fx.graph.CodeGen()  # flat outputs: the pytree spec was for the original ones
    graph_module.recompile()
    return graph_module, len(original), layers, taps


_LAST_REBUILD: dict = {}  # one entry: debugging the same artifact again (or a copy of it) lowers once


def _tapped_program(manifest: dict, rebuild) -> tuple[bytes, int, list[_Layer], list[torch.fx.Node]]:
    # everything the program is a function of, as the manifest records it (the rebuild checks the calibration hash)
    key = json.dumps([manifest.get("checkpoint_sha256"), manifest.get("provenance"), manifest.get("quantization"),
                      manifest.get("target_options")], sort_keys=True)
    if key not in _LAST_REBUILD:
        job = rebuild()
        graph, outputs, layers, taps = tapped_graph(program_model(job))
        _LAST_REBUILD.clear()
        _LAST_REBUILD[key] = (to_program(graph, job.example), outputs, layers, taps)  # the bytes stay referenced: the runtime reads them
    return _LAST_REBUILD[key]


def capture(path, manifest: dict | None, images: np.ndarray, rebuild=None, load=None, threads: int = 1) -> list[list[Capture]]:
    """Per image, every int8 conv/linear output of the artifact's program, as XNNPACK computed it.
    `load(path, manifest, threads)`: the target's runner over the artifact itself (Target.load)."""
    from executorch.runtime import Runtime

    if rebuild is None or load is None:
        raise UserError("ExecuTorch's per-layer outputs need the artifact rebuilt from its checkpoint and calibration images")
    if (manifest or {}).get("precision") != "int8":
        raise UserError(f"{path.name} is not int8: debug compares int8 artifacts with their fp32 model")
    torch.set_num_threads(threads)  # the rebuilt program runs here, with the thread count asked for, as the artifact does in its runner
    program, outputs, layers, taps = _tapped_program(manifest, rebuild)
    method = Runtime.get().load_program(program).load_method("forward")
    with closing(load(path, manifest, threads=threads)) as artifact:  # the artifact itself runs only in a runner process
        expected_all = artifact(np.ascontiguousarray(images, dtype=np.float32))
    position = {tap: outputs + index for index, tap in enumerate(taps)}
    per_image = []
    for index, image in enumerate(images):
        sample = np.ascontiguousarray(image[None], dtype=np.float32)
        values = method.execute([torch.from_numpy(sample)])
        expected = [e[index : index + 1] for e in expected_all]
        if any(not np.array_equal(values[i].float().numpy(), e) for i, e in enumerate(expected)):
            raise UserError(f"{path.name} is not the program its checkpoint, recipe and calibration images build here (its outputs differ "
                            "from the rebuild's): it was changed after conversion, or built with other tools; re-run convert --force")
        per_image.append([layer.capture(values[position[layer.output_quantize]],
                                        values[position[layer.input_quantize]] if layer.input_quantize in position else None)
                          for layer in layers])
    return per_image
