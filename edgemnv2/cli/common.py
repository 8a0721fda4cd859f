"""Helpers shared by CLI commands: thread setup, console, and dataset loading by task."""

import os
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.segment import Segment

from ..data.preprocess import Preprocessing
from ..errors import UserError, printable
from ..quiet import default_log, third_party_to
from ..tasks import get_task


class PrintableConsole(Console):
    """A rich Console whose text cannot drive the terminal: class names, task names, paths and
    messages come from files, and an ESC or BEL in one must show escaped (edgemnv2.errors.printable),
    not clear the screen or retitle the window. Rich's own control segments (cursor moves of a
    progress bar) and the styles it renders are its own, and pass."""

    def render_str(self, text: str, **kwargs):  # strings, escaped before they are measured (tables stay aligned)
        return super().render_str(printable(text, keep_newlines=True), **kwargs)

    def _render_buffer(self, buffer) -> str:  # and anything else (Text objects), as it is written
        return super()._render_buffer([Segment(printable(text, keep_newlines=True), style, control) if control is None else Segment(text, style, control)
                                       for text, style, control in buffer])


# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
# markup=False: paths, class names and messages are user text; "[x]" in a path must print as it is
# (with markup on, it vanished, and an unmatched "[/x]" crashed). Colours go through style=.
console = PrintableConsole(stderr=True, width=None if sys.stderr.isatty() else 160, markup=False)
out = PrintableConsole(width=None if sys.stdout.isatty() else 160, markup=False)


def usable_cores() -> int:
    """The cores this process may run on (a taskset or cgroup cpuset narrows them), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """The thread count this process computes with. Under torchrun, the ranks on one machine share its
    cores: a count that would oversubscribe them (local ranks x threads > cores) is cut to cores / local
    ranks, and said once. Oversubscribed OpenMP threads spin through each other's time slices (measured
    on 2 cores, two 2-thread torch processes: 730 ms a call against 6.5 ms alone)."""
    if threads < 1:
        raise UserError("--threads must be at least 1")
    ranks, cores = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), usable_cores()
    if ranks > 1 and threads * ranks > cores:
        fitted = max(1, cores // ranks)
        if os.environ.get("LOCAL_RANK", "0") == "0":
            console.print(f"--threads {threads} x {ranks} ranks would oversubscribe this machine's {cores} cores: {fitted} per rank")
        threads = fitted
    torch.set_num_threads(threads)
    return threads


def load_split(task: str, root: Path, split: str, preprocessing: Preprocessing, limit: int | None = None, class_names=None):
    """The task's own layout (edgemnv2.tasks): ImageFolder for classification, COCO for detection."""
    return get_task(task).load_split(Path(root), split, preprocessing, limit, class_names)


def emit_json(value) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else there (tables go to stderr)."""
    import json

    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def third_party_noise(verbose: bool, log: Path | None, default: Path | str):
    """Third-party warnings, logs and progress bars go to a log file unless --verbose (edgemnv2/quiet.py).

    `default`: a path, or a command name for a new file per run under the user's cache (convert and
    validate never write a log into their output folders: a read-only destination, or a folder whose
    contents a caller checks, stays untouched)."""

    chosen = log or (default_log(default) if isinstance(default, str) else default)
    return third_party_to(None if verbose else chosen, consoles=(console, out))


VERBOSE_HELP = "Show third-party warnings, logs and progress bars (torch, coremltools, litert-torch, XNNPACK) instead of writing them to the log file."
LOG_HELP = "Where third-party output goes without --verbose (default: a new file under ~/.cache/edgemnv2/logs/)."
