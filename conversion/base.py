"""The target contract, and the one code path that writes an artifact.

A target is one module exposing one `TARGET = Target(spec, convert, ...)`:
    spec: TargetSpec          name, suffix, precisions, runtime, runtime modules, device runtime, tool packages
    convert(job, dest) -> dict           write the artifact at dest; return extra manifest fields
    simulate(path, manifest) -> Runner   optional: figures where the runtime cannot run (labelled simulated)
    describe(path) -> dict               optional: the self-description the file carries ({} if none), so it runs without its manifest
    gate_failure_hint(manifest) -> str   optional: advice when its artifact fails a gate
    options                              optional: per-target conversion options, with defaults
    profile(path, manifest, threads, sample, runs) -> [RuntimeOp]   optional: per-op times in the runtime
    capture(path, manifest, images, rebuild) -> [[Capture]]   optional: per image, every compute op's output in the runtime;
                                         rebuild() -> the artifact's ConversionJob, for runtimes that must rebuild to see inside
    peak_gemm(dtype, threads) -> GMAC/s  optional: one large GEMM in the runtime (edgemnv2.layerwise.peak)
Running an artifact is not a target's function: `Target.load` hands it to its runtime family's
adapter (edgemnv2/device/runtime_adapters.py, the one copy, shipped in bundles too) in a confined
runner process (edgemnv2.confine), and `confined_profile`, `confined_capture`,
`confined_description` run the target's own functions there, never in the caller's process.
A new target is one new file plus one line in conversion/__init__.py (plus its runtime family in
runtime_adapters.py if it is a new family).

Every artifact is written atomically (temp name, then rename) and gets a manifest beside it:
`<artifact>.manifest.json`. The manifest is renamed into place last, so an artifact without a
manifest is an interrupted write: it is never trusted and is replaced on the next run. Reading,
verifying and the Runner contract live one layer down, in edgemnv2.artifacts.
"""

import json
import logging
import os
import platform
import time
from contextlib import closing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgemnv2.artifacts import (  # noqa: F401  (re-exported for the target modules)
    MANIFEST_SCHEMA, MANIFEST_SUFFIX, Runner, RuntimeUnavailable, find_artifacts, manifest_path, per_sample,
    read_manifest, scan_artifacts, verify_artifact,
)
from edgemnv2.checkpoint import CheckpointMeta
from edgemnv2.confine.runner import ConfinedRunner, RunnerFailed, RunnerLimits, plain_manifest
from edgemnv2 import failpoints
from edgemnv2.errors import UserError, did_you_mean, is_internal_error, one_line, reraise_if_debugging
from edgemnv2.fileio import HASH_ENCODING, commit, discard, folder_lock, remove_stale_temps, sha256_of, size_of, temp_path
from edgemnv2.precision import Precision
from edgemnv2.signing import sign_files, signature_path
from edgemnv2.tasks import get_task
from quantization.ptq import QuantRecipe, TargetQuantizer, pt2e_int8_graph
from edgemnv2.layerwise.records import RuntimeOp
from edgemnv2.layerwise.records import Capture
from quantization.qat import pt2e_convert

LOG = logging.getLogger("edgemnv2.convert")

CORE_PACKAGES = ("edgemnv2", "torch", "torchao", "numpy")  # every artifact's manifest records these; targets add theirs


@dataclass(frozen=True)
class TargetSpec:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str  # what executes it, for reports
    runtime_modules: tuple[str, ...]  # importable modules, any one of which runs it (device tests, bundles)
    device_runtime: str  # the family in the numpy-only device runner (edgemnv2/device/run_bundle.py RUNTIMES)
    tool_packages: tuple[str, ...]  # pip distributions whose versions its manifest records
    notes: str = ""
    runs_on: str = "any"  # where its runtime exists ("macOS only" for CoreML)
    # packages that make only some precisions (TFLite's fp16 by ai-edge-quantizer): recorded by those alone
    precision_tools: dict = field(default_factory=dict)
    # what a simulated row says (a target with `simulate`): why its runtime did not run here
    simulation_note: str = ""
    # Same checkpoint + recipe -> byte-identical artifact? Measured by tests/test_reproducibility.py;
    # when False, `nondeterminism` says why (recorded in every manifest).
    deterministic: bool = True
    nondeterminism: str = ""
    # sidecars that are part of the deployed model (OpenVINO's weights beside its .xml), by suffix:
    # counted in its size. (CoreML's simulation sidecar is not: no device loads it.)
    shipped_sidecars: tuple[str, ...] = ()
    # precisions made only when named, never by `--precision all`: they run on some CPUs only (OpenVINO's
    # bf16), so a folder made with `all` stays one that validates on any machine
    on_request: tuple[str, ...] = ()

    def shipped_bytes(self, artifact: Path) -> int:
        """What a device receives: the artifact and its shipped sidecars."""
        return size_of(artifact) + sum(size_of(Path(str(artifact) + suffix)) for suffix in self.shipped_sidecars)


