"""training_log.csv: a trained model's training records as one table, beside its meta.json.

    kind,step,epoch,loss,lr,<validation metrics...>
    step,50,1,5.8123,0.0019,,,          every --log-every optimizer steps (meta.json training.steps)
    epoch,64,1,5.9011,0.0020,0.0812,... every epoch, with the validation metrics where it validated
                                        (meta.json training.history)

`loss` is a mean: over the steps since the previous step record, or over the epoch's steps; `lr` is the
learning rate of the last of those steps. An empty cell is a value the record does not have. The rows follow
the optimizer steps (an epoch's row after the step rows of its last step).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from mscg.errors import DataError

LOG_FILE = "training_log.csv"
COLUMNS = ("kind", "step", "epoch", "loss", "lr")


def has_records(training: Any) -> bool:
    """Whether a meta.json `training` summary holds training records (steps or epochs)."""
    return isinstance(training, dict) and bool(training.get("history") or training.get("steps"))


def log_rows(training: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of `training`'s records: COLUMNS, then the validation metrics in first-seen order."""
    history = [h for h in training.get("history") or [] if isinstance(h, dict)]
    steps = [s for s in training.get("steps") or [] if isinstance(s, dict)]
    metrics = list(dict.fromkeys(k for h in history for k in h if k not in COLUMNS))
    rows = [{"kind": "step", **s} for s in steps] + [{"kind": "epoch", **h} for h in history]

    def order(row: dict[str, Any]) -> tuple[int, bool]:
        step = row.get("step")
        return (step if isinstance(step, int) else 0, row["kind"] == "epoch")

    return [*COLUMNS, *metrics], sorted(rows, key=order)


def training_log_text(training: dict[str, Any]) -> str:
    columns, rows = log_rows(training)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return out.getvalue()


def write_training_log(out_dir: Path, training: Any) -> bool:
    """Write OUT_DIR/training_log.csv when `training` (a meta.json training summary) holds records; returns
    whether it did. OUT_DIR is the partial directory of an atomic output: the file lands with the rest."""
    if not has_records(training):
        return False
    (Path(out_dir) / LOG_FILE).write_text(training_log_text(training), encoding="utf-8")
    return True


def read_training_log(path: Path) -> list[dict[str, Any]]:
    """The rows of a training_log.csv: "kind" a string, every other cell a float (int for step and epoch),
    or None where empty."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text file; it is not a training log mscg wrote") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or tuple(reader.fieldnames[:len(COLUMNS)]) != COLUMNS:
        raise DataError(f"{path}: the header must start with {','.join(COLUMNS)}; it is not a training log mscg "
                        "wrote (retrain to make one)")
    rows = []
    for line, raw in enumerate(reader, start=2):
        if raw.get("kind") not in ("step", "epoch"):
            raise DataError(f"{path} line {line}: kind must be step or epoch, found {raw.get('kind')!r}")
        row: dict[str, Any] = {"kind": raw["kind"]}
        for key, cell in raw.items():
            if key == "kind" or key is None:
                continue
            try:
                value = None if cell in (None, "") else float(cell)
            except ValueError:
                raise DataError(f"{path} line {line}: {key} must be a number, found {cell[:40]!r}") from None
            row[key] = int(value) if key in ("step", "epoch") and value is not None and value.is_integer() else value
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    return "" if value is None else str(value)  # a diverged loss stays visible as nan / inf
