"""`edgemnv2 bench ...`: the benchmarks in benchmarks/, reachable from the CLI (source checkouts)."""

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Benchmarks (tables of latency and size; see benchmarks/README.md).", no_args_is_help=True)
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, argv: list[str]) -> None:
    from ..errors import UserError

    path = BENCHMARKS / f"{script}.py"
    if not path.is_file():
        raise UserError(f"benchmarks/{script}.py not found next to the package; run from a source checkout (pip install -e .)")
    spec = importlib.util.spec_from_file_location(f"benchmarks.{script}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(argv)
    if code:
        raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def backbones(ctx: typer.Context) -> None:
    """CenterNet backbones (article-code, MobileNetV1/V2, DLA-34): params, latency, int8, loss, mAP."""
    _run("backbones", list(ctx.args))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def targets(ctx: typer.Context) -> None:
    """Every target x precision of MobileNetV2 1.0 at 224 beside eager fp32."""
    _run("targets", list(ctx.args))
