import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..checkpoint import load_checkpoint
from ..errors import UserError
from ..evaluate import torch_runner
from ..tasks import evaluate_runner
from .common import load_split, out, set_threads


def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint to evaluate.")],
    data: Annotated[Path, typer.Option(help="Dataset root (as for `train`).")],
    split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "val",
    arch: Annotated[Optional[str], typer.Option(help="Model name, only for bare state dicts (e.g. the article's).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (images are read from disk in the background, a few batches ahead).")] = 32,
) -> None:
    """Top-1/top-5 for classifiers; COCO mAP@[.5:.95] and mAP@.5 for detectors (pycocotools)."""
    threads = set_threads(threads)
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    model, meta = load_checkpoint(checkpoint, arch)
    dataset = load_split(meta.task, data, split, meta.preprocessing, class_names=meta.class_names)
    if len(dataset) == 0:
        raise UserError(f"the '{split}' split of {data} has no images")
    metrics = evaluate_runner(torch_runner(model), dataset, batch_size=batch_size)
    out.print_json(json.dumps({"checkpoint": str(checkpoint), "split": split, "images": len(dataset), **metrics}))
