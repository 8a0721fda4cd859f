"""User-facing errors and the exit codes CI can tell apart.

    0    every check passed
    1    a check failed: a gate failed, an artifact could not be checked, a conversion failed
    2    bad input or usage: missing file, typo in an option, bad gates file, malformed data
    3    internal error (a bug: EDGEMNV2_DEBUG=1 shows the traceback)
    130  interrupted (SIGINT, Ctrl-C)
    143  terminated (SIGTERM)
Either signal removes the temporary files of the interrupted step; nothing partial is left.
"""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

EXIT_CODES_HELP = (
    "Exit codes: 0 all checks passed; 1 a gate failed or an artifact could not be checked; "
    "2 bad input or usage; 3 internal error; 130 interrupted; 143 terminated."
)


class UserError(Exception):
    """A mistake in the user's input (file, option, data). One line on stderr, exit 2."""

    exit_code = EXIT_USAGE


class CheckFailed(Exception):
    """The command ran, and what it was asked to check or build did not pass. One line, exit 1."""

    exit_code = EXIT_CHECK_FAILED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same cleanup runs; exits 143 instead of 130."""


def did_you_mean(name: str, valid: list[str] | tuple[str, ...], what: str) -> UserError:
    """An error for an unknown name that lists the valid ones and the closest match."""
    import difflib

    close = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown {what} '{name}'.{hint} Valid: {', '.join(valid)}")
