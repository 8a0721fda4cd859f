"""Helpers shared by CLI commands: thread setup, console, and dataset loading by task."""

import sys
from pathlib import Path

import torch
from rich.console import Console

from ..data.datasets import load_coco, load_image_folder, resolve_detection_split
from ..data.preprocess import Preprocessing
from ..errors import UserError

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
# markup=False: paths, class names and messages are user text; "[x]" in a path must print as it is
# (with markup on, it vanished, and an unmatched "[/x]" crashed). Colours go through style=.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, markup=False)
out = Console(width=None if sys.stdout.isatty() else 160, markup=False)


def set_threads(threads: int) -> int:
    if threads < 1:
        raise UserError("--threads must be at least 1")
    torch.set_num_threads(threads)
    return threads


def load_split(task: str, root: Path, split: str, preprocessing: Preprocessing, limit: int | None = None, class_names=None):
    """classification: ROOT/<split>/<class>/*.png; detection: ROOT/annotations/instances_<split>.json + ROOT/<split>/."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"dataset folder not found: {root}")
    if task == "classification":
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(f"no '{split}' split in {root} (expected {split_dir} as an ImageFolder tree)")
        return load_image_folder(split_dir, preprocessing, limit, class_names)
    ann, images = resolve_detection_split(root, split)
    data = load_coco(ann, images, preprocessing, limit)
    if class_names is not None and list(class_names) != data.class_names:
        raise UserError(f"{ann} has categories {data.class_names}, but the model was trained on {list(class_names)}")
    return data
