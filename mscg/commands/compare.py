"""`mscg compare`: gather evaluate outputs into one metrics.json and print the comparison table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from mscg.artifacts.meta import dumps_json, json_depth, read_json
from mscg.commands._common import ForceOpt, human_console, is_stdout, user_errors, write_result
from mscg.commands.evaluate import FormatOpt, check_format, metrics_table, table_text
from mscg.console import info, warn
from mscg.data.jsonl import shown
from mscg.errors import DataError, UsageError


MAX_DEPTH = 32  # an evaluate output nests 4 levels deep


def check_metrics(path: str, metrics: Any) -> dict[str, Any]:
    """An evaluate output: a JSON object with an integer "users" and finite numbers (or null) for its metrics.
    A NaN or infinite metric (not JSON; mscg never writes one) is kept as null, with a warning that says so."""
    if not isinstance(metrics, dict) or "users" not in metrics:
        raise DataError(f"{path} is not a metrics file written by `mscg evaluate -o`")
    if json_depth(metrics) > MAX_DEPTH:
        raise DataError(f"{path} nests more than {MAX_DEPTH} levels deep, so it is not a metrics file written by "
                        "`mscg evaluate -o`")
    numbers = {k: v for k, v in metrics.items() if k.startswith(("recall@", "ndcg@"))}
    numbers.update({k: metrics[k] for k in ("eval_seconds", "bytes_per_item") if k in metrics})
    for key, value in {"users": metrics["users"], **numbers}.items():
        number = isinstance(value, int if key == "users" else (int, float)) and not isinstance(value, bool)
        if not number and not (value is None and key != "users"):
            raise DataError(f"{path}: \"{key}\" must be a number, found {shown(value)}; pass a metrics file "
                            "written by `mscg evaluate -o`")
        try:
            finite = value is None or math.isfinite(float(value))
        except OverflowError:  # an integer of hundreds of digits
            raise DataError(f"{path}: \"{key}\" is an integer of {len(str(abs(value)))} digits, too large for a "
                            "metric; pass a metrics file written by `mscg evaluate -o`") from None
        if not finite:
            warn(f"{path}: \"{key}\" is {value}, which is not a number JSON can hold; it is shown and written as "
                 "null")
            metrics = {**metrics, key: None}
    return metrics


def compare(entries: list[str], output: Path | None, *, force: bool = False,
            fmt: str = "json") -> dict[str, dict[str, Any]]:
    """`output` "-" writes to stdout; `fmt`: json ({NAME: metrics}), csv or md (the table)."""
    check_format(fmt, output)
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name:
            raise UsageError(f"{entry!r} must look like NAME=PATH, e.g. sasrec=work/eval_sasrec.json")
        rows[name] = check_metrics(path, read_json(Path(path), "run `mscg evaluate ... -o` to make it"))
    if output is not None:
        text = dumps_json(rows) if fmt == "json" else table_text(rows, fmt)
        write_result(output, text, force=force, inputs=[Path(e.partition("=")[2]) for e in entries])
    return rows


@user_errors
def compare_cli(
    entries: Annotated[list[str], typer.Argument(help="NAME=metrics.json pairs, from `mscg evaluate -o`.",
                                                 show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write {NAME: metrics} here (see --format); "
                                                      "- writes stdout, and the table goes to stderr.")] = None,
    fmt: FormatOpt = "json",
    force: ForceOpt = False,
) -> None:
    """Put several evaluations side by side (one table) and optionally into one JSON file.

    [bold]Example[/bold]

      mscg compare sasrec=work/eval_sasrec.json mscgrec=work/eval_mscgrec.json -o work/metrics.json

      mscg compare sasrec=work/eval_sasrec.json mscgrec=work/eval_mscgrec.json -o - --format md
    """
    rows = compare(entries, output, force=force, fmt=fmt)
    splits = {m.get("split", "test") for m in rows.values()}
    human_console(output).print(metrics_table(rows, f"{'/'.join(sorted(splits))} split"))
    if output is not None and not is_stdout(output):
        info(f"wrote {output}")