def qualified(function: Callable) -> str:
    """"module:name", as a runner process imports it (a lambda has no name to import: not callable there)."""
    if "<" in function.__qualname__:
        raise TypeError(f"{function.__qualname__} in {function.__module__} cannot run in a runner process: give it a name")
    return f"{function.__module__}:{function.__qualname__}"


@dataclass(frozen=True)
class TargetOption:
    name: str
    default: str
    choices: tuple[str, ...]
    help: str
    # the precisions it changes (empty: all). Only those record it, so that setting it, or a new
    # option, does not make the other precisions' artifacts stale
    precisions: tuple[str, ...] = ()
    # an older command-line flag (and keyword of edgemnv2.convert) that sets this option, kept so that
    # scripts which use it go on working: `--server-engine onednn` is `--set torchscript.engine=onednn`
    alias: str = ""


@dataclass(frozen=True)
class Target:
    spec: TargetSpec
    convert: Callable
    simulate: Callable | None = None
    describe: Callable | None = None
    gate_failure_hint: Callable | None = None
    options: tuple[TargetOption, ...] = ()
    profile: Callable | None = None
    capture: Callable | None = None
    peak_gemm: Callable | None = None
    # The file's own bytes say it is this target's (conversion/file_kinds.py): validate trusts this,
    # never a manifest's word. `recognized_alone`: the bytes identify it without its suffix (a
    # flatbuffer identifier, a zip's members), so a renamed artifact is still found; ONNX's protobuf
    # header is too weak for that. `claims_suffix`: any file with the suffix is meant as this
    # target's artifact (False for TorchScript's .pt, which checkpoints share).
    recognizes: Callable[[Path], bool] | None = None
    recognized_alone: bool = True
    claims_suffix: bool = True
    # capture() needs the artifact rebuilt from its checkpoint (ExecuTorch: a tapped copy of the
    # program, the product's own build): it runs here, and reaches the artifact only through `load`.
    capture_rebuilds: bool = False
    # its profile() starts a tool of its own (ExecuTorch's Inspector reads ETDump with flatc): that
    # runner may start processes, which stay in its group, confined alike, and die with it
    profile_starts_processes: bool = False
    # the fake quantization quantization-aware training fine-tunes under for this target's int8
    # (quantization/qat.py): its own quantizer's scheme. None: QAT is not offered for it.
    fake_quantization: object = None
    # the PT2E quantizer its int8 is made with (quantization.ptq.TargetQuantizer), declared here so that
    # what measures quantizers by name (`sensitivity --quantizer`, the --max-drop ranking) reads them from
    # the registry. None: it quantizes otherwise (FX, ONNX Runtime, NNCF)
    pt2e_quantizer: TargetQuantizer | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self, path: Path, manifest: dict | None = None, threads: int = 2, limits: RunnerLimits | None = None) -> ConfinedRunner:
        """A Runner over normalized NCHW float batches: the artifact loaded by its runtime family's
        adapter in a runner process (RuntimeUnavailable where this machine has no such runtime). It may
        read everything beside `path`: keep untrusted files alone in a private folder (a verified copy).
        Without a manifest, what the file says of itself stands in for it (an app file's preprocessing)."""
        if manifest is None:
            manifest = self.confined_description(path, limits)
        return ConfinedRunner(self.spec.device_runtime, Path(path), manifest, threads, limits)

    def simulation(self, path: Path, manifest: dict, threads: int = 2, limits: RunnerLimits | None = None) -> ConfinedRunner:
        """Its simulate() (CoreML's converted program on Linux), in a runner process like `load`."""
        if self.simulate is None:
            raise RuntimeUnavailable(f"{self.name} has no simulation")
        return ConfinedRunner("simulation", Path(path), manifest, threads, limits, simulate=qualified(self.simulate))

    def _confined_call(self, function: Callable, path: Path, args: tuple = (), arrays: tuple = (), kwargs: dict | None = None,
                       records: tuple = (), threads: int = 2, limits: RunnerLimits | None = None):
        name = qualified(function)
        with closing(ConfinedRunner(self.spec.device_runtime, Path(path), None, threads, limits, adapter=False, preload=name)) as runner:
            return runner.call(name, args, arrays, kwargs, records)

    def confined_description(self, path: Path, limits: RunnerLimits | None = None) -> dict:
        """What the file says it is (describe), read in a runner: parsing it, and for ExecuTorch running a
        method of it, is the file's code."""
        return {} if self.describe is None else self._confined_call(self.describe, path, limits=limits)

    def confined_profile(self, path: Path, manifest: dict, threads: int, sample: np.ndarray, runs: int) -> list:
        ops = self._confined_call(self.profile, path, (plain_manifest(manifest), threads), (np.ascontiguousarray(sample, np.float32),), {"runs": runs},
                                  (RuntimeOp,), threads,
                                  RunnerLimits(processes=self.profile_starts_processes, tasks=PROFILE_TASKS))
        if not isinstance(ops, list) or not ops or not all(isinstance(op, RuntimeOp) and op.ms >= 0 for op in ops):
            raise RunnerFailed(f"{self.name}'s profiler sent no per-op times, or negative ones")
        return ops

    def confined_capture(self, path: Path, manifest: dict, images: np.ndarray, rebuild: Callable | None = None) -> list:
        if self.capture_rebuilds:
            return self.capture(path, manifest, images, rebuild, load=self.load)  # in this process: it runs the artifact through load
        per_image = self._confined_call(self.capture, path, (plain_manifest(manifest),), (np.ascontiguousarray(images, np.float32),), None, (Capture,),
                                        threads=1)
        if not isinstance(per_image, list) or len(per_image) != len(images) or not all(
                isinstance(captures, list) and all(isinstance(c, Capture) for c in captures) for captures in per_image):
            raise RunnerFailed(f"{self.name}'s capture sent no per-layer outputs for each image")
        return per_image

    def options_for(self, values: dict, precision: str) -> dict:
        """The option values that apply to `precision` (what its job uses and its manifest records)."""
        applies = {option.name for option in self.options if not option.precisions or precision in option.precisions}
        return {name: value for name, value in values.items() if name in applies}

    def tools_for(self, precision: str) -> tuple[str, ...]:
        return self.spec.tool_packages + tuple(self.spec.precision_tools.get(precision, ()))

    def option_values(self, given: dict | None) -> dict:
        """This target's options: the defaults, overridden by `given` (validated)."""
        given = dict(given or {})
        values = {}
        for option in self.options:
            value = given.pop(option.name, option.default)
            if value not in option.choices:
                raise did_you_mean(value, option.choices, f"{self.name} option {option.name}")
            values[option.name] = value
        if given:
            raise UserError(f"target {self.name} has no option {', '.join(given)}" + (f" (its options: {', '.join(o.name for o in self.options)})" if self.options else ""))
        return values


