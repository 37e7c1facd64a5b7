"""JSONL reading with errors that name the file and line. A gzip-compressed file (`.jsonl.gz`, or any file that
starts with gzip's magic bytes) is read as its decompressed lines, so every stage takes either."""

from __future__ import annotations

import gzip
import io
import json
import math
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mscg.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
GZIP_SUFFIX = ".gz"
PROGRESS_LINES = 65536  # binary_lines reports its progress this often


def read_jsonl(path: Path | str, on_bytes: Callable[[int], None] | None = None
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line; `-` reads stdin. Gzip is decompressed on the way.
    `on_bytes`: told now and then how many bytes of the file (compressed, where it is) have been read."""
    for line_no, obj in read_jsonl_lines(path, on_bytes):
        if isinstance(obj, DataError):
            raise obj
        yield line_no, obj


def read_jsonl_lines(path: Path | str, on_bytes: Callable[[int], None] | None = None
                     ) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """As `read_jsonl`, but a line that is not a JSON object comes as its DataError, so that a caller can skip
    it and read on (a missing file, or gzip data that cannot be decompressed, still raises)."""
    if str(path) == "-":
        yield from _parse_lines(stream_lines(sys.stdin.buffer, "<stdin>"), "<stdin>")
        return
    yield from _parse_lines(binary_lines(path, "a JSONL file", on_bytes), str(path))


def binary_lines(path: Path | str, expected: str = "a file", on_bytes: Callable[[int], None] | None = None
                 ) -> Iterator[bytes]:
    """The lines of a file as bytes, one at a time (memory: one line), decompressed when the file is gzip.
    `on_bytes(n)`: n bytes of the file read so far, every PROGRESS_LINES lines and at the end."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise DataError(f"{path} is a directory, but {expected} is expected")
    with open(path, "rb") as f:
        if on_bytes is None:
            yield from stream_lines(f, str(path))
            return
        for line_no, line in enumerate(stream_lines(f, str(path)), start=1):
            if line_no % PROGRESS_LINES == 0:
                on_bytes(f.tell())
            yield line
        on_bytes(f.tell())


def stream_lines(stream: BinaryIO, name: str) -> Iterator[bytes]:
    """The lines of a binary stream, gunzipped when it starts with gzip's magic bytes (peeked, so a pipe works
    too). Gzip data that is corrupt or cut short raises one DataError naming `name`."""
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # e.g. a BytesIO standing in for stdin
    compressed = stream.peek(len(GZIP_MAGIC))[:len(GZIP_MAGIC)] == GZIP_MAGIC
    lines = gzip.GzipFile(fileobj=stream, mode="rb") if compressed else stream
    line_no = 0  # how far the reading got
    try:
        for line_no, line in enumerate(lines, start=1):
            yield line
    except (OSError, EOFError, zlib.error) as e:
        where = f" after line {line_no:,}" if line_no else ""
        if not compressed:
            raise DataError(f"{name} cannot be read{where} ({getattr(e, 'strerror', None) or e}); check the "
                            "file") from None
        raise DataError(f"{name} is not valid gzip data{where} ({e}); the file is corrupt or was cut short: "
                        "download or compress it again") from None


def jsonl_file(folder: Path, name: str) -> Path:
    """FOLDER/NAME, or FOLDER/NAME.gz where only the compressed file exists (both: refused, as one of them would
    be read without a word). Without either, FOLDER/NAME, for the reader's "does not exist"."""
    plain, packed = Path(folder) / name, Path(folder) / (name + GZIP_SUFFIX)
    if packed.exists() and plain.exists():
        raise DataError(f"{folder} holds both {name} and {packed.name}; keep one of them")
    return packed if packed.exists() else plain


def _parse_lines(stream: Iterator[bytes], name: str) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
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
