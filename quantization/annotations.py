"""Annotation fixes for the PT2E quantizers, found by measuring their int8 artifacts.

1. ReLU6 over half the codes (both quantizers). litert-torch's and ExecuTorch's XNNPACK quantizers
   let ReLU6 (hardtanh) share its conv's output observer, so every ReLU6 output of MobileNetV2 was
   quantized over the conv's signed range and half the int8 codes went to negatives ReLU6 never
   outputs. `quantize_clamps_after_their_producer` observes the clamp's output instead and leaves
   the conv's unobserved, so the pair still fuses into one op (TFLite CONV_2D with a fused RELU6,
   an XNNPACK conv with an output clamp). Measured on the test classifier, 600 images: ExecuTorch
   int8 26.5 -> 29.7 dB SQNR, 99.2 -> 99.7% top-1 agreement; every op still delegated.
2. Float adds and upsamples in the "full int8" .tflite (litert-torch only). litert-torch 0.10 finds
   adds through `get_source_partitions`, which needs the `source_fn_stack` metadata torch.export
   2.14 no longer records. So it annotated no add: an add between two quantized convs came out int8
   only because the converter fused the dequantize-add-quantize around it, and every residual add
   fed by another add stayed float. MobileNetV2 1.0's .tflite had 9 float ADDs wrapped in 13
   DEQUANTIZE and 9 QUANTIZE ops; the detector's nearest upsamples were float too. An int8-only NPU
   rejects such a model. `annotate_missed_ops` annotates by aten op, which cannot miss a node.
3. (in ptq.remove_dropout) An observer on eval-mode dropout made litert-torch's converter quantize
   the classifier's bias with the scale of an observer it then dropped: each class logit came out
   shifted by up to 0.6. Dropout is removed from the exported graph before annotation.
Fixes 1-3 together took the test classifier's TFLite int8 from 15.2 dB to 29.7 dB SQNR. Tests:
tests/test_conversion.py (no float op in the .tflite; SQNR floors per target).
"""

import torch
from torch.fx import GraphModule, Node

ADD_OPS = (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)
# Resizes move values without computing new ones: TFLite's int8 RESIZE_NEAREST_NEIGHBOR needs the
# output to share the input's scale and zero point.
SHARED_SCALE_OPS = (torch.ops.aten.upsample_nearest2d.vec, torch.ops.aten.upsample_nearest2d.default)
RELU_OPS = (torch.ops.aten.relu.default, torch.ops.aten.relu_.default)
HARDTANH_OPS = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
FUSABLE_PRODUCERS = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)


def _is_annotated(node: Node) -> bool:
    annotation = node.meta.get("quantization_annotation")
    return annotation is not None and annotation._annotated


def path_is(path: str, name: str) -> bool:
    """Whether module path `path` is the module `name`, allowing for wrappers around the model
    (the app graph's `model.`, the detector decode's `net.`): `model.net.backbone.3` is `backbone.3`."""
    return ("." + path).endswith("." + name)


def in_modules(node: Node, names: tuple[str, ...]) -> bool:
    """Whether an exported node comes from one of the named submodules (or their children): its
    module stack lists every enclosing module's path."""
    if not names:
        return False
    stack = node.meta.get("nn_module_stack") or {}
    for path, _ in stack.values():
        qualified = path.replace("L['self'].", "").replace("L['self']", "")
        if any(path_is(qualified, name) for name in names):
            return True
    return False


def leave_float_modules_unannotated(graph_module: GraphModule, config, float_modules: tuple[str, ...] = ()) -> int:
    """Take the quantizer's annotations off every node of the modules kept in float; return how many.

    Neither PT2E quantizer here takes `set_module_name(name, None)` ("not supported yet"), so the
    nodes are annotated and then released: unannotated, XNNPACK runs them in fp32 and TFLite keeps
    them as float ops behind a DEQUANTIZE. A node outside can only share a spec with its own inputs,
    never with a node downstream, so nothing outside refers to what is released.
    """
    released = set()
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or "quantization_annotation" not in node.meta:
            continue
        # a conv kept in float takes its fused activation with it: the quantizers annotate conv+ReLU6
        # as one pattern, whose activation would otherwise refer to the conv's released output
        fused_to_float = (node.target in RELU_OPS + HARDTANH_OPS and isinstance(node.args[0], Node) and node.args[0] in released)
        if in_modules(node, float_modules) or fused_to_float:
            del node.meta["quantization_annotation"]
            released.add(node)
    return len(released)


def annotate_missed_ops(graph_module: GraphModule, config, float_modules: tuple[str, ...] = ()) -> int:
    """Annotate every un-annotated add and nearest upsample with `config` (except in the modules
    kept in float); return how many."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    annotated = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or _is_annotated(node) or in_modules(node, float_modules):
            continue
        if node.target in ADD_OPS:
            inputs = [arg for arg in node.args[:2] if isinstance(arg, Node)]
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={arg: config.input_activation for arg in inputs},
                output_qspec=config.output_activation,
                _annotated=True,
            )
        elif node.target in SHARED_SCALE_OPS:
            source = node.args[0]
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={source: config.input_activation},
                output_qspec=SharedQuantizationSpec((source, node)),
                _annotated=True,
            )
        else:
            continue
        annotated += 1
    return annotated


def _is_fusable_clamp(node: Node) -> bool:
    """ReLU, or ReLU6 as hardtanh(0, 6): the activations a conv can carry fused (TFLite RELU/RELU6,
    an XNNPACK output clamp). Other hardtanh bounds (default -1, 1) stay as the quantizer left them."""
    if node.target in RELU_OPS:
        return True
    return node.target in HARDTANH_OPS and tuple(float(v) for v in node.args[1:3]) == (0.0, 6.0)


def quantize_clamps_after_their_producer(graph_module: GraphModule, config, float_modules: tuple[str, ...] = ()) -> int:
    """conv/linear -> ReLU6/ReLU: observe the clamp's output (its real, non-negative range) instead of
    sharing the conv's signed one; leave the conv's output unobserved so the pair stays fusable."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    fused = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or not _is_fusable_clamp(node):
            continue
        producer = node.args[0]
        if not (isinstance(producer, Node) and producer.target in FUSABLE_PRODUCERS and len(producer.users) == 1 and _is_annotated(producer)):
            continue
        producer.meta["quantization_annotation"].output_qspec = None
        node.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map={}, output_qspec=config.output_activation, _annotated=True)
        fused += 1
    return fused


def with_annotation_fixes(quantizer, float_modules: tuple[str, ...], *fixes):
    """`quantizer`, whose annotate() then runs each fix(graph, global_config, float_modules) after its own pass."""
    own_annotate = quantizer.annotate

    def annotate(model: GraphModule) -> GraphModule:
        model = own_annotate(model)
        for fix in fixes:
            fix(model, quantizer.global_config, tuple(float_modules))
        return model

    quantizer.annotate = annotate
    return quantizer
