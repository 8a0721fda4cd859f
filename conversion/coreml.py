"""CoreML .mlpackage (ML Program): fp32, fp16, W8A8 int8 and weight-only int8.

W8A8 is calibrated in PyTorch (the XNNPACK PT2E graph, then converted), because CoreML cannot
predict on Linux and coremltools' own activation calibration needs prediction. CoreML artifacts
convert everywhere but run only on macOS: on Linux `load` raises RuntimeUnavailable, and accuracy
can only be *simulated* by running the exact quantized torch graph that was converted
(`simulation_runner`), which reports must label as simulated. That graph is kept beside the
package as `<artifact>.simulation.safetensors` (conversion/program_file.py: loads without pickle
or exec; the .pt2 format this replaced could run code from a crafted file).
"""

import platform
import sys
from pathlib import Path

import numpy as np
import torch

from edgemnv2.artifacts import ArtifactRefused

from .base import SIDECARS, ConversionJob, Runner, RuntimeUnavailable, Target, TargetSpec, per_sample, sidecar_path, sidecar_temp
from .program_file import load_program, save_program

SPEC = TargetSpec(
    "coreml", ".mlpackage", ("fp32", "fp16", "int8", "int8_weights"),
    runtime="Core ML (macOS/iOS only)", runtime_modules=("coremltools",), device_runtime="coreml",
    tool_packages=("coremltools", "executorch"), notes="converts on Linux; runs only on macOS", runs_on="macOS only",
    deterministic=False,
    nondeterminism="coremltools names the .mlpackage's items with fresh UUIDs in Manifest.json; the program and weights are the same",
)
MACOS_ONLY = "CoreML runs only on macOS"


def _quiet_coremltools():
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="coremltools")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct

    return ct


SIMULATION_SUFFIX = ".simulation.safetensors"  # the exact torch program that was converted, for Linux reports
UNSAFE_OLD_SUFFIX = ".simulation.pt2"  # written by edgemnv2 before 2026-11-28; never loaded
WEIGHT_THRESHOLD = 2048  # coremltools leaves smaller weights in float (OpLinearQuantizerConfig default)


def source_program(job: ConversionJob) -> torch.export.ExportedProgram:
    """The torch program handed to coremltools (the XNNPACK PT2E graph for W8A8)."""
    model = job.xnnpack_int8_graph() if job.precision.name == "int8" else job.model
    return torch.export.export(model, (job.example,))


def to_mlmodel(job: ConversionJob, program: torch.export.ExportedProgram | None = None):
    ct = _quiet_coremltools()
    exported = (program or source_program(job)).run_decompositions({})
    precision = ct.precision.FLOAT16 if job.precision.name == "fp16" else ct.precision.FLOAT32
    mlmodel = ct.convert(
        exported, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
        compute_precision=precision, skip_model_load=True,
    )
    if job.precision.name == "int8_weights":
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD))
        mlmodel = linear_quantize_weights(mlmodel, config)
    return mlmodel


def convert(job: ConversionJob, dest: Path) -> dict:
    program = source_program(job)
    mlmodel = to_mlmodel(job, program)
    mlmodel.save(str(dest))
    simulation = sidecar_temp(dest, SIMULATION_SUFFIX)
    save_program(program, simulation)
    return {"runs_on": "macOS only", "simulation": SIMULATION_DESCRIPTION[job.precision.name], SIDECARS: {SIMULATION_SUFFIX: simulation}}


SIMULATION_DESCRIPTION = {
    "fp32": "the converted fp32 torch program",
    "fp16": "the converted torch program run in float16",
    "int8": "the converted W8A8 PT2E torch program (same quantize/dequantize as the .mlpackage)",
    "int8_weights": "the converted fp32 program with weights rounded to per-channel symmetric int8, as coremltools does",
}


def _round_weights_int8(module: torch.nn.Module) -> None:
    """Per-output-channel symmetric int8 rounding of conv/linear weights (coremltools' linear_symmetric)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2 and param.numel() >= WEIGHT_THRESHOLD:
                scale = param.abs().amax(dim=tuple(range(1, param.ndim)), keepdim=True).clamp_min(1e-12) / 127.0
                param.copy_(torch.clamp(torch.round(param / scale), -127, 127) * scale)


def simulation_runner(path: Path, manifest: dict) -> Runner:
    """Run, in PyTorch, the exact program that was converted: the CoreML figures on Linux are
    *simulated* and must be labelled so. fp16 runs the program in float16 on CPU."""
    if sidecar_path(path, manifest, UNSAFE_OLD_SUFFIX) is not None:
        raise ArtifactRefused(f"{path.name} was converted by an older edgemnv2 whose .pt2 simulation file could run code when loaded; "
                              "it is not loaded: re-run convert --force")
    simulation = sidecar_path(path, manifest, SIMULATION_SUFFIX)
    if simulation is None or not simulation.is_file():
        raise RuntimeUnavailable(f"{MACOS_ONLY}, and {path.name} has no simulation program beside it")
    module = load_program(simulation.read_bytes(), simulation.name)
    precision = manifest["precision"]
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if precision == "int8_weights":
        _round_weights_int8(module)
    if precision == "fp16":
        module = module.to(torch.float16)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(batch)).to(dtype))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().numpy() for o in out]

    return per_sample(run)


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


TARGET = Target(SPEC, convert, load, simulate=simulation_runner)
