"""CoreML .mlpackage (ML Program): fp32, fp16, W8A8 int8 and weight-only int8.

W8A8 is calibrated in PyTorch (the XNNPACK PT2E graph, then converted), because CoreML cannot
predict on Linux and coremltools' own activation calibration needs prediction. CoreML artifacts
convert everywhere but run only on macOS: on Linux `load` raises RuntimeUnavailable, and accuracy
can only be *simulated* by running the exact quantized torch graph that was converted
(`simulation_runner`), which reports must label as simulated.
"""

import platform
import sys
from pathlib import Path

import numpy as np
import torch

from quantization.ptq import xnnpack_int8_graph

from .base import ConversionJob, Runner, RuntimeUnavailable, TargetSpec, per_sample

SPEC = TargetSpec(
    "coreml", ".mlpackage", ("fp32", "fp16", "int8", "int8_weights"),
    runtime="Core ML (macOS/iOS only)", notes="converts on Linux; runs only on macOS",
)
MACOS_ONLY = "CoreML runs only on macOS"


def _quiet_coremltools():
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="coremltools")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct

    return ct


def to_mlmodel(job: ConversionJob):
    ct = _quiet_coremltools()
    model = xnnpack_int8_graph(job) if job.precision == "int8" else job.model
    exported = torch.export.export(model, (job.example,)).run_decompositions({})
    precision = ct.precision.FLOAT16 if job.precision == "fp16" else ct.precision.FLOAT32
    mlmodel = ct.convert(
        exported, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
        compute_precision=precision, skip_model_load=True,
    )
    if job.precision == "int8_weights":
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel"))
        mlmodel = linear_quantize_weights(mlmodel, config)
    return mlmodel


def convert(job: ConversionJob, dest: Path) -> dict:
    mlmodel = to_mlmodel(job)
    mlmodel.save(str(dest))
    return {"runs_on": "macOS only", "simulated_on_linux": job.precision != "int8_weights"}


def op_types(path: Path) -> dict[str, int]:
    """Count MIL op types in a saved .mlpackage (structural checks on Linux)."""
    ct = _quiet_coremltools()
    spec = ct.utils.load_spec(str(path))
    counts: dict[str, int] = {}
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def load(path: Path, manifest: dict, threads: int = 2) -> Runner:
    if sys.platform != "darwin":
        raise RuntimeUnavailable(f"{MACOS_ONLY} (this is {platform.system()})")
    ct = _quiet_coremltools()
    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    spec = model.get_spec()
    input_name = spec.description.input[0].name
    output_names = [o.name for o in spec.description.output]

    def run_one(sample: np.ndarray) -> list[np.ndarray]:
        result = model.predict({input_name: sample})
        return [np.asarray(result[name], np.float32) for name in output_names]

    return per_sample(run_one)
