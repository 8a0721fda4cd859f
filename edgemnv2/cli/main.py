"""The `edgemnv2` command. Commands live one group per module; this file only wires them and turns
known errors into one line (exit 1) unless EDGEMNV2_DEBUG=1 asks for the traceback.
"""

import os
import sys

import typer

try:  # typer >= 0.20 ships its own copy of click: its exceptions are not the click package's
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer
    from click import ClickException

from ..errors import UserError
from . import bench_cmd, bundle_cmd, convert_cmd, data_cmd, demo_cmd, eval_cmd, info_cmd, predict_cmd, sensitivity_cmd, train_cmd, validate_cmd

app = typer.Typer(
    name="edgemnv2",
    help="Deploy MobileNetV2 classifiers and CenterNet detectors to edge runtimes, with measured int8 drift.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(bench_cmd.app, name="bench")
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.evaluate)
app.command("info")(info_cmd.info)
app.command("convert")(convert_cmd.convert)
app.command("validate")(validate_cmd.validate)
app.command("sensitivity")(sensitivity_cmd.sensitivity)
app.command("predict")(predict_cmd.predict)
app.command("bundle")(bundle_cmd.bundle)
app.command("demo")(demo_cmd.demo)


INTERRUPTED = 130  # the shell's code for SIGINT
INTERRUPTED_MESSAGE = "edgemnv2: interrupted; nothing partial was left behind"


def _debug() -> bool:
    return os.environ.get("EDGEMNV2_DEBUG", "") not in ("", "0")


def run(argv: list[str] | None = None) -> int:
    try:
        code = app(args=argv, standalone_mode=False)
        if code == INTERRUPTED:  # typer turns Ctrl-C into exit code 130 and returns it
            print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return code if isinstance(code, int) else 0
    except UserError as exc:
        if _debug():
            raise
        print(f"edgemnv2: error: {exc}", file=sys.stderr)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except ClickException as exc:  # bad options: click's own one-line message, exit 2
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # a bug, not a user mistake: say so in one line, keep the traceback opt-in
        if _debug():
            raise
        print(f"edgemnv2: internal error: {type(exc).__name__}: {exc} (EDGEMNV2_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
