"""What a target converts: one `ConversionJob` (the folded model, its metadata, the precision and recipe,
the calibration images, the target's options, and what QAT or a --max-drop search produced), the
provenance it records, and the self-description an artifact carries inside it."""

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgemnv2.checkpoint import CheckpointMeta
from edgemnv2.errors import UserError
from edgemnv2.precision import Precision
from edgemnv2.tasks import get_task
from quantization.ptq import QuantRecipe, TargetQuantizer, pt2e_int8_graph
from quantization.qat import pt2e_convert

CORE_PACKAGES = ("edgemnv2", "torch", "torchao", "numpy")  # every artifact's manifest records these; targets add theirs
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
    ranges_not_trained: str | None = None  # why a QAT artifact that asked for the trained ranges was calibrated instead

    @property
    def postprocess_modules(self) -> tuple[str, ...]:
        """The submodules of the model that are the task's in-graph post-processing (its wrapper's
        FLOAT_MODULES; empty without one): float by design, so a census counts them apart."""
        return tuple(getattr(self.model, "FLOAT_MODULES", ())) if self.postprocessed else ()

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
        if self.qat is None or self.recipe.qat is None or self.recipe.qat.ranges != "trained":
            return None
        if self.postprocessed:
            self.calibrating_instead("the task's in-graph post-processing stands around the network QAT trained")
            return None
        self.trained_ranges_used = True
        return convert(self.qat.trained)

    def calibrating_instead(self, reason: str) -> None:
        """A target that cannot put QAT's trained ranges into its graph says why, when they were asked
        for; its manifest then records the reason beside "calibrated on the fine-tuned weights"."""
        if self.qat is not None and self.recipe.qat is not None and self.recipe.qat.ranges == "trained":
            self.ranges_not_trained = reason

    @property
    def fine_tuning(self) -> dict | None:
        """What quantization-aware training did, and whether its ranges went into the artifact."""
        if self.qat is not None:
            why = {"trained_ranges_not_used": self.ranges_not_trained} if self.ranges_not_trained and not self.trained_ranges_used else {}
            return {**self.qat.stats, "ranges": TRAINED_RANGES if self.trained_ranges_used else "calibrated on the fine-tuned weights", **why}
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


def tool_versions(target_packages: tuple[str, ...] = ()) -> dict:
    versions = {"python": platform.python_version()}
    for package in CORE_PACKAGES + tuple(target_packages):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def output_names(job: ConversionJob) -> list[str]:
    """What the artifact returns, in order: the task's outputs, or its in-graph post-processing's."""
    task = get_task(job.meta.task)
    return list(task.postprocessed_output_names if job.postprocessed else task.output_names)


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
