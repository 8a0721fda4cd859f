from pathlib import Path
from typing import Annotated, Optional

import typer

from ..data.images import list_images
from ..errors import UserError
from ..fileio import refuse_overwrites
from ..prediction.compare import compare_images, comparison_path
from ..prediction.sources import open_source, predict_image
from ..tasks import get_task
from .common import console, emit_json, out, set_threads


def _images_in(path: Path) -> list[Path]:
    if not path.exists():
        raise UserError(f"image or folder not found: {path}")
    if path.is_file():
        return [path]
    files = list_images(path)
    if not files:
        raise UserError(f"no images found under {path}")
    return files


def predict(
    model: Annotated[Path, typer.Option(help="A checkpoint, or any artifact: with its manifest beside it (verified), or on its own (it runs from what the file says of itself; unverified).")],
    images: Annotated[Path, typer.Argument(help="An image file or a folder of images.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for annotated PNGs and detections.json (detectors).")] = None,
    threshold: Annotated[float, typer.Option(help="Detector: minimum score to draw and report.")] = 0.3,
    compare: Annotated[Optional[Path], typer.Option(help="Another artifact: write side-by-side images, --model left, this right.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N images.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Model name, only for bare state dicts.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    force: Annotated[bool, typer.Option(help="Overwrite existing outputs.")] = False,
    verify_key: Annotated[Optional[Path], typer.Option(envvar="EDGEMNV2_VERIFY_KEY", help="(or EDGEMNV2_VERIFY_KEY) Public key (PEM): refuse an artifact not signed with its private key.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON on stdout; per-image lines go to stderr.")] = False,
    trust_artifact: Annotated[bool, typer.Option("--trust-artifact", help="Run an artifact that has no manifest even where runner processes cannot be confined (no Landlock: older kernels, macOS). Without it such a file is refused there: it is a program nobody verified.")] = False,
) -> None:
    """Predict with a checkpoint or artifact: top-5 for classifiers, annotated images for detectors."""

    threads = set_threads(threads)
    lines = console if json_output else out  # with --json, stdout carries only the JSON
    if not 0.0 <= threshold <= 1.0:
        raise UserError("--threshold must be between 0 and 1")
    files = _images_in(images)[: limit or None]
    source = open_source(model, threads, arch, verify_key, trust_artifact=trust_artifact)
    task = get_task(source.task)
    if compare is not None:
        other = open_source(compare, threads, verify_key=verify_key, trust_artifact=trust_artifact)
        if other.task != source.task or other.class_names != source.class_names:
            raise UserError(f"{compare.name} is a different model (task or classes differ from {model.name})")
        if task.side_by_side is None:
            raise UserError(f"--compare draws two models' outputs side by side, which {task.name} models do not have; use `edgemnv2 validate` to compare them")
        out_dir = out_dir or Path("predictions")
        refuse_overwrites([comparison_path(out_dir, path) for path in files], files, force)
        written = compare_images(source, other, files, out_dir, threshold)
        differing = sum(1 for _, n in written if n)
        console.print(f"{len(written)} comparison images in {out_dir}; {differing} show a disagreement (dashed magenta boxes)")
        return
    payload, closing = task.write_predictions(lambda path: predict_image(source, path, threshold), source.name, source.class_names, files, out_dir,
                                              threshold, force, lines)
    if json_output:
        emit_json({"model": str(model), "task": source.task, **payload})
    if closing:
        console.print(closing)
