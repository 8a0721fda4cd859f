"""Third-party noise goes to a log file; the terminal keeps the project's own lines.

Converting to four runtimes prints a great deal nobody asked for: torch deprecation warnings,
coremltools' and litert-torch's progress bars and logs, XNNPACK and cpuinfo lines written from C
straight to file descriptors 1 and 2. Inside `third_party_to(log)`, the descriptors themselves
point at the log, so all of that lands there whatever wrote it (Python or C), while the project's
consoles and progress bars write to duplicates of the real terminal. `--verbose` skips all this.
"""

import functools
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class _Terminal:
    """Where the project's own progress goes: sys.stderr, or the real terminal inside the block."""

    stream = None

    def get(self):
        return self.stream or sys.stderr


TERMINAL = _Terminal()


def _log_warning(log, message, category, filename, lineno, file=None, line=None) -> None:
    try:
        log.write(warnings.formatwarning(message, category, filename, lineno, line))
    except (OSError, ValueError):  # a full disk or a closed log must not turn a warning into an error
        pass


def default_log(command: str) -> Path:
    """A new log file per run: $EDGEMNV2_LOG_DIR, else ~/.cache/edgemnv2/logs/<command>-<time>-<pid>.log."""
    import time

    root = Path(os.environ.get("EDGEMNV2_LOG_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgemnv2" / "logs")
    return root / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _terminal(stream, fd: int, saved_fd: int):
    """A stream to the real terminal: a duplicate of the saved descriptor when `stream` writes to
    `fd`; else `stream` itself (a test's capture buffer, a notebook's widget: dup2 cannot touch it)."""
    try:
        if stream.fileno() == fd:
            return os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8", errors="replace"), True
    except (AttributeError, OSError, ValueError):
        pass
    return stream, False


@contextmanager
def third_party_to(log_path: Path | None, consoles=()) -> Iterator[Path | None]:
    """Send everything written to stdout/stderr (fds 1 and 2, print, warnings, logging) to
    `log_path`; `consoles` (rich Consoles) keep writing to the terminal. None: change nothing."""
    if log_path is None:
        yield None
        return
    log_path = Path(log_path)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    except OSError:  # no writable place for the log: keep the noise on the terminal rather than fail the command
        yield None
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminals, owned = {}, []
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        terminals[fd], made = _terminal(stream, fd, saved[fd])
        if made:
            owned.append(terminals[fd])
    log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    # rich resolves a console without a file to sys.stdout/sys.stderr at each write; keep that
    # (None) rather than the stream of the moment, so a later swap of sys.stderr is still followed
    previous_files = [(console, console._file) for console in consoles]
    root = logging.getLogger()
    previous_handlers, previous_level = root.handlers[:], root.level
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous_tqdm = os.environ.get("TQDM_DISABLE")
    try:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)  # C code (XNNPACK, cpuinfo, TFLite) writes to the descriptors directly
        for console, _ in previous_files:
            console.file = terminals[2 if console.stderr else 1]
        TERMINAL.stream = terminals[2]
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        os.environ["TQDM_DISABLE"] = "1"  # coremltools' progress bars: not even in the log
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = functools.partial(_log_warning, log)
            yield log_path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        for console, file in previous_files:
            console._file = file
        TERMINAL.stream = None
        root.handlers = previous_handlers
        root.setLevel(previous_level)
        if previous_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous_tqdm
        for terminal in owned:
            terminal.close()
        log.close()
