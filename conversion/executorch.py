"""ExecuTorch .pte with the XNNPACK delegate: fp32, fp16 (XNNPACK's float16 kernels, float32 input
and outputs), int8 via the XNNPACK PT2E quantizer, or int8_dynamic (XNNPACK's dynamically quantized
convolutions: int8 weights, each activation quantized per call; depthwise convolutions stay float,
which XNNPACK's quantizer does not annotate dynamically)."""

import json
from pathlib import Path

from quantization import qat

from . import executorch_capture, executorch_ops
from .executorch_program import XNNPACK, program_model, to_program
from .file_kinds import flatbuffer_identified
from .job import ConversionJob, self_description
from .target import Target, TargetSpec, decode_option

SPEC = TargetSpec("executorch", ".pte", ("fp32", "fp16", "int8", "int8_dynamic"), runtime="ExecuTorch runtime, XNNPACK delegate",
                  runtime_modules=("executorch",), device_runtime="executorch", tool_packages=("executorch",))


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
                fake_quantization=qat.pt2e_scheme(XNNPACK), pt2e_quantizer=XNNPACK)
