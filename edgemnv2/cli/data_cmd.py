from pathlib import Path
from typing import Annotated

import typer

from ..data.shapes import DIFFICULTIES, ShapesConfig, generate
from ..errors import did_you_mean
from .common import console

app = typer.Typer(help="Make the built-in demo data.", no_args_is_help=True)


@app.command("shapes")
def shapes(
    out: Annotated[Path, typer.Option(help="Output folder (classification/ and detection/ go inside).")] = Path("data/shapes"),
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes byte-identical files.")] = 0,
    scale: Annotated[float, typer.Option(help="Multiply every split's image count (e.g. 0.1 for a quick set).")] = 1.0,
    difficulty: Annotated[str, typer.Option(help="standard (the demo's), or gentle: no clutter, blur or occluders, for smoke tests with minutes of training.")] = "standard",
) -> None:
    """Generate the deterministic synthetic shapes dataset (ImageFolder + COCO JSON)."""
    if difficulty not in DIFFICULTIES:
        raise did_you_mean(difficulty, sorted(DIFFICULTIES), "difficulty")
    base = ShapesConfig(seed=seed)
    config = ShapesConfig(
        seed=seed,
        difficulty=DIFFICULTIES[difficulty],
        classification_counts=tuple(max(10, int(c * scale)) for c in base.classification_counts),
        detection_counts=tuple(max(4, int(c * scale)) for c in base.detection_counts),
    )
    summary = generate(out, config)
    console.print(f"wrote shapes data to {out}: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
