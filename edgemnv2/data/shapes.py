"""The built-in demo data: a deterministic synthetic "shapes" dataset written as real PNG files.

Hard on purpose, so a trained model stays below 100% and quantization drift can show: colours
(each class has a typical hue most of the time, as real objects do; any colour otherwise; always
above a contrast floor), sizes, rotations and aspect jitter; gradient, striped and noisy
backgrounds; clutter (lines and small distractor shapes); occluding patches; sensor noise and blur.
Look-alike pairs (pentagon/hexagon, circle/ellipse, ring/crescent at small sizes) add honest
confusion. Every image has its own RNG seeded by (seed, split, index): output is byte-identical
run to run and independent of generation order.

Layout written under ROOT:
  classification/{train,val,calib}/<class>/<index>.png          (an ImageFolder tree)
  detection/{train,val,calib}/<index>.png
  detection/annotations/instances_{train,val,calib}.json         (COCO format)
"""

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..progress import progress

CLASSIFICATION_CLASSES = (
    "circle", "ellipse", "triangle", "square", "pentagon", "hexagon", "star", "cross", "ring", "crescent",
)
DETECTION_CLASSES = ("circle", "triangle", "square", "star", "cross", "ring")
SPLITS = ("train", "val", "calib")
SUPERSAMPLE = 2  # draw at 2x then downsample: anti-aliased edges like a real camera


@dataclass(frozen=True)
class Difficulty:
    """The knobs that make the task hard. The defaults are the built-in dataset's: tuned so a small
    MobileNetV2 learns it inside the demo's budget yet stays well below 100%."""

    typical_colour_probability: float = 0.85  # how often a class wears its typical hue
    blur_probability: float = 0.15
    background_contrast: float = 0.5  # how far a background's second colour may be from its first (0..1)
    classification_clutter: int = 2  # up to this many distractors (lines, small shapes) per image
    classification_occlusion: float = 0.3  # probability of an occluding blob on the object
    detection_occlusion: float = 0.2


# For smoke tests whose models get a minute of training: no clutter, blur or classification
# occluders, so a tiny model gets past guessing and fewer of its answers are near-ties that int8
# rounding flips. Colour still misleads 15% of the time, so shape must be learned and fp32 stays
# well below 100% (a 48x48 model after one minute: ~70%).
GENTLE = Difficulty(blur_probability=0.0, classification_clutter=0, classification_occlusion=0.0, detection_occlusion=0.1)
DIFFICULTIES = {"standard": Difficulty(), "gentle": GENTLE}


@dataclass(frozen=True)
class ShapesConfig:
    seed: int = 0
    classification_size: int = 64
    classification_counts: tuple[int, int, int] = (18000, 1000, 500)  # train, val, calib
    detection_size: int = 128
    detection_counts: tuple[int, int, int] = (2000, 300, 100)
    max_objects: int = 8
    difficulty: Difficulty = Difficulty()


def _regular_polygon(sides: int, radius: float, phase: float = -math.pi / 2):
    return [(radius * math.cos(phase + 2 * math.pi * k / sides), radius * math.sin(phase + 2 * math.pi * k / sides)) for k in range(sides)]


def _shape_mask(kind: str, radius: float, angle: float, rng: np.random.Generator) -> Image.Image:
    """A white-on-black mask of one shape, centred in a square canvas, rotated by `angle` degrees."""
    side = int(math.ceil(radius * 2 + 4))
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    c = side / 2
    r = radius

    def poly(points):
        draw.polygon([(c + x, c + y) for x, y in points], fill=255)

    if kind == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif kind == "ellipse":
        ry = r * rng.uniform(0.45, 0.7)
        draw.ellipse([c - r, c - ry, c + r, c + ry], fill=255)
    elif kind in ("triangle", "square", "pentagon", "hexagon"):
        sides = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[kind]
        poly(_regular_polygon(sides, r))
    elif kind == "star":
        inner = r * rng.uniform(0.38, 0.5)
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else inner
            a = -math.pi / 2 + math.pi * k / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        poly(pts)
    elif kind == "cross":
        arm = r * rng.uniform(0.28, 0.42)
        draw.rectangle([c - r, c - arm, c + r, c + arm], fill=255)
        draw.rectangle([c - arm, c - r, c + arm, c + r], fill=255)
    elif kind == "ring":
        inner = r * rng.uniform(0.45, 0.65)
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        draw.ellipse([c - inner, c - inner, c + inner, c + inner], fill=0)
    elif kind == "crescent":
        shift = r * rng.uniform(0.35, 0.6)
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        draw.ellipse([c - r + shift, c - r, c + r + shift, c + r], fill=0)
    else:
        raise ValueError(kind)
    return canvas.rotate(angle, resample=Image.BILINEAR)


