"""Render training events as a rich progress bar (stderr) and a line per validated epoch."""

from __future__ import annotations

import time
from collections.abc import Iterator

from mscg.console import info, progress_bar, stderr
from mscg.training.loop import Event


def render(events: Iterator[Event], description: str, metric: str = "ndcg@10", quiet: bool = False) -> None:
    """Consume the loop's events; `quiet` (non-writing ranks) only drives the loop."""
    if quiet:
        for _ in events:
            pass
        return
    log_every = 60.0 if not stderr.is_terminal else float("inf")  # logs get a status line a minute
    last_log = time.monotonic()
    with progress_bar() as bar:
        task = None
        loss_avg = None
        for event in events:
            if event.kind == "start":
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
                if event.metric is not None:
                    mark = " *" if event.is_best else ""
                    info(f"{description}: epoch {event.epoch} valid {metric} {event.metric:.4f}{mark}")
                if event.info.get("stopping"):
                    info(f"{description}: no better validation {metric} for a while; stopping early")
                    bar.update(task, completed=bar.tasks[0].total)
