"""A prediction source: a checkpoint or any artifact, behind the same Runner as `validate`.

An artifact runs in a runner process (conversion.confined_runner, edgemnv2.confine): `predict` on
a file someone sent, a TorchScript program included, cannot touch this machine's files or network
where the kernel has Landlock, and its runtime crashing is one line, not this process's end.
"""

import shutil
import tempfile
import weakref
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conversion import TARGETS, confined_runner, kind_of, verified_artifact

from ..artifacts import MANIFEST_SUFFIX, ArtifactRefused, RuntimeUnavailable, manifest_path
from ..checkpoint import CheckpointMeta, load_checkpoint
from ..confine import landlock, seccomp
from ..confine.runner import RunnerFailed, RunnerLimits
from ..data.images import load_rgb
from ..data.preprocess import Preprocessing
from ..errors import UserError
from ..evaluate import Runner, torch_runner
from ..tasks import get_task


@dataclass
class Source:
    name: str  # what to call it in captions: "checkpoint fp32", "tflite int8", ...
    task: str
    class_names: list[str]
    preprocessing: Preprocessing
    runner: Runner


def open_source(path: Path, threads: int = 2, arch: str | None = None, verify_key: Path | None = None,
                expected_sha256: str | None = None, trust_artifact: bool = False) -> Source:
    """A checkpoint (.pt/.safetensors with metadata) or an artifact with its manifest beside it.

    An artifact runs from a private, verified copy (conversion.verified_artifact) that lives as
    long as the returned Source. `expected_sha256`: the artifact must be these bytes (validate's
    comparison pictures reopen the artifact it scored, not whatever the folder holds now)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if path.name.endswith(MANIFEST_SUFFIX) or manifest_path(path).exists():
        keep = ExitStack()
        try:
            verified = keep.enter_context(verified_artifact(path, verify_key))
            manifest = verified.manifest
            if expected_sha256 is not None and manifest["artifact_sha256"] != expected_sha256:
                raise ArtifactRefused(f"{verified.path.name} changed after it was validated (sha256 differs): refusing to run it")
            meta = CheckpointMeta.from_dict(manifest, f"{verified.path.name}{MANIFEST_SUFFIX}")
            runner = keep.enter_context(closing(confined_runner(manifest["target"], verified.path, manifest, threads)))
        except RuntimeUnavailable as exc:
            keep.close()
            raise UserError(f"cannot run {path.name} here: {exc}") from None
        except RunnerFailed as exc:  # its runtime refused it, or it crashed its runner: the file's fault
            keep.close()
            raise UserError(f"cannot run {path.name}: {exc}") from None
        except BaseException:
            keep.close()
            raise
        source = Source(f"{manifest['target']} {manifest['precision']}", meta.task, meta.class_names, meta.preprocessing, runner)
        weakref.finalize(source, keep.close)  # the private copy goes when the source does
        return source
    target = bare_artifact_target(path)
    if target is not None:
        if verify_key is not None:
            raise UserError(f"{path.name} has no manifest beside it, so there is nothing to verify --verify-key against")
        return _bare_artifact(path, target, threads, trust_artifact)
    if path.is_dir():
        raise UserError(f"{path} is a folder without a manifest beside it; pass a checkpoint or an artifact file")

    model, meta = load_checkpoint(path, arch)
    return Source("checkpoint fp32", meta.task, meta.class_names, meta.preprocessing, torch_runner(model))


def bare_artifact_target(path: Path):
    """The target whose file this is, by its own bytes (conversion.kind_of), when it is an artifact
    without its manifest; None otherwise (a `.pt` checkpoint is a zip too, but holds no TorchScript code)."""
    kind = kind_of(path) if path.is_file() else None
    return TARGETS[kind] if kind is not None and TARGETS[kind].describe is not None else None


def confinement_available() -> bool:
    """Whether runner processes here can take Landlock and the socket filter (edgemnv2.confine)."""

    return landlock.abi_version() >= landlock.MIN_ABI and seccomp.available()


def _bare_artifact(path: Path, target, threads: int, trust_artifact: bool = False) -> Source:
    """An artifact file on its own: what it is comes from inside it (conversion/job.py self_description),
    read and run only in runner processes, from a private copy alone in its folder. Unverified bytes
    never run unconfined unless the user says they trust them (`trust_artifact`)."""
    if not trust_artifact and not confinement_available():
        raise UserError(f"{path.name} has no manifest to verify it, and runner processes cannot be confined on this machine (no Landlock): "
                        "it is not run; keep its signed manifest beside it, or pass --trust-artifact if you trust whoever made it")
    limits = RunnerLimits(require_confinement=not trust_artifact)
    keep = ExitStack()  # a private copy, alone in its folder: all that its runners may read
    try:
        private = Path(keep.enter_context(tempfile.TemporaryDirectory(prefix="edgemnv2-bare-"))) / path.name
        shutil.copyfile(path, private)
        for suffix in target.spec.shipped_sidecars:  # part of the model (OpenVINO's weights): copied with it, never followed
            sidecar = path.with_name(path.name + suffix)
            if sidecar.is_symlink() or not sidecar.is_file():
                raise UserError(f"{path.name} needs {sidecar.name} beside it (its {target.name} weights)")
            shutil.copyfile(sidecar, private.with_name(private.name + suffix))
        try:
            carried = target.confined_description(private, limits)
        except (RunnerFailed, ArtifactRefused) as exc:  # a corrupt file: one line, not a parser's traceback
            raise UserError(f"cannot read {path.name} as a {target.name} artifact: {exc}") from None
        if not isinstance(carried, dict) or any(key not in carried for key in ("task", "class_names", "preprocessing")):
            raise UserError(f"{path.name} has no manifest beside it and does not describe itself (an older edgemnv2, or "
                            f"converted with options that carry no metadata); keep {path.name}{MANIFEST_SUFFIX} beside it")
        # the same checked reader as checkpoints and manifests: task, class names, bounded input size, mean/std
        meta = CheckpointMeta.from_dict({"arch": "unknown", **carried}, f"{path.name} (its self-description)")
        runner = keep.enter_context(closing(target.load(private, carried, threads, limits)))
    except RuntimeUnavailable as exc:
        keep.close()
        raise UserError(f"cannot run {path.name} here: {exc}") from None
    except RunnerFailed as exc:  # an unverified file whose runtime refuses it, or that crashes it: the file's fault
        keep.close()
        raise UserError(f"cannot load {path.name} as a {target.name} artifact: {exc}") from None
    except BaseException:
        keep.close()
        raise
    height, width = meta.preprocessing.input_size
    try:  # one run at the size it says it takes: a file that lies about its input or its classes stops here
        outputs = runner(np.zeros((1, 3, height, width), np.float32))
    except RunnerFailed as exc:
        keep.close()
        raise UserError(f"{path.name} does not run on the {height}x{width} input its self-description gives: {exc}") from None
    precision = carried.get("precision") if isinstance(carried.get("precision"), str) else "?"
    source = Source(f"{target.name} {precision} (no manifest: unverified, run confined)", meta.task, meta.class_names, meta.preprocessing, runner)
    weakref.finalize(source, keep.close)
    try:
        check_class_count(source, outputs, path.name)
    except UserError:
        keep.close()
        raise
    return source


def check_class_count(source: Source, outputs: list, what: str | None = None) -> None:
    """A classifier's scores must match its class names one to one (a file saying fewer names than
    the model has outputs would otherwise crash on an index, or mislabel)."""
    argmax_output = get_task(source.task).argmax_output
    if argmax_output is not None and argmax_output < len(outputs):
        scores = np.shape(outputs[argmax_output])[-1]
        if scores != len(source.class_names):
            raise UserError(f"{what or source.name} gives {scores} class scores but names {len(source.class_names)} classes; "
                            "its class names do not belong to this model")


def predict_image(source: Source, image_path: Path, threshold: float) -> tuple:
    """-> (PIL image, predictions), formatted by the task: a classifier's top-5 [(class, probability)];
    a detector's [(box x1y1x2y2 in original-image pixels, score, class index)] above `threshold`."""
    image = load_rgb(image_path)
    try:
        outputs = source.runner(source.preprocessing(image)[None])
    except RunnerFailed as exc:  # the artifact crashed or broke a limit in its runner process
        raise UserError(f"{source.name} failed on {Path(image_path).name}: {exc}") from None
    check_class_count(source, outputs)
    task = get_task(source.task)
    problem = task.output_problem(outputs)
    if problem is not None:
        raise UserError(f"{source.name} gave {problem}")
    predictions = task.predict(outputs, source.class_names, source.preprocessing.input_size, image.size, threshold)
    if task.argmax_output is None:  # detections carry class indices: each must name a class
        bad = next((int(p[2]) for p in predictions if not 0 <= int(p[2]) < len(source.class_names)), None)
        if bad is not None:
            raise UserError(f"{source.name} detected class index {bad}, but names {len(source.class_names)} classes; "
                            "its class names do not belong to this model")
    return image, predictions
