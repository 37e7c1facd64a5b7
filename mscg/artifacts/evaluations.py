"""Evaluation files as `mscg compare` and `mscg plot` read them: one reader for both.

    an evaluation (`mscg evaluate -o`)   {"users": ..., "recall@10": ..., ...}: one run
    a comparison (`mscg compare -o`)     {NAME: evaluation, ...}: several runs

Each input is `PATH` or `NAME=PATH`. A run's name: NAME (a comparison's runs become NAME/RUN), else the file's
stem for an evaluation (`work/eval_sasrec.json` is `eval_sasrec`) and the comparison's own names for a comparison.
Names given with NAME= must differ; a name read from a file that is already taken gets `-2`, `-3`, ... (the first
keeps its name), so that `compare work/*/eval.json` works.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mscg.artifacts.meta import json_depth, read_json
from mscg.console import warn
from mscg.data.jsonl import shown
from mscg.errors import DataError, UsageError

MAX_DEPTH = 32  # an evaluate output nests 4 levels deep
EVALUATE = "`mscg evaluate -o`"
FILES = f"an evaluation ({EVALUATE}) or a comparison (`mscg compare -o`) file"


def entry(text: str) -> tuple[str | None, Path]:
    """(NAME, PATH) of NAME=PATH, or (None, PATH) (also for a path with "=" in it that exists)."""
    name, sep, rest = text.partition("=")
    if sep and name and not Path(text).exists():
        return name, Path(rest)
    return None, Path(text)


def is_evaluation(obj: Any) -> bool:
    return isinstance(obj, dict) and "users" in obj


def check_metrics(path: str, metrics: Any) -> dict[str, Any]:
    """An evaluate output: a JSON object with an integer "users" and finite numbers (or null) for its metrics.
    A NaN or infinite metric (not JSON; mscg never writes one) is kept as null, with a warning that says so."""
    if not is_evaluation(metrics):
        raise DataError(f"{path} is not a metrics file written by {EVALUATE}")
    if json_depth(metrics) > MAX_DEPTH:
        raise DataError(f"{path} nests more than {MAX_DEPTH} levels deep, so it is not a metrics file written by "
                        f"{EVALUATE}")
    numbers = {k: v for k, v in metrics.items() if k.startswith(("recall@", "ndcg@"))}
    numbers.update({k: metrics[k] for k in ("eval_seconds", "bytes_per_item") if k in metrics})
    for key, value in {"users": metrics["users"], **numbers}.items():
        number = isinstance(value, int if key == "users" else (int, float)) and not isinstance(value, bool)
        if not number and not (value is None and key != "users"):
            raise DataError(f"{path}: \"{key}\" must be a number, found {shown(value)}; pass a metrics file "
                            f"written by {EVALUATE}")
        try:
            finite = value is None or math.isfinite(float(value))
        except OverflowError:  # an integer of hundreds of digits
            raise DataError(f"{path}: \"{key}\" is an integer of {len(str(abs(value)))} digits, too large for a "
                            f"metric; pass a metrics file written by {EVALUATE}") from None
        if not finite:
            warn(f"{path}: \"{key}\" is {value}, which is not a number JSON can hold; it is shown and written as "
                 "null")
            metrics = {**metrics, key: None}
    return metrics


def read_runs(inputs: list[str], *, fix: str = "pass those") -> dict[str, dict[str, Any]]:
    """{run name: metrics} of evaluation and comparison files, named as the module docstring says; `fix` ends the
    message for a file that is neither (what else the command takes)."""
    runs: dict[str, dict[str, Any]] = {}
    for text in inputs:
        name, path = entry(text)
        obj = read_json(path, f"run {EVALUATE} to make it", fix=f"pass {FILES}")
        if is_evaluation(obj):
            found = {name or path.stem: check_metrics(str(path), obj)}
        elif isinstance(obj, dict) and obj and all(is_evaluation(v) for v in obj.values()):
            found = {(f"{name}/{k}" if name else k): check_metrics(f"{path} ({k})", v) for k, v in obj.items()}
        else:
            raise DataError(f"{path} is neither an evaluation ({EVALUATE}) nor a comparison (`mscg compare -o`) "
                            f"file; {fix}")
        for key, metrics in found.items():
            if key in runs:
                if name is not None:
                    raise UsageError(f"two runs are named {key!r} ({path}); give them other names, e.g. "
                                     f"b={path}")
                key = unique(key, runs)
            runs[key] = metrics
    return runs


def unique(name: str, taken) -> str:
    """`name`, or `name-2`, `name-3`, ... the first not in `taken`."""
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"
