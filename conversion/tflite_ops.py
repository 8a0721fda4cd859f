"""Inside a `.tflite` as the LiteRT interpreter runs it: per-op times and per-op outputs.

The Python interpreter has no op profiler (the C++ benchmark tool's --enable_op_profiling is not
in the wheel), so times come from prefixes: for each k, the same flatbuffer cut after op k (its
outputs: every tensor the rest of the graph would still read) runs in the interpreter with its
default XNNPACK delegate, round-robin with the other prefixes; op k's time is the growth of the
median from prefix k-1 to prefix k. The prefixes add up, by construction, to the whole model;
the first row carries the interpreter's invoke overhead. There is no cut after an op XNNPACK folds
into the next (FUSED_INTO_NEXT): the next op's row carries the pair. Where another cut still
measures less than the cut before it, the two share their time (`nondecreasing`). Which ops XNNPACK took comes from the
interpreter itself: with delegate node fusion off, every delegated op is its own DELEGATE node.

Outputs come from one run of the flatbuffer with every op's output made a graph output, so the
numbers are XNNPACK's, not the reference kernels' that `experimental_preserve_all_tensors` forces.
"""

import time
from pathlib import Path

import numpy as np

from edgemnv2.layerwise.peak import gmacs_of
from edgemnv2.layerwise.records import Capture, RuntimeOp
from quantization.ptq import pt2e_quantize

from .gemm_peak import gemm_model, recipe
from .tflite_app import pack_model
from .tflite_interpreter import input_encoder, make_interpreter, operator_names, to_input
from .tflite_quantizer import LITERT

KINDS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "dwconv", "FULLY_CONNECTED": "gemm", "TRANSPOSE_CONV": "conv"}
FUSED_ACTIVATIONS = {0: None, 1: "relu", 3: "relu6"}  # schema ActivationFunctionType: NONE, RELU, RELU6
# Ops XNNPACK folds into the op that reads them (a PAD into its conv's padding). Measured on the demo
# detector: its 5 PADs removed (convs given the padding) saved 0.01 ms, while cuts after them
# charged them 0.12 ms (fp32) and 0.34 ms (int8).
FUSED_INTO_NEXT = ("PAD",)


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def read_graph(path: Path):
    model = _schema().ModelT.InitFromPackedBuf(bytearray(Path(path).read_bytes()), 0)
    names = operator_names()
    graph = model.subgraphs[0]
    op_names = [names.get(max(model.operatorCodes[op.opcodeIndex].builtinCode, model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode), "CUSTOM")
                for op in graph.operators]
    return model, graph, op_names


def _with_outputs(model, graph, operators, outputs) -> bytes:
    """The model with only `operators` and these graph outputs (and no signature: they would name
    outputs it no longer has)."""
    kept_ops, kept_outputs, kept_signatures = graph.operators, graph.outputs, model.signatureDefs
    graph.operators, graph.outputs, model.signatureDefs = operators, list(outputs), []
    try:
        return pack_model(model)
    finally:
        graph.operators, graph.outputs, model.signatureDefs = kept_ops, kept_outputs, kept_signatures


def _interpreter(content: bytes, threads: int, **options):
    return make_interpreter(None, threads, content, **options)


def _input_value(interpreter, path: Path, manifest: dict | None, sample: np.ndarray) -> np.ndarray:
    return input_encoder(interpreter.get_input_details()[0], path, manifest)(sample[:1])


def delegated_ops(content: bytes, graph, threads: int) -> set[int]:
    """Indices of the ops XNNPACK took (with fusion off, each is a DELEGATE node with its outputs)."""
    interpreter = _interpreter(content, threads, experimental_disable_delegate_node_fusion=True)
    native = interpreter._interpreter
    produced = set()
    for node in range(native.NumNodes()):
        if native.NodeName(node) == "DELEGATE":
            produced.update(int(t) for t in native.NodeOutputs(node))
    return {i for i, op in enumerate(graph.operators) if any(int(t) in produced for t in op.outputs)}


