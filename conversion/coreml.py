"""CoreML .mlpackage (ML Program): fp32, fp16, W8A8 int8, and compressed weights (int8, int4 per
block, 6- and 4-bit palettized: conversion/coreml_weights.py).

W8A8 is calibrated in PyTorch (the XNNPACK PT2E graph, then converted), because CoreML cannot
predict on Linux and coremltools' own activation calibration needs prediction. CoreML artifacts
convert everywhere but run only on macOS: on Linux `load` raises RuntimeUnavailable, and accuracy
can only be *simulated* by running the exact quantized torch graph that was converted
(`simulation_runner`), which reports must label as simulated. That graph is kept beside the
package as `<artifact>.simulation.safetensors` (conversion/program_file.py: loads without pickle
or exec; the .pt2 format this replaced could run code from a crafted file).

By default the package is app-ready: an image input (`ImageType`, RGB, scale 1/255) so an app
passes a CVPixelBuffer or CGImage, the per-channel mean/std inside the program (`ImageType` has
only one scale), a classifier configuration with the class labels (Xcode's preview and Vision's
VNClassificationObservation), and the model's metadata. `--set coreml.input=tensor` keeps the
normalized NCHW tensor input.
"""

import json
from pathlib import Path

import numpy as np
import torch

from edgemnv2.artifacts import ArtifactRefused, Runner, RuntimeUnavailable, per_sample
from edgemnv2.tasks import get_task
from edgemnv2.version import __version__
from quantization import qat

from . import coreml_weights
from .executorch_program import XNNPACK, xnnpack_int8_graph
from .file_kinds import folder_with
from .job import SELF_DESCRIPTION, ConversionJob, output_names, self_description
from .program_file import load_program, save_program
from .target import Target, TargetOption, TargetSpec, decode_option
from .writer import SIDECARS, sidecar_path, sidecar_temp

INPUT = TargetOption("input", "app", ("app", "tensor"), "app: image input (RGB, 0-255; the preprocessing inside), class labels and "
                     "metadata for Xcode and Vision; tensor: PyTorch's normalized NCHW float input")
IMAGE_INPUT = "image"
PROBABILITIES = "classLabel_probs"  # the classifier's dictionary (class -> softmax probability): Vision's confidences

SPEC = TargetSpec(
    "coreml", ".mlpackage", ("fp32", "fp16", "int8", "int8_weights", "int4_weights", "int6_palettized", "int4_palettized"),
    runtime="Core ML (macOS/iOS only)", runtime_modules=("coremltools",), device_runtime="coreml",
    tool_packages=("coremltools", "executorch"), notes="converts on Linux; runs only on macOS", runs_on="macOS only",
    simulation_note="simulated — CoreML runs only on macOS",
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


class AppProgram(torch.nn.Module):
    """Image in [0, 1] (what ImageType with scale 1/255 gives) -> the network's normalization ->
    its outputs; a classifier also returns softmax probabilities for Core ML's classifier outputs."""

    def __init__(self, model: torch.nn.Module, mean, std, probabilities: bool):
        super().__init__()
        self.model, self.probabilities = model, probabilities
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image):
        out = self.model((image - self.mean) / self.std)
        if self.probabilities:
            return out, torch.softmax(out, dim=1)
        return out


def _app(job: ConversionJob) -> bool:
    return job.options.get("input", INPUT.default) == "app"


def _classifier(job: ConversionJob) -> bool:
    """Whether the package gets Core ML's classifier outputs (class label, class -> probability): for a task
    with a class-scores output (Task.argmax_output)."""
    # Not for fp16: coremltools 9's FP16ComputePrecision pass fixes the output types before the
    # classifier op adds its two outputs, and export then fails (IndexError in get_func_output).
    return get_task(job.meta.task).argmax_output is not None and job.precision.name != "fp16"


FP16_CLASSIFIER_NOTE = ("fp16: no classifier outputs (coremltools 9 cannot add them to an fp16 program); "
                        "the class names are in the user-defined metadata, the logits are the output")


