"""The user's data, read lazily: an ImageFolder tree, or COCO JSON plus an image folder.

A split holds what its annotations say (paths, labels, boxes: a few hundred bytes per image), never
the pixels. `read(i)` decodes one image at the network's input size; edgemnv2/data/stream.py reads
batches in background threads, in a stable order, so memory does not grow with the split. Training,
which passes over a split many times, may keep the decoded pixels (`cache`) when they fit a budget.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import UserError
from .images import is_image_file, load_rgb
from .preprocess import Preprocessing
from .stream import batches


@dataclass
class DecodedCache:
    images: np.ndarray  # (N, H, W, 3) uint8 at the input size
    sizes: np.ndarray  # (N, 2) original (height, width)


@dataclass
class Split:
    """One split of a dataset: image paths plus whatever the task's annotations hold."""

    task: ClassVar[str] = ""  # the edgemnv2.tasks entry that scores it
    paths: list[Path]
    class_names: list[str]
    preprocessing: Preprocessing
    cached: DecodedCache | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """-> ((H, W, 3) uint8 at the input size, original (height, width))."""
        if self.cached is not None:
            return self.cached.images[index], tuple(int(v) for v in self.cached.sizes[index])
        image = load_rgb(self.paths[index])
        return self.preprocessing.resize_uint8(image), (image.height, image.width)

    def decoded_bytes(self) -> int:
        height, width = self.preprocessing.input_size
        return len(self) * height * width * 3

    def cache(self, max_bytes: int, workers: int | None = None) -> bool:
        """Keep every decoded image in memory if they fit in `max_bytes`; -> whether they did."""

        if self.cached is not None or self.decoded_bytes() > max_bytes:
            return self.cached is not None
        height, width = self.preprocessing.input_size
        images = np.empty((len(self), height, width, 3), np.uint8)
        sizes = np.empty((len(self), 2), np.int64)
        for batch in batches(self, 256, workers=workers, description=f"decoding {len(self)} images"):
            images[batch.indices], sizes[batch.indices] = batch.images, batch.sizes
        self.cached = DecodedCache(images, sizes)
        return True


@dataclass
class ClassificationData(Split):
    task: ClassVar[str] = "classification"
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) int64


@dataclass
class DetectionData(Split):
    task: ClassVar[str] = "detection"
    boxes_xywh: list[np.ndarray] = field(default_factory=list)  # per image (M, 4) COCO [x, y, w, h], original pixels
    labels: list[np.ndarray] = field(default_factory=list)  # per image (M,) contiguous label ids
    image_ids: list[int] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)  # contiguous label -> COCO category id
    coco_path: Path | None = None

    def input_boxes(self, index: int, original_size: tuple[int, int]) -> np.ndarray:
        """(M, 4) x1y1x2y2 in network-input pixels (what training targets are built from)."""
        height, width = self.preprocessing.input_size
        orig_h, orig_w = original_size
        scale = np.array([width / orig_w, height / orig_h] * 2, np.float32)
        boxes = [np.array([x, y, x + w, y + h], np.float32) * scale for x, y, w, h in self.boxes_xywh[index].tolist()]
        return np.array(boxes, np.float32).reshape(-1, 4)


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
    """Index an ImageFolder tree (no pixel is read). `class_names` (from a checkpoint) must match the folder's classes."""
    samples, found = list_image_folder(root)
    if class_names is not None and list(class_names) != found:
        raise UserError(f"{root} has classes {found}, but the model was trained on {list(class_names)}")
    if limit is not None:
        samples = evenly_spaced(samples, limit)
    return ClassificationData([p for p, _ in samples], found, preprocessing, labels=np.array([label for _, label in samples], np.int64))


def evenly_spaced(items: list, limit: int) -> list:
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


# A box coordinate's bound when the image entry gives no size (the largest image edgemnv2 decodes has
# 64 M pixels: any real box is far inside this).
MAX_BOX_COORDINATE = 1e6


def _checked_box(ann: dict, entry: dict, annotations: Path) -> tuple[float, float, float, float]:
    """A COCO bbox [x, y, width, height], refused unless finite, of positive width and height, and
    within its image: the image entry's width and height when it gives them (a box may spill over an
    edge, but not lie further out than the image's own size), else |coordinates| <= MAX_BOX_COORDINATE.
    NaN, infinity, 1e308 or a negative size would otherwise flow silently into targets and metrics."""
    bbox = ann["bbox"]
    try:  # not 4 numbers: TypeError/ValueError, the caller's one line about types
        x, y, w, h = (float(v) for v in bbox)  # json reads 1e400 as inf and NaN as nan
    except OverflowError:  # an integer beyond any float
        x = y = w = h = math.inf
    problem = None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        problem = "a value that is not a finite number"
    elif w <= 0 or h <= 0:
        problem = "a width or height that is not positive"
    else:
        width, height = entry.get("width"), entry.get("height")
        sized = _is_size(width) and _is_size(height)
        if sized and not (-width <= x and x + w <= 2 * width and -height <= y and y + h <= 2 * height):
            problem = f"a box outside its {width}x{height} image"
        elif not sized and max(abs(x), abs(y), abs(x + w), abs(y + h)) > MAX_BOX_COORDINATE:
            problem = f"a coordinate beyond {MAX_BOX_COORDINATE:g}"
    if problem:
        raise UserError(f"{annotations}: annotation {_shown(ann.get('id'))} (image {_shown(entry.get('id'))}) has bbox {_shown(bbox)}, {problem}; "
                        "fix or remove that annotation")
    return x, y, w, h


def _is_size(value) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    except OverflowError:
        return False


def _shown(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple)) else repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def load_coco(annotations: Path, image_dir: Path, preprocessing: Preprocessing, limit: int | None = None) -> DetectionData:
    """Index COCO detection JSON and its image folder (no pixel is read; a missing image is found when read)."""
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
        data = DetectionData([], names, preprocessing, category_ids=[c["id"] for c in categories], coco_path=annotations)
        for entry in entries:
            image_boxes, image_labels = [], []
            for ann in by_image.get(entry["id"], []):
                x, y, w, h = _checked_box(ann, entry, annotations)
                if ann["category_id"] not in label_of:
                    raise UserError(f"{annotations}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
                image_boxes.append((x, y, w, h))
                image_labels.append(label_of[ann["category_id"]])
            data.paths.append(_safe_member(image_dir, entry["file_name"]))
            data.boxes_xywh.append(np.array(image_boxes, np.float64).reshape(-1, 4))
            data.labels.append(np.array(image_labels, np.int64))
            data.image_ids.append(entry["id"])
    except KeyError as exc:
        raise UserError(f"{annotations}: an entry lacks the COCO key {exc} (images need id and file_name; annotations need "
                        "image_id, bbox [x, y, w, h] and category_id; categories need id and name)") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{annotations}: a COCO entry has a value of the wrong type ({exc}); bbox must be 4 numbers, "
                        "file_name a string, ids numbers") from None
    return data


def resolve_detection_split(data_root: Path, split: str) -> tuple[Path, Path]:
    """The shapes/COCO layout: ROOT/annotations/instances_<split>.json + ROOT/<split>/ images."""
    data_root = Path(data_root)
    ann = data_root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise UserError(f"no COCO annotations for split '{split}' at {ann} (expected ROOT/annotations/instances_{split}.json)")
    return ann, data_root / split