def _random_colour(rng):
    return tuple(int(v) for v in rng.integers(0, 256, 3))


OCCLUDER_SIZE = (0.2, 0.4)  # fraction of the object's box per side
CLUTTER_SHAPE_SCALE = (0.15, 0.4)  # distractor radius as a fraction of the clutter budget


def _class_colour(label: int, num_classes: int, rng, typical_probability: float):
    """Like real objects, each class has a typical hue most of the time, and any colour otherwise.

    The typical hue gives learning an early foothold; the random rest keeps shape necessary.
    """
    if rng.uniform() >= typical_probability:
        return _random_colour(rng)
    hue = (label / num_classes + rng.normal(0, 0.03)) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0))
    return int(red * 255), int(green * 255), int(blue * 255)


def _contrasting_colour(image: Image.Image, box, rng, min_distance: float = 90.0, first_choice=None):
    """A colour at least `min_distance` (RGB Euclidean) from the mean background under `box`.

    Keeps the task about shape, not about finding a shape that matches its background; contrast
    still varies widely above the floor.
    """
    region = np.asarray(image.crop(tuple(int(v) for v in box)), np.float32).reshape(-1, 3)
    mean = region.mean(axis=0) if len(region) else np.full(3, 128.0, np.float32)
    colour = np.array(first_choice if first_choice is not None else _random_colour(rng), np.float32)
    for _ in range(20):
        if np.linalg.norm(colour - mean) >= min_distance:
            break
        colour = np.array(_random_colour(rng), np.float32)
    else:  # push away from the background mean
        colour = np.where(mean > 127, 0.0, 255.0)
    return tuple(int(v) for v in colour)


