"""ExecuTorch .pte with the XNNPACK delegate: fp32, fp16 (XNNPACK's float16 kernels, float32 input
and outputs), int8 via the XNNPACK PT2E quantizer, or int8_dynamic (XNNPACK's dynamically quantized
convolutions: int8 weights, each activation quantized per call; depthwise convolutions stay float,
which XNNPACK's quantizer does not annotate dynamically)."""

import copy
import json
from pathlib import Path

import torch

from quantization import qat
from quantization.delegable import nearest_upsampling_as_copies
from quantization.ptq import xnnpack_dynamic_int8_graph, xnnpack_int8_graph

from . import executorch_capture, executorch_ops
from .file_kinds import flatbuffer_identified
from .base import ConversionJob, Target, TargetSpec, decode_option, self_description

SPEC = TargetSpec("executorch", ".pte", ("fp32", "fp16", "int8", "int8_dynamic"), runtime="ExecuTorch runtime, XNNPACK delegate",
                  runtime_modules=("executorch",), device_runtime="executorch", tool_packages=("executorch",))


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


def lower(job: ConversionJob) -> bytes:
    # constant methods: what the program is, readable on the device without a sidecar file
    carried = {DESCRIPTION_METHOD: json.dumps(self_description(job)), "class_names": list(job.meta.class_names)}
    return to_program(program_model(job), job.example, carried)


DESCRIPTION_METHOD = "edgemnv2_json"  # a constant method returning the self-description as one JSON string


def convert(job: ConversionJob, dest: Path) -> dict:
    dest.write_bytes(lower(job))
    return {"carries": f"constant methods {DESCRIPTION_METHOD}() (JSON: task, classes, preprocessing, outputs) and class_names()"}


def carried_description(path: Path) -> dict:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path))
    if DESCRIPTION_METHOD not in program.method_names:
        return {}
    return json.loads(program.load_method(DESCRIPTION_METHOD).execute([])[0])



TARGET = Target(SPEC, convert, describe=carried_description, options=(decode_option("host"),),
                profile=executorch_ops.profile, capture=executorch_capture.capture, peak_gemm=executorch_ops.peak_gemm,
                recognizes=flatbuffer_identified(b"ET12"), capture_rebuilds=True, profile_starts_processes=True,
                fake_quantization=qat.XNNPACK)
