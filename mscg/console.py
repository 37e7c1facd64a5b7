"""stderr is for people: messages and rich progress bars (the bars silent when stderr is not a terminal, all but
warnings and errors silent with `mscg --quiet`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

stderr = Console(stderr=True, highlight=False)


QUIET = {"on": False}  # `mscg --quiet` (or MSCG_QUIET=1): only warnings and errors on stderr
LOG_SECONDS = 60.0  # not on a terminal: a status line a minute (and each better validation)


def is_quiet() -> bool:
    return QUIET["on"] or os.environ.get("MSCG_QUIET") == "1"


def info(message: str) -> None:
    """A line for the person running the command (stderr; never data). No markup is interpreted."""
    if not is_quiet():
        stderr.print(message, soft_wrap=True, markup=False)


def plural(n: int, noun: str) -> str:
    """"1 user", "2 users" (with thousands separators)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


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
        disable=not stderr.is_terminal or is_quiet(),
        transient=False,
    )
    with progress:
        yield progress


class _Returning:
    """Iterate over a generator and keep its return value."""

    def __init__(self, events):
        self.events = events
        self.value = None

    def __iter__(self):
        self.value = yield from self.events


def render(events, description: str, metric: str = "ndcg@10", quiet: bool = False, on_info=None):
    """Consume a fit's events (mscg.training.loop.Event) as a progress bar and a line per validated epoch (when
    stderr is not a terminal: per better validation, else one a minute); returns the fit's return value.
    `quiet` (non-writing ranks of a distributed run) only drives it.

    "phase" events (a pass outside the training loop, e.g. coding every image) get a bar of their own;
    "info" events (what a fit found while setting up) go to `on_info(event.info)`, quiet or not.
    """
    import time

    events = _Returning(events)
    if quiet:
        for event in events:
            if event.kind == "info" and on_info is not None:
                on_info(event.info)
        return events.value
    terminal = stderr.is_terminal
    log_every = LOG_SECONDS if not terminal else float("inf")  # logs get a status line a minute
    last_log = time.monotonic()
    with progress_bar() as bar:
        task = None
        phases: dict[str, int] = {}
        loss_avg = None
        for event in events:
            if event.kind == "info":
                if on_info is not None:
                    on_info(event.info)
            elif event.kind == "warning":
                warn(f"{description}: {event.info['message']}")
            elif event.kind == "phase":
                name = event.info["name"]
                if name not in phases:
                    phases[name] = bar.add_task(name, total=event.total_steps, status="")
                bar.update(phases[name], completed=event.step)
            elif event.kind == "start":
                task = bar.add_task(description, total=event.total_steps, completed=event.step, status="")
                if event.resumed_from is not None:
                    info(f"{description}: resumed from step {event.resumed_from:,}")
            elif event.kind == "step":
                loss_avg = event.loss if loss_avg is None else 0.98 * loss_avg + 0.02 * event.loss
                bar.update(task, completed=event.step, status=f"epoch {event.epoch + 1} loss {loss_avg:.4f}")
                if time.monotonic() - last_log > log_every:
                    last_log = time.monotonic()
                    info(f"{description}: step {event.step:,}/{event.total_steps:,} (epoch {event.epoch + 1}), "
                         f"loss {loss_avg:.4f}")
            elif event.kind == "epoch":
                # a terminal gets every validation; a log only the better ones, and one a minute otherwise
                if event.metric is not None and (terminal or event.is_best or
                                                 time.monotonic() - last_log > log_every):
                    last_log = time.monotonic()
                    mark = " *" if event.is_best else ""
                    info(f"{description}: epoch {event.epoch} valid {metric} {event.metric:.4f}{mark}")
                if event.info.get("stopping"):
                    info(f"{description}: no better validation {metric} for a while; stopping early")
                    bar.update(task, completed=bar.tasks[task].total)
    return events.value