def _background(size: int, rng, contrast: float) -> Image.Image:
    style = rng.integers(0, 3)
    a, b = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    b = a + (b - a) * contrast
    if style == 0:  # linear gradient at a random angle
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        t = (np.cos(theta) * xx + np.sin(theta) * yy)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        pixels = a * (1 - t[..., None]) + b * t[..., None]
    elif style == 1:  # stripes
        period = rng.uniform(4, 16) * SUPERSAMPLE
        theta = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:size, 0:size]
        t = (np.sin((np.cos(theta) * xx + np.sin(theta) * yy) / period * 2 * math.pi) > 0).astype(np.float32)
        pixels = a * (1 - t[..., None]) + (a * 0.6 + b * 0.4) * t[..., None]
    else:  # blotchy low-frequency noise
        coarse = rng.uniform(0, 1, (6, 6, 1)).astype(np.float32)
        t = np.array(Image.fromarray((coarse[..., 0] * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)[..., None] / 255
        pixels = a * (1 - t) + b * t
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _add_clutter(image: Image.Image, rng, count: int, max_radius: float, kinds) -> None:
    draw = ImageDraw.Draw(image)
    size = image.size[0]
    for _ in range(count):
        if rng.uniform() < 0.5:
            pts = [tuple(rng.uniform(0, size, 2)) for _ in range(2)]
            draw.line(pts, fill=_random_colour(rng), width=int(rng.integers(1, 3 * SUPERSAMPLE)))
        else:
            radius = rng.uniform(*CLUTTER_SHAPE_SCALE) * max_radius
            mask = _shape_mask(kinds[rng.integers(len(kinds))], radius, rng.uniform(0, 360), rng)
            xy = tuple(int(v) for v in rng.uniform(-radius, size - radius, 2))
            image.paste(Image.new("RGB", mask.size, _random_colour(rng)), xy, mask)


def _paste_shape(image: Image.Image, kind: str, cx: float, cy: float, radius: float, rng, preferred=None) -> tuple[float, float, float, float]:
    """Draw one shape; return its tight box (x1, y1, x2, y2) in the canvas pixels."""
    mask = _shape_mask(kind, radius, rng.uniform(0, 360), rng)
    left, top = int(round(cx - mask.size[0] / 2)), int(round(cy - mask.size[1] / 2))
    colour = _contrasting_colour(image, (left, top, left + mask.size[0], top + mask.size[1]), rng, first_choice=preferred)
    if rng.uniform() < 0.3:  # a shaded fill instead of a flat one
        shade = np.linspace(0.6, 1.2, mask.size[0], dtype=np.float32)[None, :, None] * np.array(colour, np.float32)
        fill = Image.fromarray(np.clip(np.repeat(shade, mask.size[1], axis=0), 0, 255).astype(np.uint8), "RGB")
    else:
        fill = Image.new("RGB", mask.size, colour)
    image.paste(fill, (left, top), mask)
    x1, y1, x2, y2 = mask.getbbox() or (0, 0, mask.size[0], mask.size[1])
    return left + x1, top + y1, left + x2, top + y2


def _occlude(image: Image.Image, box, rng) -> None:
    """Cover part of an object with a textured blob, as real objects get occluded.

    A blob of noise, not a flat rectangle: a flat coloured square on top of a shape would itself
    look like the 'square' class and teach the model a contradiction.
    """
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    pw, ph = max(2, int(w * rng.uniform(*OCCLUDER_SIZE))), max(2, int(h * rng.uniform(*OCCLUDER_SIZE)))
    px, py = int(rng.uniform(x1 - pw / 2, x2 - pw / 2)), int(rng.uniform(y1 - ph / 2, y2 - ph / 2))
    base = np.array(_random_colour(rng), np.float32)
    texture = np.clip(base + rng.normal(0, 40, (ph, pw, 3)), 0, 255).astype(np.uint8)
    mask = Image.new("L", (pw, ph), 0)
    ImageDraw.Draw(mask).ellipse([0, 0, pw - 1, ph - 1], fill=255)
    image.paste(Image.fromarray(texture, "RGB"), (px, py), mask)


def _finish(image: Image.Image, size: int, rng, blur_probability: float) -> Image.Image:
    """Downsample to the final size, maybe blur, add sensor noise."""
    image = image.resize((size, size), Image.BILINEAR)
    if rng.uniform() < blur_probability:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    pixels = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(0, 12), (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _rng(seed: int, task: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, task, SPLITS.index(split), index])


def render_classification(config: ShapesConfig, split: str, index: int) -> tuple[Image.Image, int]:
    rng, hard = _rng(config.seed, 0, split, index), config.difficulty
    label = int(rng.integers(len(CLASSIFICATION_CLASSES)))
    canvas = config.classification_size * SUPERSAMPLE
    image = _background(canvas, rng, hard.background_contrast)
    _add_clutter(image, rng, int(rng.integers(0, hard.classification_clutter + 1)), canvas * 0.25, CLASSIFICATION_CLASSES)
    radius = canvas * rng.uniform(0.24, 0.42)
    cx, cy = rng.uniform(radius * 0.8, canvas - radius * 0.8, 2)
    preferred = _class_colour(label, len(CLASSIFICATION_CLASSES), rng, hard.typical_colour_probability)
    box = _paste_shape(image, CLASSIFICATION_CLASSES[label], cx, cy, radius, rng, preferred)
    if rng.uniform() < hard.classification_occlusion:
        _occlude(image, box, rng)
    return _finish(image, config.classification_size, rng, hard.blur_probability), label


def render_detection(config: ShapesConfig, split: str, index: int) -> tuple[Image.Image, list[tuple[list[float], int]]]:
    rng, hard = _rng(config.seed, 1, split, index), config.difficulty
    canvas = config.detection_size * SUPERSAMPLE
    image = _background(canvas, rng, hard.background_contrast)
    _add_clutter(image, rng, int(rng.integers(0, 6)), canvas * 0.08, DETECTION_CLASSES)
    objects: list[tuple[list[float], int]] = []
    for _ in range(int(rng.integers(1, config.max_objects + 1))):
        label = int(rng.integers(len(DETECTION_CLASSES)))
        radius = canvas * rng.uniform(0.05, 0.17)
        cx, cy = rng.uniform(radius * 0.6, canvas - radius * 0.6, 2)
        box = _paste_shape(image, DETECTION_CLASSES[label], cx, cy, radius, rng)
        if rng.uniform() < hard.detection_occlusion:
            _occlude(image, box, rng)
        # clip to the canvas and go to final-image pixels
        x1, y1, x2, y2 = (max(0, min(canvas, v)) / SUPERSAMPLE for v in box)
        if x2 - x1 >= 2 and y2 - y1 >= 2:
            objects.append(([x1, y1, x2, y2], label))
    return _finish(image, config.detection_size, rng, hard.blur_probability), objects


def _save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=False)


def _write_classification(job: tuple) -> None:
    config, root, split, index = job
    image, label = render_classification(config, split, index)
    _save_png(image, Path(root) / "classification" / split / CLASSIFICATION_CLASSES[label] / f"{index:05d}.png")


def _write_detection(job: tuple) -> tuple[int, int, list]:
    config, root, split, index = job
    image, objects = render_detection(config, split, index)
    _save_png(image, Path(root) / "detection" / split / f"{index:05d}.png")
    return image.width, image.height, objects


def _each(function, jobs: list, workers: int, description: str) -> list:
    """Run `function` over jobs in order, on `workers` processes when more than one. Every image
    is seeded by (seed, task, split, index), so the files are identical however many render them."""
    if workers <= 1 or len(jobs) < 64:
        return [function(job) for job in progress(jobs, description)]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        return list(progress(pool.map(function, jobs, chunksize=32), description, total=len(jobs)))


def _generate_classification(root: Path, config: ShapesConfig, workers: int) -> dict:
    summary = {}
    for split, count in zip(SPLITS, config.classification_counts):
        for name in CLASSIFICATION_CLASSES:
            (root / "classification" / split / name).mkdir(parents=True, exist_ok=True)
        _each(_write_classification, [(config, str(root), split, index) for index in range(count)], workers, f"classification/{split}")
        summary[f"classification/{split}"] = count
    return summary


def _generate_detection(root: Path, config: ShapesConfig, workers: int) -> dict:
    summary = {}
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(DETECTION_CLASSES)]
    for split, count in zip(SPLITS, config.detection_counts):
        (root / "detection" / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        rendered = _each(_write_detection, [(config, str(root), split, index) for index in range(count)], workers, f"detection/{split}")
        for index, (width, height, objects) in enumerate(rendered):
            file_name = f"{index:05d}.png"
            images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
            for (x1, y1, x2, y2), label in objects:
                w, h = x2 - x1, y2 - y1
                annotations.append({
                    "id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                    "area": round(w * h, 2), "iscrowd": 0,
                })
        coco = {"images": images, "annotations": annotations, "categories": categories}
        ann_path = root / "detection" / "annotations" / f"instances_{split}.json"
        ann_path.parent.mkdir(parents=True, exist_ok=True)
        ann_path.write_text(json.dumps(coco))
        summary[f"detection/{split}"] = count
    return summary


# the built-in data's datasets, one folder each under the root (named as the tasks they train)
DATASETS = {"classification": _generate_classification, "detection": _generate_detection}


def generate(root: Path, config: ShapesConfig = ShapesConfig(), tasks=tuple(DATASETS), workers: int = 1) -> dict:
    """Write the datasets named in `tasks` under root; returns a summary. Re-running rewrites identical files."""
    root = Path(root)
    summary = {}
    for name, write in DATASETS.items():
        if name in tasks:
            summary.update(write(root, config, workers))
    return summary
