"""What `predict` gives for a detector: each image annotated with its boxes (a PNG per image) and every
detection in COCO's result format (detections.json), in --out (default predictions/)."""

import json
from pathlib import Path

from ...fileio import atomic_output, refuse_overwrites
from .draw import draw_detections

DEFAULT_OUT = Path("predictions")


def prediction_fields(found: list[tuple], class_names: list[str]) -> dict:
    """edgemnv2.predict's Prediction fields for one image: (box x1y1x2y2 in image pixels, score, class name)."""
    return {"detections": [(box, score, class_names[label]) for box, score, label in found]}


def picture_paths(files: list[Path], out_dir: Path) -> dict[Path, Path]:
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


def write_predictions(predict, model_name: str, class_names: list[str], files: list[Path], out_dir: Path | None, threshold: float, force: bool,
                      lines) -> tuple[dict, str]:
    """predict(path) -> (image, [(box, score, label)]). Writes the pictures and detections.json (all
    refused before the first is written if one exists without --force); returns the --json payload's
    fields and a closing line."""
    out_dir = out_dir or DEFAULT_OUT
    detections_file = out_dir / "detections.json"
    pictures = picture_paths(files, out_dir)
    refuse_overwrites([detections_file, *pictures.values()], files, force)
    coco_results = []
    for image_id, path in enumerate(files, start=1):
        image, detections = predict(path)
        picture = draw_detections(image, detections, class_names, f"{model_name}: {len(detections)} boxes >= {threshold}")
        with atomic_output(pictures[path], force=force) as temp:
            picture.save(temp, format="PNG")
        for box, score, label in detections:
            x1, y1, x2, y2 = (float(v) for v in box)
            coco_results.append({"image_id": image_id, "file_name": path.name, "category_id": label + 1, "category": class_names[label],
                                 "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)], "score": round(score, 4)})
        lines.print(f"{path}: {len(detections)} detections")
    with atomic_output(detections_file, force=force) as temp:
        temp.write_text(json.dumps(coco_results, indent=2))
    return ({"detections_file": str(detections_file), "detections": coco_results},
            f"annotated images and {detections_file.name} (COCO result format) in {out_dir}")
