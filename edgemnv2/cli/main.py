"""The `edgemnv2` command. Commands live one group per module; this file only wires them and turns
known errors into one line (exit 1) unless EDGEMNV2_DEBUG=1 asks for the traceback.
"""

import os
import sys

import click
import typer

from ..errors import UserError
from . import bundle_cmd, convert_cmd, data_cmd, demo_cmd, eval_cmd, info_cmd, predict_cmd, sensitivity_cmd, train_cmd, validate_cmd

app = typer.Typer(
    name="edgemnv2",
    help="Deploy MobileNetV2 classifiers and CenterNet detectors to edge runtimes, with measured int8 drift.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cmd.app, name="data")
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.evaluate)
app.command("info")(info_cmd.info)
app.command("convert")(convert_cmd.convert)
app.command("validate")(validate_cmd.validate)
app.command("sensitivity")(sensitivity_cmd.sensitivity)
app.command("predict")(predict_cmd.predict)
app.command("bundle")(bundle_cmd.bundle)
app.command("demo")(demo_cmd.demo)


def _debug() -> bool:
    return os.environ.get("EDGEMNV2_DEBUG", "") not in ("", "0")


def run(argv: list[str] | None = None) -> int:
    try:
        code = app(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except UserError as exc:
        if _debug():
            raise
        print(f"edgemnv2: error: {exc}", file=sys.stderr)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:  # bad options: click's own one-line message, exit 2
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        print("edgemnv2: interrupted; nothing partial was left behind", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user mistake: say so in one line, keep the traceback opt-in
        if _debug():
            raise
        print(f"edgemnv2: internal error: {type(exc).__name__}: {exc} (EDGEMNV2_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