def nondecreasing(values: list[float]) -> list[float]:
    """The closest non-decreasing sequence (pool adjacent violators): a longer prefix cannot take
    less time, but one can measure less when an op XNNPACK would fuse into its consumer (a PAD into
    the next conv) has to be materialised because it ends the shorter prefix. Pooling shares such a
    pair's time between the two instead of charging it all to the first."""
    blocks: list[list[float]] = []  # [mean, count]
    for value in values:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (mean_a, count_a), (mean_b, count_b) = blocks[-2], blocks[-1]
            blocks[-2:] = [[(mean_a * count_a + mean_b * count_b) / (count_a + count_b), count_a + count_b]]
    return [mean for mean, count in blocks for _ in range(count)]


def _macs(graph, op, name: str) -> int | None:
    def shape(index):
        return [int(d) for d in graph.tensors[index].shape]

    out = shape(op.outputs[0])
    if name == "CONV_2D":
        weight = shape(op.inputs[1])  # O, H, W, I
        return int(np.prod(out)) * weight[1] * weight[2] * weight[3]
    if name == "DEPTHWISE_CONV_2D":
        weight = shape(op.inputs[1])  # 1, H, W, C
        return int(np.prod(out)) * weight[1] * weight[2]
    if name == "FULLY_CONNECTED":
        return int(np.prod(out)) * shape(op.inputs[1])[1]
    return None


def _dtype(graph, op) -> str:
    schema = _schema()
    types = {schema.TensorType.INT8: "int8", schema.TensorType.UINT8: "int8", schema.TensorType.FLOAT32: "fp32", schema.TensorType.FLOAT16: "fp16"}
    return types.get(graph.tensors[op.outputs[0]].type, "other")


def profile(path: Path, manifest: dict, threads: int, sample: np.ndarray, runs: int = 30) -> list[RuntimeOp]:
    model, graph, op_names = read_graph(path)
    operators = list(graph.operators)
    graph_outputs = set(graph.outputs)
    consumers_after = [set() for _ in operators]  # tensors that ops after k read
    read_later: set[int] = set()
    for k in range(len(operators) - 1, -1, -1):
        consumers_after[k] = set(read_later)
        read_later.update(t for t in operators[k].inputs if t >= 0)
    # no cut after an op XNNPACK folds into the next one: the cut would make it materialise its output
    fused = {k for k, name in enumerate(op_names[:-1]) if name in FUSED_INTO_NEXT and operators[k].outputs[0] in operators[k + 1].inputs}
    cuts = [k for k in range(len(operators)) if k not in fused]
    prefixes, produced = {}, []
    for k, op in enumerate(operators):
        produced += [t for t in op.outputs if t >= 0]
        if k in fused:
            continue
        frontier = [t for t in produced if t in consumers_after[k] or t in graph_outputs or t in op.outputs]
        prefixes[k] = _interpreter(_with_outputs(model, graph, operators[: k + 1], frontier), threads)
    first = prefixes[cuts[0]]
    input_index = first.get_input_details()[0]["index"]
    value = _input_value(first, path, manifest, sample)
    for interpreter in prefixes.values():
        interpreter.set_tensor(input_index, value)
        interpreter.invoke()
    times = {k: [] for k in cuts}
    for _ in range(runs):  # round-robin: the machine's drift spreads over every prefix alike
        for k in cuts:
            start = time.perf_counter()
            prefixes[k].invoke()
            times[k].append((time.perf_counter() - start) * 1000)
    at_cut = dict(zip(cuts, nondecreasing([float(np.median(times[k])) for k in cuts])))
    delegated = delegated_ops(_with_outputs(model, graph, operators, graph.outputs), graph, threads)
    ops, previous = [], 0.0
    for k, (op, name) in enumerate(zip(operators, op_names)):
        ms = 0.0 if k in fused else at_cut[k] - previous
        previous = at_cut.get(k, previous)
        label = (name + (" (+ invoke overhead)" if k == cuts[0] else "") + (" (fused into the next op: timed with it)" if k in fused else "")
                 + ("" if k in delegated else " (not delegated)"))
        ops.append(RuntimeOp(label, float(ms), KINDS.get(name, "other"), _dtype(graph, op), delegated=k in delegated, macs=_macs(graph, op, name)))
    return ops