def source_program(job: ConversionJob) -> torch.export.ExportedProgram:
    """The torch program handed to coremltools (the XNNPACK PT2E graph for W8A8)."""
    if not _app(job):
        model = job.pt2e_int8_graph(XNNPACK) if job.precision.name == "int8" else job.model
        return torch.export.export(model, (job.example,))
    preprocessing = job.meta.preprocessing
    mean, std = preprocessing.mean, preprocessing.std
    app = AppProgram(job.model, mean, std, _classifier(job)).eval()
    example = job.example * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    if job.precision.name == "int8":  # calibrate the app program on the same images, as [0, 1] pixels
        images = job.require_calibration() * np.array(std, np.float32)[:, None, None] + np.array(mean, np.float32)[:, None, None]
        app = xnnpack_int8_graph(app, example, images.astype(np.float32), job.recipe)
    return torch.export.export(app, (example,))


def to_mlmodel(job: ConversionJob, program: torch.export.ExportedProgram) -> tuple[object, dict]:
    """The ML Program, and what its weight compression did (for the manifest). A compressed
    precision also leaves `program` holding the package's weights: the simulation is the package."""
    ct = _quiet_coremltools()
    exported = program.run_decompositions({})
    precision = ct.precision.FLOAT16 if job.precision.name == "fp16" else ct.precision.FLOAT32
    if job.precision.name == "fp16" and job.postprocessed:
        precision = ct.transform.FP16ComputePrecision(op_selector=_outside_postprocessing())
    options = {}
    if _app(job):
        height, width = job.meta.preprocessing.input_size
        options["inputs"] = [ct.ImageType(name=IMAGE_INPUT, shape=(1, 3, height, width), scale=1.0 / 255.0, bias=[0.0, 0.0, 0.0],
                                          color_layout=ct.colorlayout.RGB)]
        if _classifier(job):
            # the probabilities are the program's last output, which ClassifierConfig takes by default
            # (naming the outputs as well trips coremltools 9's exporter: its output list is shorter)
            options["classifier_config"] = ct.ClassifierConfig(list(job.meta.class_names))
        else:
            options["outputs"] = [ct.TensorType(name=name) for name in get_task_outputs(job)]
    mlmodel = ct.convert(
        exported, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, coreml_weights.deployment_target(job.precision.name)),
        compute_precision=precision, skip_model_load=True, **options,
    )
    compression = {}
    if coreml_weights.compresses(job.precision.name):
        mlmodel, compression = coreml_weights.compress(mlmodel, job.precision.name, program)
    if _app(job):
        if _classifier(job):
            mlmodel = _name_tensor_outputs(mlmodel, list(get_task_outputs(job)))
        _describe(mlmodel, job)
    return mlmodel, compression


def _outside_postprocessing():
    """An fp16 op selector that keeps the detector's in-graph decode in float32: the decode starts
    at the heatmap's sigmoid (the network has none), and everything computed from it stays fp32.
    coremltools' fp16 pass would otherwise cast top-K's indices to int16 and do the index
    arithmetic in fp16, which is exact only below 2,048 positions."""
    downstream: set[str] = set()

    def inputs_of(op):
        for value in op.inputs.values():
            yield from (value if isinstance(value, (list, tuple)) else (value,))

    def cast_to_fp16(op) -> bool:
        if op.op_type == "sigmoid" or any(getattr(v, "op", None) is not None and v.op.name in downstream for v in inputs_of(op)):
            downstream.add(op.name)
            return False
        return True

    return cast_to_fp16


def get_task_outputs(job: ConversionJob) -> tuple[str, ...]:
    return tuple(output_names(job))


def _name_tensor_outputs(mlmodel, names: list[str]):
    """A classifier's tensor outputs (besides classLabel and the probability dictionary) get the task's names."""
    ct = _quiet_coremltools()
    spec = mlmodel.get_spec()
    description = spec.description
    tensors = [o.name for o in description.output
               if o.name not in (description.predictedFeatureName, description.predictedProbabilitiesName)
               and o.type.WhichOneof("Type") == "multiArrayType"]
    for old, new in zip(tensors, names):
        if old != new:
            ct.utils.rename_feature(spec, old, new)
    return ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)


