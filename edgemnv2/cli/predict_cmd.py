import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, emit_json, out, set_threads


def _images_in(path: Path) -> list[Path]:
    from ..data.images import list_images
    from ..errors import UserError

    if not path.exists():
        raise UserError(f"image or folder not found: {path}")
    if path.is_file():
        return [path]
    files = list_images(path)
    if not files:
        raise UserError(f"no images found under {path}")
    return files


def _picture_paths(files: list[Path], out_dir: Path) -> dict[Path, Path]:
    """One annotated PNG per image, named after it; images sharing a stem (a.png and a.jpg, or
    cat/1.png and dog/1.png in a folder read recursively) get -2, -3, ... rather than one another's."""
    paths, taken = {}, set()
    for path in files:
        name, n = f"{path.stem}.png", 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}.png"
        taken.add(name)
        paths[path] = out_dir / name
    return paths


def _refuse_overwrites(outputs: list[Path], inputs: list[Path], force: bool) -> None:
    """Before any work: an existing output needs --force; an input image is never written over."""
    from ..errors import UserError
    from ..fileio import refuse_overwrite

    originals = {path.resolve() for path in inputs}
    for dest in outputs:
        if dest.resolve() in originals:
            raise UserError(f"{dest} is one of the input images: predict never writes over its input; choose another --out folder")
        refuse_overwrite(dest, force)


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
    from ..errors import UserError
    from ..fileio import atomic_output, refuse_overwrite
    from ..prediction.compare import compare_images, comparison_path
    from ..prediction.draw import draw_detections
    from ..prediction.sources import open_source, predict_image

    threads = set_threads(threads)
    lines = console if json_output else out  # with --json, stdout carries only the JSON
    if not 0.0 <= threshold <= 1.0:
        raise UserError("--threshold must be between 0 and 1")
    files = _images_in(images)[: limit or None]
    source = open_source(model, threads, arch, verify_key, trust_artifact=trust_artifact)
    if compare is not None:
        other = open_source(compare, threads, verify_key=verify_key, trust_artifact=trust_artifact)
        if other.task != source.task or other.class_names != source.class_names:
            raise UserError(f"{compare.name} is a different model (task or classes differ from {model.name})")
        if source.task != "detection":
            raise UserError("--compare draws boxes, so it needs detector models; for classifiers use `edgemnv2 validate`")
        out_dir = out_dir or Path("predictions")
        _refuse_overwrites([comparison_path(out_dir, path) for path in files], files, force)
        written = compare_images(source, other, files, out_dir, threshold)
        differing = sum(1 for _, n in written if n)
        console.print(f"{len(written)} comparison images in {out_dir}; {differing} show a disagreement (dashed magenta boxes)")
        return
    if source.task == "classification":
        results = []
        for path in files:
            _, top5 = predict_image(source, path, threshold)
            lines.print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in top5))
            results.append({"file": str(path), "top5": [{"label": n, "score": p} for n, p in top5]})
        if out_dir is not None:
            dest = out_dir / "predictions.json"
            refuse_overwrite(dest, force)
            with atomic_output(dest, force=True) as temp:
                temp.write_text(json.dumps(results, indent=2))
        if json_output:
            emit_json({"model": str(model), "task": source.task, "predictions": results})
        return
    out_dir = out_dir or Path("predictions")
    detections_file = out_dir / "detections.json"
    pictures = _picture_paths(files, out_dir)
    _refuse_overwrites([detections_file, *pictures.values()], files, force)  # all of them, before the first is written
    coco_results = []
    for image_id, path in enumerate(files, start=1):
        image, detections = predict_image(source, path, threshold)
        picture = draw_detections(image, detections, source.class_names, f"{source.name}: {len(detections)} boxes >= {threshold}")
        with atomic_output(pictures[path], force=force) as temp:
            picture.save(temp, format="PNG")
        for box, score, label in detections:
            x1, y1, x2, y2 = (float(v) for v in box)
            coco_results.append({"image_id": image_id, "file_name": path.name, "category_id": label + 1, "category": source.class_names[label],
                                 "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)], "score": round(score, 4)})
        lines.print(f"{path}: {len(detections)} detections")
    with atomic_output(detections_file, force=force) as temp:
        temp.write_text(json.dumps(coco_results, indent=2))
    if json_output:
        emit_json({"model": str(model), "task": source.task, "detections_file": str(detections_file), "detections": coco_results})
    console.print(f"annotated images and {detections_file.name} (COCO result format) in {out_dir}")
