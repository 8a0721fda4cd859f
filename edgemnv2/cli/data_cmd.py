from pathlib import Path
from typing import Annotated, Optional

import typer

from ..data.shapes import DIFFICULTIES, ShapesConfig, generate
from ..errors import UserError, did_you_mean
from .common import console

app = typer.Typer(help="Make the built-in demo data.", no_args_is_help=True)


@app.command("shapes")
def shapes(
    out: Annotated[Path, typer.Option(help="Output folder (classification/ and detection/ go inside).")] = Path("data/shapes"),
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes byte-identical files.")] = 0,
    scale: Annotated[float, typer.Option(help="Multiply every split's image count (e.g. 0.1 for a quick set).")] = 1.0,
    difficulty: Annotated[str, typer.Option(help="standard (the demo's), or gentle: no clutter, blur or occluders, for smoke tests with minutes of training.")] = "standard",
    size: Annotated[Optional[int], typer.Option(help="Image side in pixels (default: 64 classification, 128 detection); e.g. 224 for ImageNet-size images.")] = None,
    count: Annotated[Optional[int], typer.Option(help="Images in the val split (e.g. 20000 for a real-size validation set); train and calib keep their --scale sizes.")] = None,
    task: Annotated[str, typer.Option(help="classification, detection or both.")] = "both",
    workers: Annotated[int, typer.Option(help="Processes rendering images (the files are identical for any number).")] = 1,
) -> None:
    """Generate the deterministic synthetic shapes dataset (ImageFolder + COCO JSON)."""
    if difficulty not in DIFFICULTIES:
        raise did_you_mean(difficulty, sorted(DIFFICULTIES), "difficulty")
    tasks = {"both": ("classification", "detection"), "classification": ("classification",), "detection": ("detection",)}
    if task not in tasks:
        raise did_you_mean(task, list(tasks), "task")
    if (size is not None and size < 16) or (count is not None and count < 1) or workers < 1 or scale <= 0:
        raise UserError("--size must be at least 16, --count and --workers at least 1, --scale above 0")
    base = ShapesConfig(seed=seed)
    classification_counts = [max(10, int(c * scale)) for c in base.classification_counts]
    detection_counts = [max(4, int(c * scale)) for c in base.detection_counts]
    if count is not None:
        classification_counts[1] = detection_counts[1] = count
    config = ShapesConfig(
        seed=seed,
        difficulty=DIFFICULTIES[difficulty],
        classification_counts=tuple(classification_counts),
        detection_counts=tuple(detection_counts),
        classification_size=size or base.classification_size,
        detection_size=size or base.detection_size,
    )
    summary = generate(out, config, tasks[task], workers=workers)
    console.print(f"wrote shapes data to {out}: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
