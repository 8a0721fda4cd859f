"""`edgemnv2 bench ...`: the benchmarks in benchmarks/, reachable from the CLI (source checkouts)."""

import importlib.util
import sys
from pathlib import Path

import typer

from ..errors import UserError

app = typer.Typer(help="Benchmarks (tables of latency and size; see benchmarks/README.md). `edgemnv2 bench NAME --help` lists a benchmark's options.", no_args_is_help=True)
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# Every option (--help included) goes to the benchmark script's own parser, which documents them:
# `edgemnv2 bench targets --help` prints the script's options.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _run(script: str, argv: list[str]) -> None:
    path = BENCHMARKS / f"{script}.py"
    if not path.is_file():
        raise UserError(f"benchmarks/{script}.py not found next to the package; run from a source checkout (pip install -e .)")
    spec = importlib.util.spec_from_file_location(f"benchmarks.{script}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    program, sys.argv[0] = sys.argv[0], f"edgemnv2 bench {script}"  # argparse names itself after argv[0]
    try:
        code = module.main(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2)
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.argv[0] = program
    if code:
        raise typer.Exit(code)


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def backbones(ctx: typer.Context) -> None:
    """CenterNet backbones (article-code, MobileNetV1/V2, DLA-34): params, latency, int8, loss, mAP."""
    _run("backbones", list(ctx.args))


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def targets(ctx: typer.Context) -> None:
    """Every target x precision of MobileNetV2 1.0 at 224 beside eager fp32."""
    _run("targets", list(ctx.args))


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def streaming(ctx: typer.Context) -> None:
    """`validate`'s peak memory and images/s as the validation split grows (--data DIR --counts 1000,20000)."""
    _run("streaming", list(ctx.args))


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def recourse(ctx: typer.Context) -> None:
    """convert --max-drop on the demo models: drop before/after, what the search chose, evaluations, latency (--demo DIR)."""
    _run("recourse", list(ctx.args))


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def fastest(ctx: typer.Context) -> None:
    """The fastest file on this CPU: MobileNetV2 224 and CenterNet 512, fp32 and int8, every target, against the article's detector."""
    _run("fastest", list(ctx.args))


@app.command("accuracy_control", context_settings=PASS_THROUGH, add_help_option=False)  # the script's name, not typer's accuracy-control
def accuracy_control(ctx: typer.Context) -> None:
    """`convert --max-drop` against NNCF's quantize_with_accuracy_control on the demo detector (OpenVINO int8)."""
    _run("accuracy_control", list(ctx.args))
