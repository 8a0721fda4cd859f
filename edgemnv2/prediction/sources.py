"""A prediction source: a checkpoint or any artifact, behind the same Runner as `validate`."""

import weakref
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from conversion import TARGETS, get_target

from ..artifacts import MANIFEST_SUFFIX, RuntimeUnavailable, manifest_path, verified_copy
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


def open_source(path: Path, threads: int = 2, arch: str | None = None, verify_key: Path | None = None) -> Source:
    """A checkpoint (.pt/.safetensors with metadata) or an artifact with its manifest beside it.

    An artifact runs from a private, verified copy (edgemnv2.artifacts.verified_copy) that lives as
    long as the returned Source."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if path.name.endswith(MANIFEST_SUFFIX) or manifest_path(path).exists():
        keep = ExitStack()
        try:
            verified = keep.enter_context(verified_copy(path, verify_key))
            manifest = verified.manifest
            runner = get_target(manifest["target"]).load(verified.path, manifest, threads)
        except RuntimeUnavailable as exc:
            keep.close()
            raise UserError(f"cannot run {path.name} here: {exc}") from None
        except BaseException:
            keep.close()
            raise
        source = Source(f"{manifest['target']} {manifest['precision']}", manifest["task"], manifest["class_names"],
                        Preprocessing.from_dict(manifest["preprocessing"]), runner)
        weakref.finalize(source, keep.close)  # the private copy goes when the source does
        return source
    target = bare_artifact_target(path)
    if target is not None:
        if verify_key is not None:
            raise UserError(f"{path.name} has no manifest beside it, so there is nothing to verify --verify-key against")
        return _bare_artifact(path, target, threads)
    if path.is_dir():
        raise UserError(f"{path} is a folder without a manifest beside it; pass a checkpoint or an artifact file")
    from ..checkpoint import load_checkpoint

    model, meta = load_checkpoint(path, arch)
    return Source("checkpoint fp32", meta.task, meta.class_names, meta.preprocessing, torch_runner(model))


def bare_artifact_target(path: Path):
    """The target whose file this is, when it is an artifact without its manifest; None otherwise
    (a `.pt` is a TorchScript archive only if it holds TorchScript code: else it is a checkpoint)."""
    import zipfile

    for target in TARGETS.values():
        if path.name.endswith(target.spec.suffix) and target.describe is not None:
            if target.spec.suffix == ".pt":
                try:
                    with zipfile.ZipFile(path) as archive:
                        if not any(m.endswith("constants.pkl") or "/code/" in m for m in archive.namelist()):
                            return None
                except (zipfile.BadZipFile, OSError):
                    return None
            return target
    return None


def _bare_artifact(path: Path, target, threads: int) -> Source:
    """An artifact file on its own: what it is comes from inside it (conversion/base.py self_description)."""
    try:
        carried = target.describe(path)
    except Exception as exc:  # a corrupt file: one line, not a parser's traceback
        raise UserError(f"cannot read {path.name} as a {target.name} artifact: {type(exc).__name__}: {str(exc)[:200]}") from None
    missing = [key for key in ("task", "class_names", "preprocessing") if key not in carried]
    if missing:
        raise UserError(f"{path.name} has no manifest beside it and does not describe itself (an older edgemnv2, or "
                        f"converted with options that carry no metadata); keep {path.name}{MANIFEST_SUFFIX} beside it")
    try:
        runner = target.load(path, None, threads)
    except RuntimeUnavailable as exc:
        raise UserError(f"cannot run {path.name} here: {exc}") from None
    return Source(f"{target.name} {carried.get('precision', '?')} (no manifest: unverified)", carried["task"], list(carried["class_names"]),
                  Preprocessing.from_dict(carried["preprocessing"]), runner)


def predict_image(source: Source, image_path: Path, threshold: float) -> tuple:
    """-> (PIL image, predictions), formatted by the task: a classifier's top-5 [(class, probability)];
    a detector's [(box x1y1x2y2 in original-image pixels, score, class index)] above `threshold`."""
    image = load_rgb(image_path)
    outputs = source.runner(source.preprocessing(image)[None])
    return image, get_task(source.task).predict(outputs, source.class_names, source.preprocessing.input_size, image.size, threshold)
