"""`edgemnv2 demo`: the whole product on the built-in shapes data, end to end, one command
(edgemnv2.services.run_demo; this file only prints)."""

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from ..services import DemoLog, run_demo
from .common import LOG_HELP, VERBOSE_HELP, console, set_threads, third_party_noise
from .validate_cmd import show_validation


def demo(
    out: Annotated[Path, typer.Option(help="Folder for data, checkpoints and reports.")] = Path("demo"),
    scale: Annotated[float, typer.Option(help="Dataset size multiplier (1.0 = full demo).")] = 1.0,
    epoch_scale: Annotated[float, typer.Option(help="Training epochs multiplier (1.0 = full demo).")] = 1.0,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    log_file: Annotated[Optional[Path], typer.Option("--log", help=LOG_HELP + " Default: <out>/demo.log.")] = None,
) -> None:
    """Make data -> train classifier and detector -> evaluate -> convert to every target -> validate -> bundles.

    Re-running reuses finished stages (data, checkpoints, artifacts).
    """

    threads = set_threads(threads)
    started = time.perf_counter()
    log = DemoLog(stage=lambda title: console.rule(Text(title, style="bold")), line=console.print, validation=show_validation)
    with third_party_noise(verbose, log_file, out / "demo.log") as log_path:
        summary = run_demo(out, scale=scale, epoch_scale=epoch_scale, threads=threads, log=log)
    if log_path is not None:
        console.print(f"third-party output (warnings, converter logs) in {log_path}; --verbose shows it here", style="dim")
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s; summary in {out / 'demo_summary.json'}")