# a per-op profile keeps one interpreter per cut of the graph (TFLite), each with its own thread pool: its runner's task cap
PROFILE_TASKS = 4096
TRAINED_RANGES = "trained in QAT"  # a manifest's quantization record, when the artifact carries QAT's ranges


@dataclass
class ConversionJob:
    """Everything a target needs. `model` is the BN-folded fp32 eval model."""

    model: torch.nn.Module
    meta: CheckpointMeta
    precision: Precision
    recipe: QuantRecipe
    calibration_images: np.ndarray | None  # (N, 3, H, W) float32, preprocessed, real images
    # quantized graphs shared between targets of one run (ExecuTorch int8 and CoreML W8A8 use the
    # same XNNPACK PT2E graph: calibrate once)
    shared_graphs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # this target's options (Target.option_values)
    calibration_sha256: str | None = None  # of the calibration images this run uses (hashed once per run)
    tool_packages: tuple[str, ...] = ()  # this target's tools, recorded with the core packages
    postprocessed: bool = False  # model carries the task's in-graph post-processing (the detector's decode)
    budget: object = None  # recourse.AccuracyBudget when convert --max-drop asked for one
    requested_recipe: QuantRecipe | None = None  # what the user asked for, when the recourse search chose `recipe`
    recourse: dict | None = None  # what the search did (goes into the manifest)
    qat: object = None  # quantization/qat.py QatResult, when the recipe asked for quantization-aware training
    trained_ranges_used: bool = False  # the target converted QAT's trained graph (its ranges), not a calibration
    observer_used: str | None = None  # set by a target whose quantizer calibrates its own way, not by the recipe's observer
    resized: tuple[int, int] | None = None  # convert --input-size: exported at this (height, width), not the checkpoint's

    @property
    def example(self) -> torch.Tensor:
        height, width = self.meta.preprocessing.input_size
        if self.calibration_images is not None and len(self.calibration_images):
            return torch.from_numpy(self.calibration_images[:1].copy())
        return torch.zeros(1, 3, height, width)

    def shared(self, key: str, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        if key not in self.shared_graphs:
            self.shared_graphs[key] = build()
        return self.shared_graphs[key]

    def pt2e_int8_graph(self, quantizer: TargetQuantizer) -> torch.nn.Module:
        """`quantizer`'s PT2E int8 graph, calibrated once per run and shared by the targets that quantize
        with it (XNNPACK's: ExecuTorch and CoreML W8A8); QAT's trained graph when there is one."""
        trained = self.trained_int8(pt2e_convert)  # the QAT graph (quantization/qat.py), when there is one
        if trained is not None:
            return trained
        return self.shared(f"{quantizer.name}-int8-{self.recipe}",
                           lambda: pt2e_int8_graph(self.model, self.example, self.require_calibration(), self.recipe, quantizer))

    def trained_int8(self, convert: Callable[[torch.nn.Module], torch.nn.Module]) -> torch.nn.Module | None:
        """The int8 graph with the ranges quantization-aware training learned (`convert` turns the
        trained graph into it), where this job's graph is the trained one: the bare network, with no
        in-graph decode around it. None: quantize and calibrate as usual (the fine-tuned weights)."""
        if self.qat is None or self.recipe.qat is None or self.recipe.qat.ranges != "trained" or self.postprocessed:
            return None
        self.trained_ranges_used = True
        return convert(self.qat.trained)

    @property
    def fine_tuning(self) -> dict | None:
        """What quantization-aware training did, and whether its ranges went into the artifact."""
        if self.qat is not None:
            return {**self.qat.stats, "ranges": TRAINED_RANGES if self.trained_ranges_used else "calibrated on the fine-tuned weights"}
        if self.meta.qat:  # a `train --qat` checkpoint (conversion/fine_tune.py): calibrated like any model
            ranges = {"ranges": "calibrated on the fine-tuned weights"} if self.precision.needs_calibration else {}
            return {**self.meta.qat, "from": "the checkpoint (train --qat)", **ranges}
        return None

    def require_calibration(self) -> np.ndarray:
        if self.calibration_images is None or not len(self.calibration_images):
            raise UserError(f"{self.precision} needs calibration images (--calib-data)")
        return self.calibration_images[: self.recipe.calibration_size]

    def provenance(self, checkpoint_sha256: str) -> dict:
        """What this artifact is a function of. An existing artifact is reused only when its
        manifest records the same; otherwise convert refuses (or, with --force, rebuilds)."""
        record = {"checkpoint_sha256": checkpoint_sha256, "precision": self.precision.name, "target_options": dict(self.options),
                  "tool_versions": tool_versions(self.tool_packages)}
        if self.resized is not None:  # absent at the checkpoint's own size: artifacts made before the option stay valid
            record["input_size"] = list(self.resized)
        if self.precision.quantized:
            # the recipe asked for (a recourse search's choice is recorded apart, in the manifest)
            record["recipe"] = (self.requested_recipe or self.recipe).to_dict()
            if self.budget is not None and self.precision.full_int8:  # the only precisions a --max-drop search measures
                record["max_drop"] = self.budget.provenance()
        if self.precision.needs_calibration:
            self.require_calibration()
            record["calibration_sha256"] = self.calibration_sha256
        return record


@dataclass
class ArtifactResult:
    target: str
    precision: str  # the precision's name
    path: Path | None
    status: str  # "ok" | "failed" | "skipped"
    seconds: float = 0.0
    size_bytes: int = 0
    message: str = ""
    manifest: dict = field(default_factory=dict)
    internal: bool = False  # failed by a bug of edgemnv2's, not by the converter's refusal: exit 3


def tool_versions(target_packages: tuple[str, ...] = ()) -> dict:
    versions = {"python": platform.python_version()}
    for package in CORE_PACKAGES + tuple(target_packages):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def artifact_path(out_dir: Path, stem: str, spec: TargetSpec, precision: Precision) -> Path:
    return Path(out_dir) / f"{stem}.{spec.name}.{precision.name}{spec.suffix}"


def output_names(job: ConversionJob) -> list[str]:
    """What the artifact returns, in order: the task's outputs, or its in-graph post-processing's."""
    task = get_task(job.meta.task)
    return list(task.postprocessed_output_names if job.postprocessed else task.output_names)


DECODE = "decode"  # the target option that puts a detector's decode in the graph


def decode_option(default: str) -> TargetOption:
    return TargetOption(DECODE, default, ("graph", "host"), "detectors: graph puts CenterNet's decode (3x3 max-pool peaks, "
                        "top-100, boxes in input pixels) inside the artifact, whose outputs are then boxes, scores, classes; "
                        "host returns the raw hm/wh/reg maps (decoded by the runner). Classifiers ignore it")


def _quantization_record(job: ConversionJob) -> dict | None:
    precision = job.precision
    if not precision.quantized:
        return None
    if precision.palettized:  # the target's record says how the tables are shared (coreml: weight_compression)
        weights = f"{precision.weight_bits}-bit palettized weights (k-means lookup tables)"
    elif precision.weight_bits < 8:
        weights = f"int{precision.weight_bits} symmetric weights (per block)"
    else:
        weights = f"int{precision.weight_bits} symmetric weights (" + ("per-channel" if job.recipe.per_channel else "per-tensor") + ")"
    calibration = None
    if job.trained_ranges_used:  # no calibration: quantization-aware training's ranges (the "qat" entry)
        calibration = {"ranges": TRAINED_RANGES}
    elif precision.needs_calibration and job.calibration_images is not None:
        calibration = {"images": int(min(len(job.calibration_images), job.recipe.calibration_size)), "observer": job.observer_used or job.recipe.observer}
    activations = (f", int{precision.activation_bits} activations" if precision.quantizes_activations else
                   f", {precision.float_dtype} activations quantized to int8 at run time (dynamic range)" if precision.dynamic_activations else
                   f", {precision.float_dtype} activations")
    return {"scheme": weights + activations, "bits": precision.bits, "weights_quantized": precision.quantizes_weights,
            "activations_quantized": "at run time" if precision.dynamic_activations else precision.quantizes_activations,
            "recipe": job.recipe.to_dict(), "calibration": calibration, **({"qat": job.fine_tuning} if job.fine_tuning else {})}


SELF_DESCRIPTION = "edgemnv2.json"  # the name under which artifacts that can carry files or constants carry it


def zipped_extra_file(path: Path, name: str = SELF_DESCRIPTION) -> dict:
    """A JSON extra file from a TorchScript or lite-interpreter archive (`<root>/extra/<name>`), read
    with zipfile: nothing in the archive is unpickled or run. {} when there is none."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            member = next((m for m in archive.namelist() if m.endswith("/extra/" + name)), None)
            return json.loads(archive.read(member)) if member else {}
    except (zipfile.BadZipFile, ValueError, OSError):
        return {}


def self_description(job: ConversionJob, **extra) -> dict:
    """What the artifact is, carried inside it where the format allows (TorchScript extra files,
    ExecuTorch constant methods, TFLite/CoreML metadata): a runner needs nothing else."""
    return {"task": job.meta.task, "arch": job.meta.arch, "precision": job.precision.name, "class_names": list(job.meta.class_names),
            "preprocessing": job.meta.preprocessing.to_dict(), "outputs": output_names(job), **extra}


# quantization-aware training stopped by --qat-minutes saw as many images as this machine trained in that time
TIME_BUDGETED = "quantization-aware training ran under a time budget: how far it got depends on the machine's speed"


def build_manifest(job: ConversionJob, spec: TargetSpec, artifact: Path, provenance: dict, extra: dict, seconds: float) -> dict:
    height, width = job.meta.preprocessing.input_size
    time_budgeted = job.recipe.qat is not None and job.recipe.qat.minutes is not None
    return {
        "schema": MANIFEST_SCHEMA,
        "artifact": artifact.name,
        "target": spec.name,
        "runtime": spec.runtime,
        "precision": job.precision.name,
        "arch": job.meta.arch,
        "task": job.meta.task,
        "model_kwargs": job.meta.model_kwargs,
        "class_names": job.meta.class_names,
        "input_shape": [1, 3, height, width],
        "input_layout": "NCHW float32",
        "preprocessing": job.meta.preprocessing.to_dict(),
        "outputs": output_names(job),
        "quantization": _quantization_record(job),
        "target_options": dict(job.options),
        "checkpoint_sha256": provenance["checkpoint_sha256"],
        "provenance": provenance,
        "artifact_sha256": sha256_of(artifact),
        "hash_encoding": HASH_ENCODING,  # how the sha256 values were computed: readers refuse another
        "artifact_bytes": size_of(artifact),
        "conversion_seconds": round(seconds, 2),
        "tool_versions": provenance["tool_versions"],
        "byte_reproducible": spec.deterministic and not time_budgeted,
        **({"nondeterminism": spec.nondeterminism or TIME_BUDGETED} if not spec.deterministic or time_budgeted else {}),
        **({"recourse": job.recourse} if job.recourse is not None else {}),
        **extra,
    }


def stale_reason(manifest_file: Path, provenance: dict) -> str | None:
    """None when the artifact behind manifest_file was built from exactly `provenance`; else why not."""
    try:
        written = json.loads(manifest_file.read_text())
        recorded, encoding = written.get("provenance"), written.get("hash_encoding")
    except (OSError, ValueError, AttributeError):
        return "its manifest is unreadable"
    if not isinstance(recorded, dict):
        return "its manifest records no provenance (an older edgemnv2 wrote it)"
    if encoding != HASH_ENCODING:  # readers refuse it (verify_artifact): it is never "up to date"
        return f"it was made by an older edgemnv2 (hash encoding {encoding or 'not recorded'}, now {HASH_ENCODING})"
    labels = {"checkpoint_sha256": "another checkpoint", "precision": "another precision", "target_options": "other target options",
              "recipe": "another quantization recipe",
              "calibration_sha256": "another calibration set", "tool_versions": "other tool versions", "max_drop": "another --max-drop budget",
              "input_size": "another --input-size"}
    changed = [label for key, label in labels.items() if recorded.get(key) != provenance.get(key)]
    return ("it was built from " + ", ".join(changed)) if changed else None


def write_artifact(target: Target, job: ConversionJob, out_dir: Path, stem: str, checkpoint_sha256: str, force: bool,
                   sign_key: Path | None = None) -> ArtifactResult:
    """Convert with one target; never leaves a partial artifact. Errors become a failed result.

    The artifact, its sidecars and its manifest are built under temporary names (and signed, with
    sign_key, as one set under their final names); then, holding the folder lock, they are renamed
    into place, the manifest last. Two converts into one folder therefore never interleave: every
    artifact matches its manifest. A manifest is the commit mark.
    """
    spec: TargetSpec = target.spec
    if job.precision.name not in spec.precisions:
        raise UserError(f"target '{spec.name}' does not support precision '{job.precision}'; supported: {', '.join(spec.precisions)}")
    final = artifact_path(out_dir, stem, spec, job.precision)
    manifest_file = manifest_path(final)
    provenance = job.provenance(checkpoint_sha256)
    if manifest_file.exists() and not force:
        return _existing(spec, job, final, provenance)
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    remove_stale_temps(out_dir)
    started = time.perf_counter()
    temp, sidecars, temp_manifest, temp_signature = temp_path(final), {}, temp_path(manifest_file), temp_path(signature_path(final))
    try:
        extra = target.convert(job, temp) or {}
        sidecars = extra.pop(SIDECARS, {})
        seconds = time.perf_counter() - started
        manifest = build_manifest(job, spec, temp, provenance, extra, seconds)
        manifest["artifact_bytes"] += sum(size_of(sidecars[suffix]) for suffix in spec.shipped_sidecars)
        manifest["artifact"] = final.name
        manifest["sidecars"] = {suffix: {"file": final.name + suffix, "sha256": sha256_of(path)} for suffix, path in sidecars.items()}
        manifest["signed"] = sign_key is not None
        temp_manifest.write_text(json.dumps(manifest, indent=2))
        if sign_key is not None:
            members = {final.name: temp, manifest_file.name: temp_manifest, **{final.name + suffix: path for suffix, path in sidecars.items()}}
            sign_files(members, sign_key, temp_signature)
        failpoints.reached(failpoints.ARTIFACT_WRITTEN)
        with folder_lock(out_dir):
            if manifest_file.exists() and not force:  # another process finished it meanwhile
                return _existing(spec, job, final, provenance)
            manifest_file.unlink(missing_ok=True)  # uncommit the old artifact before replacing it
            signature_path(final).unlink(missing_ok=True)  # an old signature must not outlive its artifact
            commit(temp, final)
            for suffix, path in sidecars.items():
                commit(path, final.with_name(final.name + suffix))
            if sign_key is not None:
                commit(temp_signature, signature_path(final))
            commit(temp_manifest, manifest_file)
        failpoints.reached(failpoints.ARTIFACT_COMMITTED)
    except UserError as exc:
        return ArtifactResult(spec.name, job.precision.name, None, "failed", time.perf_counter() - started, message=str(exc))
    except OSError as exc:
        return ArtifactResult(spec.name, job.precision.name, None, "failed", time.perf_counter() - started, message=f"could not write {final.name}: {exc.strerror or exc}")
    except Exception as exc:  # a converter crash must not abort the other targets
        reraise_if_debugging(exc)
        internal = is_internal_error(exc)
        LOG.error("converting %s %s: %s", spec.name, job.precision.name, "internal error" if internal else "the converter refused it", exc_info=exc)
        return ArtifactResult(spec.name, job.precision.name, None, "failed", time.perf_counter() - started, message=one_line(exc), internal=internal)
    finally:
        for leftover in [temp, temp_manifest, temp_signature, *sidecars.values()]:
            discard(Path(leftover))
    return ArtifactResult(spec.name, job.precision.name, final, "ok", manifest["conversion_seconds"], manifest["artifact_bytes"], manifest=manifest)


def remove_artifact(artifact: Path) -> None:
    """Take an artifact out of its folder: its manifest first (the commit mark: a reader never sees
    a manifest without its file), then its signature, sidecars and the artifact itself."""
    manifest_file = manifest_path(artifact)
    with folder_lock(artifact.parent):
        try:
            sidecars = json.loads(manifest_file.read_text()).get("sidecars") or {}
        except (OSError, ValueError, AttributeError):
            sidecars = {}
        manifest_file.unlink(missing_ok=True)
        signature_path(artifact).unlink(missing_ok=True)
        for suffix in sidecars:
            discard(artifact.with_name(artifact.name + suffix))
        # renamed out of the way first: a package folder half removed would otherwise keep the artifact's name
        doomed = temp_path(artifact)
        if artifact.exists() or artifact.is_symlink():
            os.replace(artifact, doomed)
        discard(doomed)


def _existing(spec, job, final: Path, provenance: dict) -> ArtifactResult:
    """An artifact is already there: reuse it only if it was built from the same inputs."""
    reason = stale_reason(manifest_path(final), provenance)
    if reason is not None:
        raise UserError(f"{final} exists, but {reason}; pass --force to replace it (or convert into another --out)")
    return ArtifactResult(spec.name, job.precision.name, final, "skipped", message=f"{final.name} is up to date (same checkpoint, recipe, calibration and tools)")


SIDECARS = "_sidecars"  # key a target's convert() may return: {suffix: temp file written beside dest}


def sidecar_temp(dest: Path, suffix: str) -> Path:
    """Where a target writes a companion file during convert (renamed into place with the artifact)."""
    return dest.with_name(dest.name + suffix)


def sidecar_path(artifact: Path, manifest: dict, suffix: str) -> Path | None:
    entry = (manifest.get("sidecars") or {}).get(suffix)
    return artifact.with_name(entry["file"]) if entry else None
