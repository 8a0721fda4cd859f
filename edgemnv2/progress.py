"""One progress bar style for every long loop (rich), silent when output is not a terminal or under CI."""

import os
from typing import Iterable, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .quiet import TERMINAL

T = TypeVar("T")


def progress_enabled() -> bool:
    return TERMINAL.get().isatty() and not os.environ.get("CI") and not os.environ.get("EDGEMNV2_NO_PROGRESS")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    if not progress_enabled():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=Console(file=TERMINAL.get())) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
