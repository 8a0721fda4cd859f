"""What an ExecuTorch artifact is built from: the model its precision lowers (the folded network, its
float16 form, or its XNNPACK int8 graph) and the lowering to .pte bytes. Shared by the converter, the
per-op profiler's GEMM peak and debug's tapped rebuild."""

import copy

import torch

from quantization.delegable import nearest_upsampling_as_copies
from quantization.ptq import xnnpack_dynamic_int8_graph, xnnpack_int8_graph

from .base import ConversionJob


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
            if rewritten else job.xnnpack_int8_graph()
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
