"""The user's data: an ImageFolder tree, or COCO JSON plus an image folder.

Both load into memory as uint8 arrays at the network's input size (the demo sets are small, and
CPU training is bound by the model, not by decoding). Boxes are kept in network-input pixels,
with each image's original size so predictions can be mapped back.
"""

import json
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..progress import progress
from .images import is_image_file, load_rgb
from .preprocess import Preprocessing


@dataclass
class ClassificationData:
    task: ClassVar[str] = "classification"  # the edgemnv2.tasks entry that scores it
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    paths: list[Path]


@dataclass
class DetectionData:
    task: ClassVar[str] = "detection"
    images: np.ndarray  # (N, H, W, 3) uint8
    boxes: list[np.ndarray]  # per image (M, 4) x1y1x2y2 in network-input pixels
    labels: list[np.ndarray]  # per image (M,) contiguous label ids
    class_names: list[str]
    image_ids: list[int]
    original_sizes: list[tuple[int, int]]  # (height, width)
    category_ids: list[int]  # contiguous label -> COCO category id
    coco_path: Path | None = None
    paths: list[Path] = field(default_factory=list)


def _require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if not path.is_dir():
        raise UserError(f"{what} must be a folder: {path}")
    return path


def list_image_folder(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    root = _require_dir(root, "dataset folder")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{root} has no class sub-folders; an ImageFolder tree is ROOT/<class>/<image>")
    samples = [
        (path, label)
        for label, class_dir in enumerate(class_dirs)
        for path in sorted(class_dir.iterdir())
        if path.is_file() and is_image_file(path)
    ]
    if not samples:
        raise UserError(f"{root} has class folders but no images in them")
    return samples, [d.name for d in class_dirs]


def load_image_folder(root: Path, preprocessing: Preprocessing, limit: int | None = None, class_names: list[str] | None = None) -> ClassificationData:
    """Load an ImageFolder tree. `class_names` (from a checkpoint) must match the folder's classes."""
    samples, found = list_image_folder(root)
    if class_names is not None and list(class_names) != found:
        raise UserError(f"{root} has classes {found}, but the model was trained on {list(class_names)}")
    if limit is not None:
        samples = _evenly_spaced(samples, limit)
    images = np.stack([preprocessing.resize_uint8(load_rgb(p)) for p, _ in progress(samples, f"loading {Path(root).name}")])
    labels = np.array([label for _, label in samples], np.int64)
    return ClassificationData(images, labels, found, [p for p, _ in samples])


def _evenly_spaced(items: list, limit: int) -> list:
    """A deterministic subset that covers every class (the list is sorted by class)."""
    if limit >= len(items):
        return items
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picks]


def _safe_member(root: Path, file_name: str) -> Path:
    """Resolve a file name from an annotation file, refusing anything that escapes the image root."""
    candidate = Path(file_name)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise UserError(f"annotation file name '{file_name}' points outside the image folder {root}")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise UserError(f"annotation file name '{file_name}' resolves outside the image folder {root} (symlink?)")
    return resolved


def load_coco(annotations: Path, image_dir: Path, preprocessing: Preprocessing, limit: int | None = None) -> DetectionData:
    annotations = Path(annotations)
    if not annotations.is_file():
        raise UserError(f"COCO annotation file not found: {annotations}")
    image_dir = _require_dir(image_dir, "image folder")
    try:
        coco = json.loads(annotations.read_text())
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        entries = coco["images"]
        anns = coco.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{annotations} is not COCO detection JSON ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{annotations} lists no images")
    if not isinstance(categories, list) or not categories:
        raise UserError(f"{annotations} lists no categories")
    try:
        label_of = {c["id"]: i for i, c in enumerate(categories)}
        names = [str(c["name"]) for c in categories]
        by_image: dict[int, list] = {}
        for ann in anns:
            if ann.get("iscrowd", 0) == 0:
                by_image.setdefault(ann["image_id"], []).append(ann)
        if limit is not None:
            entries = entries[:limit]
        height, width = preprocessing.input_size
        pixels, boxes, labels, ids, sizes, paths = [], [], [], [], [], []
        for entry in progress(entries, f"loading {annotations.name}"):
            path = _safe_member(image_dir, entry["file_name"])
            image = load_rgb(path)
            orig_w, orig_h = image.size
            scale = np.array([width / orig_w, height / orig_h] * 2, np.float32)
            image_boxes, image_labels = [], []
            for ann in by_image.get(entry["id"], []):
                x, y, w, h = (float(v) for v in ann["bbox"])
                if ann["category_id"] not in label_of:
                    raise UserError(f"{annotations}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
                image_boxes.append(np.array([x, y, x + w, y + h], np.float32) * scale)
                image_labels.append(label_of[ann["category_id"]])
            pixels.append(preprocessing.resize_uint8(image))
            boxes.append(np.array(image_boxes, np.float32).reshape(-1, 4))
            labels.append(np.array(image_labels, np.int64))
            ids.append(entry["id"])
            sizes.append((orig_h, orig_w))
            paths.append(path)
    except KeyError as exc:
        raise UserError(f"{annotations}: an entry lacks the COCO key {exc} (images need id and file_name; annotations need "
                        "image_id, bbox [x, y, w, h] and category_id; categories need id and name)") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{annotations}: a COCO entry has a value of the wrong type ({exc}); bbox must be 4 numbers, "
                        "file_name a string, ids numbers") from None
    return DetectionData(
        np.stack(pixels), boxes, labels, names, ids, sizes,
        [c["id"] for c in categories], annotations, paths,
    )


def resolve_detection_split(data_root: Path, split: str) -> tuple[Path, Path]:
    """The shapes/COCO layout: ROOT/annotations/instances_<split>.json + ROOT/<split>/ images."""
    data_root = Path(data_root)
    ann = data_root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise UserError(f"no COCO annotations for split '{split}' at {ann} (expected ROOT/annotations/instances_{split}.json)")
    return ann, data_root / split