def _describe(mlmodel, job: ConversionJob) -> None:
    """What Xcode shows in the model's Metadata tab, and what an app can read at run time."""
    import json

    meta = job.meta
    mlmodel.author = "edgemnv2"
    mlmodel.license = "as the source checkpoint's"
    mlmodel.version = f"edgemnv2 {__version__}"
    mlmodel.short_description = f"{meta.arch} {meta.task}, {len(meta.class_names)} classes, {job.precision.name}"
    mlmodel.input_description[IMAGE_INPUT] = (f"RGB image, {meta.preprocessing.input_size[1]}x{meta.preprocessing.input_size[0]} "
                                              f"(stretched to this size); mean/std normalization inside the model")
    mlmodel.user_defined_metadata["preprocessing"] = json.dumps(meta.preprocessing.to_dict())
    mlmodel.user_defined_metadata["class_names"] = json.dumps(meta.class_names)
    mlmodel.user_defined_metadata["outputs"] = json.dumps(list(get_task_outputs(job)))  # the tensors, as every edgemnv2 artifact names them
    mlmodel.user_defined_metadata[SELF_DESCRIPTION] = json.dumps(self_description(job))


def convert(job: ConversionJob, dest: Path) -> dict:
    program = source_program(job)
    mlmodel, compression = to_mlmodel(job, program)
    mlmodel.save(str(dest))
    simulation = sidecar_temp(dest, SIMULATION_SUFFIX)
    save_program(program, simulation)  # after compression: with the package's weights
    record = {"runs_on": "macOS only", "simulation": SIMULATION_DESCRIPTION.get(job.precision.name, PACKAGE_WEIGHTS), **compression,
              SIDECARS: {SIMULATION_SUFFIX: simulation}}
    if _app(job):
        record["input_layout"] = "image: RGB, 0-255 (CVPixelBuffer/CGImage; ImageType scale 1/255, the mean/std inside the model)"
        if _classifier(job):
            record["app_outputs"] = ["classLabel", f"{PROBABILITIES} (dictionary: class name -> softmax probability)", "logits"]
        elif job.precision.name == "fp16":
            record["app_outputs_note"] = FP16_CLASSIFIER_NOTE
    return record


SIMULATION_DESCRIPTION = {
    "fp32": "the converted fp32 torch program",
    "fp16": "the converted torch program run in float16",
    "int8": "the converted W8A8 PT2E torch program (same quantize/dequantize as the .mlpackage)",
}
PACKAGE_WEIGHTS = "the converted torch program with the package's compressed weights (decompressed by coremltools)"
LEGACY_INT8_WEIGHTS = "the converted fp32 program with weights rounded to per-channel symmetric int8, as coremltools does"


def _round_weights_int8(module: torch.nn.Module) -> None:
    """Per-output-channel symmetric int8 rounding of conv/linear weights (coremltools' linear_symmetric):
    for int8_weights packages converted before the simulation program carried the package's weights."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2 and param.numel() >= coreml_weights.WEIGHT_THRESHOLD:
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
    app = manifest.get("target_options", {}).get("input") == "app"
    mean = np.array(manifest["preprocessing"]["mean"], np.float32)[:, None, None]
    std = np.array(manifest["preprocessing"]["std"], np.float32)[:, None, None]
    count = len(manifest["outputs"])
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if manifest.get("simulation") == LEGACY_INT8_WEIGHTS:
        _round_weights_int8(module)
    if precision == "fp16":
        module = module.to(torch.float16)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        if app:  # the app program takes the image in [0, 1], as ImageType(scale=1/255) gives it
            batch = batch * std + mean
        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(dtype))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().numpy() for o in out[:count]]  # the app classifier's probabilities are extra

    return per_sample(run)


def class_labels(path: Path) -> list[str]:
    """The labels inside a saved ML Program classifier (its `classify` op): what Vision reports."""
    ct = _quiet_coremltools()
    spec = ct.utils.load_spec(str(path))
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "classify":
                    values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
                    return [v.immediateValue.tensor.strings.values[0] for v in values]
    return []


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


def carried_description(path: Path) -> dict:
    ct = _quiet_coremltools()
    metadata = ct.utils.load_spec(str(path)).description.metadata.userDefined
    return json.loads(metadata[SELF_DESCRIPTION]) if SELF_DESCRIPTION in metadata else {}



TARGET = Target(SPEC, convert, simulate=simulation_runner, describe=carried_description, options=(INPUT, decode_option("graph")),
                recognizes=folder_with("Manifest.json"), fake_quantization=qat.pt2e_scheme(XNNPACK), pt2e_quantizer=XNNPACK)
