from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.table import Table

from ..checkpoint import load_checkpoint
from ..models import MODELS, create_model, get_spec
from ..tasks import get_task
from .common import emit_json, out


def count_macs(model: torch.nn.Module, input_size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() // 2


def info(
    target: Annotated[Optional[str], typer.Argument(help="A checkpoint file or a model name; omit to list the models.")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Input size for MACs (default: the model's).")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes, for a model name (default 1000 classifier / 80 detector).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of the table.")] = False,
) -> None:
    """Parameters, MACs, fp32 size and input size of a model or checkpoint."""
    if target is None and json_output:
        emit_json([{"model": name, "task": spec.task, "default_input": spec.default_input_size, "summary": spec.summary} for name, spec in sorted(MODELS.items())])
        return
    if target is None:
        table = Table("model", "task", "default input", "summary")
        for name, spec in sorted(MODELS.items()):
            table.add_row(name, spec.task, str(spec.default_input_size), spec.summary)
        out.print(table)
        return
    if Path(target).suffix in (".pt", ".pth", ".safetensors") or Path(target).is_file():
        model, meta = load_checkpoint(Path(target))
        name, size, classes = meta.arch, input_size or meta.preprocessing.input_size[0], meta.num_classes
    else:
        spec = get_spec(target)
        classes = num_classes or get_task(spec.task).default_num_classes
        model = create_model(target, num_classes=classes)
        name, size = target, input_size or spec.default_input_size
    params = sum(p.numel() for p in model.parameters())
    if json_output:
        emit_json({"model": name, "task": get_spec(name).task, "classes": classes, "parameters": params, "fp32_mb": params * 4 / 1e6,
                   "input": [1, 3, size, size], "macs": count_macs(model, size)})
        return
    table = Table("property", "value", title=f"{name}")
    table.add_row("task", get_spec(name).task)
    table.add_row("classes", str(classes))
    table.add_row("parameters", f"{params:,}")
    table.add_row("fp32 size", f"{params * 4 / 1e6:.1f} MB")
    table.add_row("input", f"1x3x{size}x{size}")
    table.add_row("MACs", f"{count_macs(model, size) / 1e6:,.1f} M")
    out.print(table)
