"""The `edgemnv2` command. Commands live one group per module; this file only wires them and turns
known errors into one line with an exit code CI can tell apart (edgemnv2.errors), unless
EDGEMNV2_DEBUG=1 asks for the traceback.
"""

import os
import signal
import sys
from contextlib import contextmanager

import typer

try:  # typer >= 0.20 ships its own copy of click: its exceptions are not the click package's
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer
    from click import ClickException

from ..distributed import leave, peer_failure, quiet_rank, report_failure
from ..errors import EXIT_CHECK_FAILED, EXIT_CODES_HELP, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, CheckFailed, InternalError, Terminated, UserError, printable
from ..quiet import default_log
from ..version import __version__
from . import bench_cmd, bundle_cmd, convert_cmd, data_cmd, debug_cmd, demo_cmd, eval_cmd, info_cmd, predict_cmd, profile_cmd, sensitivity_cmd, train_cmd, validate_cmd
from .common import console, out

app = typer.Typer(
    name="edgemnv2",
    help="Deploy MobileNetV2 classifiers and CenterNet detectors to edge runtimes, with measured int8 drift.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
)


def _print_version(value: bool) -> None:
    if value:

        print(f"edgemnv2 {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")) -> None:
    pass  # options of the command itself; the help text is the Typer's
app.add_typer(data_cmd.app, name="data")
app.add_typer(bench_cmd.app, name="bench")
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.evaluate)
app.command("info")(info_cmd.info)
app.command("convert")(convert_cmd.convert)
app.command("validate")(validate_cmd.validate)
app.command("sensitivity")(sensitivity_cmd.sensitivity)
app.command("predict")(predict_cmd.predict)
app.command("profile")(profile_cmd.profile)
app.command("debug")(debug_cmd.debug)
app.command("bundle")(bundle_cmd.bundle)
app.command("demo")(demo_cmd.demo)


INTERRUPTED_MESSAGE = "edgemnv2: interrupted; nothing partial was left behind"
TERMINATED_MESSAGE = "edgemnv2: terminated; nothing partial was left behind"


def _debug() -> bool:
    return os.environ.get("EDGEMNV2_DEBUG", "") not in ("", "0")


_signal_seen: list[int] = []  # typer turns any KeyboardInterrupt into exit 130; this says which signal it was


def _raise_terminated(signum, frame):
    _signal_seen.append(signum)
    raise Terminated()


def _interrupted(code: int) -> int:
    peer = peer_failure()
    if peer is not None:  # torchrun stops the other ranks when one fails: that rank said why
        return peer["code"]
    if _signal_seen and _signal_seen[-1] == signal.SIGTERM:
        print(TERMINATED_MESSAGE, file=sys.stderr)
        return EXIT_TERMINATED
    print(INTERRUPTED_MESSAGE, file=sys.stderr)
    return code


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (CI cancelling a job, `kill`, a container stopping) unwinds like Ctrl-C, so every
    `finally` that removes temporary files runs. Only the main thread may install a handler."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. called from a library user's worker)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_other_ranks() -> None:
    """Under torchrun, one progress bar and one table: rank 0's. An error prints on the rank that met it
    (once, when every rank met the same one: edgemnv2.distributed.report_failure)."""
    if quiet_rank():
        os.environ["EDGEMNV2_NO_PROGRESS"] = "1"
        console.quiet = out.quiet = True


def run(argv: list[str] | None = None) -> int:
    _signal_seen.clear()
    _quiet_other_ranks()
    try:
        with _sigterm_as_interrupt():
            code = app(args=argv, standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C (and our SIGTERM) into exit code 130
            return _interrupted(code)
        return code if isinstance(code, int) else 0
    except (UserError, CheckFailed, InternalError) as exc:
        if _debug():
            raise
        if report_failure(exc.exit_code, str(exc)):  # under torchrun: the other ranks learn why, and it prints once
            print(f"edgemnv2: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return _interrupted(exc.exit_code) if exc.exit_code == EXIT_INTERRUPTED else exc.exit_code
    except ClickException as exc:  # bad options: click's own one-line message, exit 2
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):  # Terminated included
        return _interrupted(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug, not a user mistake: one line here, the traceback in a log file
        if _debug():
            raise
        if getattr(exc, "expected", False):  # the artifact's fault (its runner died, its runtime refused it): exit 1
            if report_failure(EXIT_CHECK_FAILED, str(exc)):
                print(f"edgemnv2: error: {printable(exc)}", file=sys.stderr)
            return EXIT_CHECK_FAILED
        peer = peer_failure()
        if peer is not None:  # a collective broke because another torchrun rank stopped: that rank said why
            return peer["code"]
        print(f"edgemnv2: internal error: {type(exc).__name__}: {printable(exc)} (traceback in {_write_traceback(exc)}; EDGEMNV2_DEBUG=1 shows it here)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _write_traceback(exc: BaseException) -> str:
    """The bug's traceback in a new file beside the runs' logs; -> its path (or why there is none)."""
    import traceback

    path = default_log("internal-error")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(exc)))
    except OSError as error:
        return f"no file: {error.strerror or error}"
    return str(path)


def main() -> None:
    code = run()
    leave()  # a torchrun rank leaves its group before exiting
    sys.exit(code)


if __name__ == "__main__":
    main()
