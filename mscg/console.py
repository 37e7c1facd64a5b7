"""stderr is for people: messages and rich progress bars, silent when stderr is not a terminal."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True, highlight=False)


def _quiet() -> bool:
    return os.environ.get("MSCG_QUIET") == "1"


def info(message: str) -> None:
    """A line for the person running the command (stderr; never data). No markup is interpreted."""
    if not _quiet():
        stderr.print(message, soft_wrap=True, markup=False)


def warn(message: str) -> None:
    stderr.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


def error(message: str) -> None:
    stderr.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


@contextlib.contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich Progress on stderr; disabled (no output at all) when stderr is not a terminal."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not stderr.is_terminal or _quiet(),
        transient=False,
    )
    with progress:
        yield progress