def peak_gemm(dtype: str, threads: int) -> float:
    import litert_torch

    model, example, calibration = gemm_model()
    if dtype == "int8":
        from litert_torch.quantize.quant_config import QuantConfig

        quantizer = LITERT.build(recipe(), False)
        quantized = pt2e_quantize(model, example, quantizer, calibration, fold_quantize=False)
        edge_model = litert_torch.convert(quantized, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    else:
        edge_model = litert_torch.convert(model, (example,))
    interpreter = _interpreter(edge_model.model_content(), threads)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], to_input(example.numpy(), detail))
    return gmacs_of(interpreter.invoke)


def _dequantized(interpreter, index: int, tensor) -> np.ndarray:
    value = interpreter.get_tensor(index)
    quantization = tensor.quantization
    if value.dtype in (np.int8, np.uint8, np.int32) and quantization is not None and quantization.scale is not None and len(quantization.scale):
        scale, zero_point = np.asarray(quantization.scale, np.float32), np.asarray(quantization.zeroPoint, np.float32)
        axis = quantization.quantizedDimension
        shape = [1] * value.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        return (value.astype(np.float32) - zero_point.reshape(shape)) * scale.reshape(shape)
    return value.astype(np.float32)


def _nchw(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value.transpose(0, 3, 1, 2)) if value.ndim == 4 else value


def _weights_oihw(value: np.ndarray, name: str) -> np.ndarray:
    if name == "CONV_2D":  # O H W I
        return value.transpose(0, 3, 1, 2)
    if name == "DEPTHWISE_CONV_2D":  # 1 H W C -> C 1 H W
        return value.transpose(3, 0, 1, 2)
    return value  # FULLY_CONNECTED: O I


def capture(path: Path, manifest: dict | None, images: np.ndarray, rebuild=None, threads: int = 1) -> list[list[Capture]]:
    """Per image, every conv / depthwise / fully-connected output, as XNNPACK computed it (the
    every-output model is built once for all the images)."""
    model, graph, op_names = read_graph(path)
    produced = [t for op in graph.operators for t in op.outputs if t >= 0]
    interpreter = _interpreter(_with_outputs(model, graph, list(graph.operators), produced), threads=threads)
    input_index = interpreter.get_input_details()[0]["index"]
    per_image = []
    for image in images:
        interpreter.set_tensor(input_index, _input_value(interpreter, path, manifest, image[None]))
        interpreter.invoke()
        per_image.append(_captures(interpreter, graph, op_names))
    return per_image


def _captures(interpreter, graph, op_names: list[str]) -> list[Capture]:
    schema = _schema()
    captures = []
    for op, name in zip(graph.operators, op_names):
        if name not in KINDS or name == "TRANSPOSE_CONV":
            continue
        output = graph.tensors[op.outputs[0]]
        quantized = output.type in (schema.TensorType.INT8, schema.TensorType.UINT8)
        detail = {"input": _nchw(_dequantized(interpreter, op.inputs[0], graph.tensors[op.inputs[0]])),
                  "bias": _dequantized(interpreter, op.inputs[2], graph.tensors[op.inputs[2]]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None,
                  "activation": FUSED_ACTIVATIONS.get(getattr(op.builtinOptions, "fusedActivationFunction", 0)),
                  "op": name}
        if name != "FULLY_CONNECTED":
            options = op.builtinOptions
            detail.update(stride=(options.strideH, options.strideW), padding="same" if options.padding == schema.Padding.SAME else "valid")
        weight = graph.tensors[op.inputs[1]]
        weight_scales = np.asarray(weight.quantization.scale, np.float32) if weight.quantization is not None and weight.quantization.scale is not None and len(weight.quantization.scale) else None
        value = _nchw(_dequantized(interpreter, op.outputs[0], output))
        scale = float(output.quantization.scale[0]) if quantized else None
        zero_point = int(output.quantization.zeroPoint[0]) if quantized else None
        low, high = (-128, 127) if output.type == schema.TensorType.INT8 else (0, 255)
        captures.append(Capture(name, KINDS[name], value, output_scale=scale, output_zero_point=zero_point,
                                output_range=((low - zero_point) * scale, (high - zero_point) * scale) if quantized else None,
                                weight_scales=weight_scales, weights=_weights_oihw(_dequantized(interpreter, op.inputs[1], weight), name), detail=detail))
    return captures
