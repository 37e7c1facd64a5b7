"""`mscg compare`: gather evaluate (and compare) outputs into one metrics.json and print the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mscg.artifacts.evaluations import entry, read_runs
from mscg.artifacts.meta import dumps_json
from mscg.commands._common import ForceOpt, human_console, is_stdout, user_errors, write_result
from mscg.commands.evaluate import FormatOpt, metrics_table, resolve_format, table_text
from mscg.console import info
from mscg.errors import UsageError


def compare(entries: list[str], output: Path | str | None, *, force: bool = False,
            fmt: str = "json") -> dict[str, dict[str, Any]]:
    """{NAME: metrics} of evaluate and compare outputs, PATH or NAME=PATH (named as mscg.artifacts.evaluations
    says), written to `output` ("-": stdout) as `fmt`: json ({NAME: metrics}), csv or md (the table; without
    `output` onto stdout)."""
    output = resolve_format(fmt, output)
    if not entries:
        raise UsageError("mscg compare needs evaluation files, e.g. work/eval_sasrec.json work/eval_mscgrec.json")
    rows = read_runs(entries)
    if output is not None:
        text = dumps_json(rows) if fmt == "json" else table_text(rows, fmt)
        write_result(output, text, force=force, inputs=[entry(e)[1] for e in entries])
    return rows


@user_errors
def compare_cli(
    entries: Annotated[list[str], typer.Argument(help="Evaluation files (`mscg evaluate -o`; a run is named after "
                                                      "its file, or NAME=PATH names it) or comparisons (`mscg "
                                                      "compare -o`: their runs, or NAME/RUN).",
                                                 show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write {NAME: metrics} here (see --format); "
                                                      "- writes stdout, and the table goes to stderr.")] = None,
    fmt: FormatOpt = "json",
    force: ForceOpt = False,
) -> None:
    """Put several evaluations side by side (one table) and optionally into one JSON file, {NAME: metrics}, which
    compare and plot read back. A run is named NAME (NAME=PATH) or after its file (eval_sasrec.json:
    eval_sasrec; a name taken twice gets -2, -3, ...); a comparison given again keeps its runs' names (NAME=PATH:
    NAME/RUN).

    [bold]Examples[/bold]

      mscg compare sasrec=work/eval_sasrec.json mscgrec=work/eval_mscgrec.json -o work/metrics.json

      mscg compare work/eval_*.json --format md

      mscg compare work/metrics.json fused=work/eval_fused.json -o work/all.json
    """
    rows = compare(entries, output, force=force, fmt=fmt)
    output = resolve_format(fmt, output)
    splits = {m.get("split", "test") for m in rows.values()}
    human_console(output).print(metrics_table(rows, f"{'/'.join(sorted(splits))} split"))
    if output is not None and not is_stdout(output):
        info(f"wrote {output}")
