"""JSONL reading with errors that name the file and line."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mscg.errors import DataError


def read_jsonl(path: Path | str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line; `-` reads stdin."""
    for line_no, obj in read_jsonl_lines(path):
        if isinstance(obj, DataError):
            raise obj
        yield line_no, obj


def read_jsonl_lines(path: Path | str) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """As `read_jsonl`, but a line that is not a JSON object comes as its DataError, so that a caller can skip
    it and read on (a missing file still raises)."""
    if str(path) == "-":
        yield from _parse_lines(sys.stdin.buffer, "<stdin>")
        return
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise DataError(f"{path} is a directory, but a JSONL file is expected")
    with open(path, "rb") as f:
        yield from _parse_lines(f, str(path))


def _parse_lines(stream, name: str) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    for line_no, raw in enumerate(stream, start=1):
        try:
            obj = _parse_line(raw, name, line_no)
        except DataError as e:
            yield line_no, e
            continue
        if obj is not None:
            yield line_no, obj


def _parse_line(raw: bytes, name: str, line_no: int) -> dict[str, Any] | None:
    """The object on one line (None for a blank line)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{name} line {line_no}: not valid UTF-8; save the file as UTF-8") from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise DataError(f"{name} line {line_no}: malformed JSON ({reason}); "
                        "write one JSON object per line") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name} line {line_no}: expected a JSON object, found {type(obj).__name__}; "
                        "write one JSON object per line")
    if "\\u" in line and _has_lone_surrogate(obj):
        raise DataError(f"{name} line {line_no}: a \\u escape encodes half a surrogate pair, which is not "
                        "text; fix the escape")
    return obj


def shown(value: Any, limit: int = 40) -> str:
    """A JSON value as it reads in a message: its JSON text, cut to `limit` characters."""
    try:
        return json.dumps(value, ensure_ascii=False)[:limit]
    except (RecursionError, ValueError):
        return type(value).__name__


def _has_lone_surrogate(obj: Any) -> bool:
    """A `\\ud800`-style escape decodes to a string that cannot be written back as UTF-8."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        return False
    return False


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _finite_float(token: str) -> float:
    """A JSON number as a float; one too large for a float (1e999) is refused, not read as infinity."""
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{token[:40]} is too large for a number")
    return value


def field_str(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    """A string field; a number where a string belongs is an error that says to quote it."""
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(f"{where}: missing \"{key}\"; every line needs a string \"{key}\"")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: \"{key}\" must be a string, found {json.dumps(value)[:40]}; quote it")
    return value


def field_number(obj: dict[str, Any], key: str, where: str) -> float | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: \"{key}\" must be a finite number, found {json.dumps(value)[:40]}")
    try:
        number = float(value)  # an integer of hundreds of digits does not fit a float
    except OverflowError:
        digits = len(str(abs(value)))
        raise DataError(f"{where}: \"{key}\" is an integer of {digits} digits, too large for a number; write a value "
                        "that fits a float (e.g. seconds since 1970)") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: \"{key}\" must be a finite number, found {json.dumps(value)[:40]}")
    return number


def write_jsonl_line(obj: dict[str, Any]) -> str:
    """One JSONL line, strict: a NaN or infinite number raises ValueError (no NaN or Infinity reaches a file;
    callers check their numbers first)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"
