"""Inside an OpenVINO IR in the CPU plugin: per-op times, and per-layer tensors for debug.

Profile: the plugin's own performance counters. The plugin fuses as it compiles (a FakeQuantize and
its activation into the convolution before them), so an op here is an executed node of the compiled
graph, named after the first source node it holds; `exec_type` names the kernel that ran it
("brgconv_avx2_I8", "jit_avx2_dw_FP32"), which says its precision. Nodes the plugin skipped
(constants, no-op reorders) are left out.

Capture: every convolution's and linear's output as the next layer receives it, read from the IR
compiled with those tensors added as outputs (as TFLite's capture does): after its bias, its
activation (ReLU6 is a Clamp) and, in an int8 IR, the FakeQuantize that NNCF put there, whose
range and levels are the int8 grid the CPU plugin computes on. The IR's node names carry the source
module (`__module.features.3.conv.0.0/aten::_convolution/Convolution`): each capture names its layer,
and debug puts them in the model's call order by that name (edgemnv2.layerwise.source.in_source_order),
not by the graph's topological order, in which parallel heads may come in any order.
"""

import copy
from pathlib import Path

import numpy as np

from edgemnv2.device.runtime_adapters import openvino_compiled, openvino_expected_hint
from edgemnv2.layerwise.records import Capture, RuntimeOp

KINDS = {"Convolution": "conv", "GroupConvolution": "dwconv", "FullyConnected": "gemm", "MatMul": "gemm"}


def _kind(node_type: str) -> str:
    """The plugin's node types, its variants too ("FullyConnectedQuantizedLegacy": an int8 linear)."""
    return next((kind for prefix, kind in KINDS.items() if node_type.startswith(prefix)), "other")


def _dtype(exec_type: str) -> str:
    kernel = exec_type.lower()
    for marker, dtype in (("i8", "int8"), ("u8", "int8"), ("bf16", "bf16"), ("f16", "fp16"), ("fp32", "fp32"), ("f32", "fp32")):
        if kernel.endswith(marker):
            return dtype
    return "other"


def profile(path: Path, manifest: dict, threads: int, sample: np.ndarray, runs: int = 30) -> list[RuntimeOp]:
    import openvino as ov

    request = openvino_compiled(path, threads, expected=openvino_expected_hint(manifest), PERF_COUNT=True).create_infer_request()
    value = np.ascontiguousarray(sample[:1], np.float32)
    request.infer({0: value})  # warm-up: the first call also allocates
    times: dict[str, list[float]] = {}
    kernels: dict[str, tuple[str, str]] = {}
    for _ in range(runs):
        request.infer({0: value})
        for entry in request.get_profiling_info():  # in execution order
            if entry.status != ov.ProfilingInfo.Status.EXECUTED:
                continue
            times.setdefault(entry.node_name, []).append(entry.real_time.total_seconds() * 1000.0)
            kernels[entry.node_name] = (entry.node_type, entry.exec_type)
    ops = []
    for name, samples in times.items():
        node_type, exec_type = kernels[name]
        ops.append(RuntimeOp(f"{node_type} {name} ({exec_type})", float(np.median(samples)), _kind(node_type), _dtype(exec_type)))
    return ops


CAPTURED = {"Convolution": "conv", "GroupConvolution": "dwconv", "MatMul": "gemm"}
ACTIVATIONS = ("Clamp", "Relu")


def _only_consumer(node, type_names: tuple[str, ...]):
    consumers = [target.get_node() for target in node.output(0).get_target_inputs()]
    return consumers[0] if len(consumers) == 1 and consumers[0].get_type_name() in type_names else None


def _captured_output(compute):
    """-> (the node whose output the next layer receives, its FakeQuantize or None): the compute op,
    then its bias add (a constant operand: a residual add has none), activation and FakeQuantize."""
    node = compute
    add = _only_consumer(node, ("Add",))
    if add is not None and any(add.input_value(i).get_node().get_type_name() == "Constant" for i in (0, 1)):
        node = add
    node = _only_consumer(node, ACTIVATIONS) or node
    quantize = _only_consumer(node, ("FakeQuantize",))
    return (quantize or node), quantize


def _source_module(friendly_name: str) -> str:
    """`__module.features.3.conv.0.0/aten::_convolution/Convolution` -> `features.3.conv.0.0`."""
    return friendly_name.split("/", 1)[0].removeprefix("__module.")


def _grid(quantize) -> dict:
    """A FakeQuantize's output grid as a Capture's scale, zero point and range. NNCF may give an
    activation one range per channel (before a depthwise convolution): the Capture then carries the
    coarsest step and the widest range, and every channel's step in its detail."""
    low, high = (np.ravel(quantize.input_value(i).get_node().get_data()).astype(np.float64) for i in (3, 4))
    scales = (high - low) / (int(quantize.get_attributes()["levels"]) - 1)
    coarsest = int(np.argmax(scales))
    grid = {"output_scale": float(scales[coarsest]), "output_zero_point": int(round(-low[coarsest] / scales[coarsest])),
            "output_range": (float(low.min()), float(high.max()))}
    if scales.size > 1:
        grid["detail"] = {"output_scales": scales.tolist(), "output_lows": low.tolist()}
    return grid


def capture(path: Path, manifest: dict | None, images: np.ndarray, rebuild=None, threads: int = 1) -> list[list]:
    """Per image, every conv / depthwise / linear output as the CPU plugin computed it, in the graph's
    order, each naming its source module."""

    taps, output_index = [], []  # (compute node, captured node, its FakeQuantize); each tap's index among the outputs

    def add_outputs(model):
        for node in model.get_ordered_ops():
            if node.get_type_name() in CAPTURED:
                taps.append((node, *_captured_output(node)))
        # a tensor that is an output already (the logits) is not added again: its Result is returned
        added = model.add_outputs([tapped.output(0) for _, tapped, _ in taps])
        results = [output.get_node().get_friendly_name() for output in model.outputs]
        output_index.extend(results.index(output.get_node().get_friendly_name()) for output in added)

    compiled = openvino_compiled(path, threads, edit=add_outputs, expected=openvino_expected_hint(manifest))
    # what each tap says of itself, read once from the graph (its name, kind, source module and int8 grid)
    described = [dict(name=compute.get_friendly_name(), kind=CAPTURED[compute.get_type_name()], layer=_source_module(compute.get_friendly_name()),
                      **(_grid(quantize) if quantize is not None else {})) for compute, _, quantize in taps]
    request = compiled.create_infer_request()
    per_image = []
    for image in images:
        request.infer({0: np.ascontiguousarray(image[None], np.float32)})
        per_image.append([Capture(value=np.asarray(request.get_output_tensor(index).data, np.float32).copy(), **copy.deepcopy(description))
                          for description, index in zip(described, output_index)])
    return per_image
