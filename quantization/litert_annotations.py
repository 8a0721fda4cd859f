"""Annotations litert-torch's PT2E quantizer misses, so a TFLite int8 artifact is int8 end to end.

litert-torch 0.10 finds adds through `get_source_partitions`, which needs the `source_fn_stack`
metadata that torch.export 2.14 no longer records. It therefore annotated no add of its own; an add
between two quantized convs came out int8 only because the converter fused the dequantize-add-
quantize around it, and every residual add fed by another add (chained bottlenecks, the detector's
neck) stayed float: MobileNetV2 1.0's .tflite had 9 float ADDs wrapped in 13 DEQUANTIZE and 9
QUANTIZE ops, and the detector's nearest-neighbour upsamples were float too. A "full int8" model
that is not (an int8-only NPU rejects it) and slower than it should be on XNNPACK.

We annotate by aten op instead, which cannot miss a node. tests/test_conversion.py checks that the
int8 .tflite has no float op.
"""

import torch
from torch.fx import GraphModule, Node

ADD_OPS = (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)
# Resizes move values without computing new ones: TFLite's int8 RESIZE_NEAREST_NEIGHBOR needs the
# output to share the input's scale and zero point.
SHARED_SCALE_OPS = (torch.ops.aten.upsample_nearest2d.vec, torch.ops.aten.upsample_nearest2d.default)


def _is_annotated(node: Node) -> bool:
    annotation = node.meta.get("quantization_annotation")
    return annotation is not None and annotation._annotated


def annotate_missed_ops(graph_module: GraphModule, config) -> int:
    """Annotate every un-annotated add and nearest upsample with `config`; return how many."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    annotated = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or _is_annotated(node):
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


def full_int8_litert_quantizer(config):
    """litert-torch's PT2EQuantizer with `config` global, plus the annotations it misses."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    class FullInt8PT2EQuantizer(PT2EQuantizer):
        def annotate(self, model: GraphModule) -> GraphModule:
            model = super().annotate(model)
            annotate_missed_ops(model, self.global_config)
            return model

    return FullInt8PT2EQuantizer().set_global(config)
