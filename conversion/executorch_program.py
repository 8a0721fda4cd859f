"""What an ExecuTorch artifact is built from: the model its precision lowers (the folded network, its
float16 form, or its XNNPACK int8 graph) and the lowering to .pte bytes. Shared by the converter, the
per-op profiler's GEMM peak and debug's tapped rebuild."""

import copy

import torch

from quantization.annotations import leave_float_modules_unannotated, quantize_clamps_after_their_producer, with_annotation_fixes
from quantization.delegable import nearest_upsampling_as_copies
from quantization.ptq import QuantRecipe, TargetQuantizer, pt2e_int8_graph, pt2e_quantize, with_activation_observer

from .job import ConversionJob


def _xnnpack_quantizer(recipe: QuantRecipe, qat: bool = False):
    """XNNPACK's symmetric int8 config (per channel unless the recipe says per tensor); qat: its fake
    quantization (quantization/qat.py) instead of the recipe's observer."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=recipe.per_channel, is_qat=qat)
    quantizer = XNNPACKQuantizer().set_global(config if qat else with_activation_observer(config, recipe))
    return with_annotation_fixes(quantizer, recipe.float_modules, leave_float_modules_unannotated, quantize_clamps_after_their_producer)


# ExecuTorch's quantizer: what its int8 is, what CoreML W8A8 converts (the same graph), what ExecuTorch's,
# CoreML's and ONNX's QAT simulate, and the --max-drop search's per-layer ranking
XNNPACK = TargetQuantizer("xnnpack", "XNNPACK", _xnnpack_quantizer)


def xnnpack_int8_graph(model: torch.nn.Module, example: torch.Tensor, calibration_images, recipe: QuantRecipe) -> torch.fx.GraphModule:
    """The XNNPACK-quantized PT2E graph (ExecuTorch int8; CoreML W8A8 converts the same graph)."""
    return pt2e_int8_graph(model, example, calibration_images, recipe, XNNPACK)


def xnnpack_dynamic_int8_graph(model: torch.nn.Module, example: torch.Tensor, recipe: QuantRecipe) -> torch.fx.GraphModule:
    """XNNPACK's dynamic quantization (ExecuTorch int8_dynamic): int8 weights (per channel unless
    the recipe says per tensor), activations quantized by the runtime per call. No images: one
    pass of `example` sets the weight observers."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=recipe.per_channel, is_dynamic=True)
    quantizer = with_annotation_fixes(XNNPACKQuantizer().set_global(config), recipe.float_modules, leave_float_modules_unannotated)
    return pt2e_quantize(model, example, quantizer, example.numpy())


def program_model(job: ConversionJob) -> torch.nn.Module:
    """What gets exported and lowered: the folded model, or its XNNPACK int8 graph."""
    # nearest upsampling is not an XNNPACK op: as its exact copy form (views and concatenations) the graph stays
    # one delegate call (quantization/delegable.py has the measurement)
    model, rewritten = nearest_upsampling_as_copies(job.model)
    if job.precision.name == "fp16":
        model = Float16Inside(model)
    if job.precision.name == "int8_dynamic":
        model = xnnpack_dynamic_int8_graph(model, job.example, job.recipe)
    if job.precision.name == "int8":
        model = job.shared(f"xnnpack-int8-delegable-{job.recipe}", lambda: xnnpack_int8_graph(model, job.example, job.require_calibration(), job.recipe)) \
            if rewritten else job.pt2e_int8_graph(XNNPACK)
    return model


class Float16Inside(torch.nn.Module):
    """The network in float16 between a cast in and a cast out: the app feeds and reads float32 as
    for fp32, and XNNPACK runs every layer with its float16 kernels."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = copy.deepcopy(network).half().eval()

    def forward(self, x):
        outputs = self.network(x.half())
        return tuple(o.float() for o in outputs) if isinstance(outputs, tuple) else outputs.float()


def to_program(model: torch.nn.Module, example: torch.Tensor, constant_methods: dict | None = None) -> bytes:
    """export -> XNNPACK partition and lowering -> the .pte bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(model, (example,))
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()], constant_methods=constant_methods)
    return edge.to_executorch().buffer
