from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from conversion import TARGETS, pt2e_quantizers

from ..errors import UserError
from ..services import layer_sensitivity
from .common import out, set_threads

# from the registry: each PT2E quantizer and the targets that quantize with it
QUANTIZER_HELP = "; ".join(f"{name} ({', '.join(t.name for t in TARGETS.values() if t.pt2e_quantizer is quantizer)})"
                           for name, quantizer in pt2e_quantizers().items()) + "."


def print_sensitivity(checkpoint: Path, data: Path, quantizer: str = "xnnpack", observer: str = "histogram", per_tensor: bool = False,
                      calib_size: int = 128, images: int = 16, top: int = 15, arch: str | None = None) -> None:

    if top < 1:
        raise UserError("--top must be at least 1")
    layers = layer_sensitivity(checkpoint, data, quantizer=quantizer, observer=observer, per_tensor=per_tensor, calib_size=calib_size, images=images, arch=arch)
    table = Table("layer (module)", "op", "isolated SQNR dB", "cumulative SQNR dB", "output",
                  title=f"per-layer int8 sensitivity, {quantizer} quantizer, {observer} observer, {'per-tensor' if per_tensor else 'per-channel'} weights; worst first")
    for layer in layers[:top]:
        table.add_row(layer.module, layer.kind, f"{layer.isolated_sqnr_db:.1f}", f"{layer.cumulative_sqnr_db:.1f}", "yes" if layer.feeds_output else "")
    out.print(table)
    out.print(f"{len(layers)} layers; isolated = the layer's own error (fp32 inputs); cumulative = error reaching it through the int8 network. "
              "A layer far below the others in the isolated column is the one to keep in higher precision or recalibrate. "
              "An output layer's figures include its output's rounding. Layers whose outputs hold class scores (logits, a heatmap) "
              "cost more than their SQNR shows: the task decides on their values, and rounding makes ties; convert --max-drop keeps "
              "them in float first.")


def sensitivity(
    checkpoint: Annotated[Path, typer.Option(help="Trained checkpoint.")],
    data: Annotated[Path, typer.Option(help="Dataset root: calib/ calibrates, val/ evaluates (any image folder works).")],
    quantizer: Annotated[str, typer.Option(help=QUANTIZER_HELP)] = "xnnpack",
    observer: Annotated[str, typer.Option(help="histogram, minmax or moving_average.")] = "histogram",
    per_tensor: Annotated[bool, typer.Option("--per-tensor", help="Per-tensor weights (to see what they cost).")] = False,
    calib_size: Annotated[int, typer.Option(help="Calibration images.")] = 128,
    images: Annotated[int, typer.Option(help="Evaluation images.")] = 16,
    top: Annotated[int, typer.Option(help="Rows to show.")] = 15,
    arch: Annotated[Optional[str], typer.Option(help="Model name, only for bare state dicts.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
) -> None:
    """Per-layer int8 sensitivity: SQNR of each quantized layer against fp32, worst first."""
    threads = set_threads(threads)
    print_sensitivity(checkpoint, data, quantizer, observer, per_tensor, calib_size, images, top, arch)
