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


def debugging() -> bool:
    """EDGEMNV2_DEBUG=1: tracebacks instead of one-line errors."""
    import os

    return os.environ.get("EDGEMNV2_DEBUG", "") not in ("", "0")


def reraise_if_debugging(exc: BaseException) -> None:
    """Where a failure becomes a report row, EDGEMNV2_DEBUG=1 lets it end the run with its traceback."""
    if debugging():
        raise exc


# What must never reach a terminal as it is: control characters (C0, DEL, C1: they move the cursor,
# clear the screen, retitle the window, or split a one-line error), line and paragraph separators,
# and the bidirectional overrides that reorder what is shown.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _is_control(char: str) -> bool:
    import unicodedata

    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI_CONTROLS  # Cs: a non-UTF-8 file name's bytes


def _escaped(char: str) -> str:
    return _NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(text: object, keep_newlines: bool = False) -> str:
    """`text` safe to print: every control character escaped (ESC -> \\x1b, a newline -> \\n), so a
    string read from a file (class names, task names, paths, messages quoting them) shows as what it
    is and cannot drive the terminal. keep_newlines: multi-line output (a table) keeps its line breaks.
    Every error message (UserError, CheckFailed) and everything the CLI's consoles print goes through it."""
    text = str(text)
    if text.isprintable():  # the usual case: nothing to do
        return text
    return "".join(_escaped(c) if _is_control(c) and not (keep_newlines and c == "\n") else c for c in text)


class UserError(Exception):
    """A mistake in the user's input (file, option, data). One line on stderr, exit 2."""

    exit_code = EXIT_USAGE

    def __str__(self) -> str:  # messages quote files' contents: one printable line, always
        return printable(super().__str__())


class CheckFailed(Exception):
    """The command ran, and what it was asked to check or build did not pass. One line, exit 1."""

    exit_code = EXIT_CHECK_FAILED

    def __str__(self) -> str:
        return printable(super().__str__())


class InternalError(Exception):
    """A bug met while other work went on (a conversion among several): one line naming the log
    that holds the traceback, exit 3."""

    exit_code = EXIT_INTERNAL


# Exceptions that mean edgemnv2 itself is wrong, wherever they surface: a converter or a runtime
# rejecting a model raises its own types (or RuntimeError/ValueError with its reason), not these.
PROGRAMMING_ERRORS = (AttributeError, KeyError, IndexError, NameError, TypeError, ZeroDivisionError)
_PROJECT_ROOT = __file__.rsplit("/", 2)[0]
_PROJECT_PACKAGES = tuple(f"{_PROJECT_ROOT}/{package}/" for package in ("edgemnv2", "conversion", "quantization"))


def is_internal_error(exc: BaseException) -> bool:
    """A bug (exit 3, traceback kept) rather than an expected failure (one line): a user's mistake, a
    check that failed, a missing runtime or file, or a converter/runtime refusing the model with its
    own error. A bug is a programming error anywhere, or any other exception raised by edgemnv2's code."""
    if isinstance(exc, (UserError, CheckFailed, OSError, MemoryError)) or getattr(exc, "expected", False):
        return False
    if isinstance(exc, PROGRAMMING_ERRORS):
        return True
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_code.co_filename.startswith(_PROJECT_PACKAGES)


def one_line(exc: BaseException) -> str:
    """The exception's type and whole message on one line (no cut: the cause is often at the end)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same cleanup runs; exits 143 instead of 130."""


def did_you_mean(name: str, valid: list[str] | tuple[str, ...], what: str) -> UserError:
    """An error for an unknown name that lists the valid ones and the closest match."""
    import difflib

    close = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    shown = str(name) if len(str(name)) <= 100 else str(name)[:100] + "..."  # a name read from a file can be any length
    return UserError(f"unknown {what} '{shown}'.{hint} Valid: {', '.join(valid)}")  # printable: UserError.__str__
