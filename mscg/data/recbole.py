"""Converters from RecBole's file formats into mscg's items.jsonl + interactions.jsonl.

Atomic files: `NAME.inter` (user_id, item_id, optional timestamp and rating) and optional `NAME.item`
(every other field becomes the item text, joined with ". ").
Sequence files: `NAME.{train,valid,test}.inter` (user_id, item_id_list, item_id) whose longest line per
user is that user's whole sequence (file order = time order), optional `NAME.text`, and optional
`NAME.item2index` / `NAME.user2index` that map the index tokens back to the original ids.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mscg.data.items import FolderPaths
from mscg.errors import DataError, UsageError

RECBOLE_PREFIX = "recbole:"


@dataclass
class Converted:
    items: list[dict]  # items.jsonl records, in order
    interactions: Sequence[dict]  # interactions.jsonl records, in order (the raw readers: an InteractionTable)
    format: str
    ratings: Sequence[float] | None = None  # one per interaction, when asked for and the source has them
    notes: list[str] = dataclasses.field(default_factory=list)  # what the conversion left out or kept without text


def resolve_source(source: str) -> Path:
    """A directory or a file, or `recbole:NAME` for a dataset shipped inside the recbole wheel (e.g. ml-100k)."""
    if source.startswith(RECBOLE_PREFIX):
        name = source[len(RECBOLE_PREFIX):]
        try:
            root = importlib.resources.files("recbole") / "dataset_example"
        except ModuleNotFoundError:
            raise UsageError("recbole is not installed; run `pip install --no-deps recbole==1.2.1`") from None
        path = Path(str(root / name))
        if not path.is_dir():
            shipped = sorted(p.name for p in Path(str(root)).iterdir() if p.is_dir())
            raise UsageError(f"the recbole wheel ships no dataset {name!r}; choose one of: {', '.join(shipped)}")
        return path
    path = Path(source)
    if not path.exists():
        raise UsageError(f"{source} does not exist; pass a folder of RecBole, MovieLens or Amazon files, a reviews "
                         "or ratings file, or recbole:ml-100k")
    return path


def detect(source: Path, name: str | None) -> tuple[str, str]:
    """(format, name): "atomic" when NAME.inter exists, "sequence" when NAME.test.inter exists."""
    if name is None:
        stems = sorted({p.name.split(".")[0] for p in source.glob("*.inter")})
        if len(stems) != 1:
            raise UsageError(f"{source} holds RecBole files of {len(stems)} datasets ({', '.join(stems) or 'none'}); "
                             "pass --name to choose one")
        name = stems[0]
    if (source / f"{name}.inter").exists():
        return "atomic", name
    if (source / f"{name}.test.inter").exists():
        return "sequence", name
    raise UsageError(f"{source} has neither {name}.inter (atomic) nor {name}.test.inter (sequence files); "
                     "check --name")


def read_atomic(path: Path) -> tuple[list[tuple[str, str]], Iterator[tuple[int, list[str]]]]:
    """RecBole atomic file: a `name:type` tab-separated header, then tab-separated rows."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not valid UTF-8; save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e}); check the file") from None
    if not lines:
        raise DataError(f"{path} is empty; a RecBole file starts with a `field:type` header line")
    header = []
    for column in lines[0].split("\t"):
        field, sep, ftype = column.partition(":")
        if not sep or not field:
            raise DataError(f"{path} line 1: header column {column!r} is not `field:type`; fix the header")
        header.append((field, ftype))

    def rows() -> Iterator[tuple[int, list[str]]]:
        for line_no, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            values = line.split("\t")
            if len(values) != len(header):
                raise DataError(f"{path} line {line_no}: {len(values)} tab-separated values for "
                                f"{len(header)} header fields; fix the line")
            yield line_no, values

    return header, rows()


def _column(header: list[tuple[str, str]], field: str, path: Path, required: bool = True) -> int | None:
    names = [f for f, _ in header]
    if field in names:
        return names.index(field)
    if required:
        raise DataError(f"{path} has no `{field}` field (it has {', '.join(names)}); fix the header")
    return None


def convert_atomic(source: Path, name: str, *, ratings: bool = False) -> Converted:
    """`ratings`: also read the `rating` column (for --min-rating; a source without one is refused)."""
    inter_path = source / f"{name}.inter"
    header, rows = read_atomic(inter_path)
    u_col = _column(header, "user_id", inter_path)
    i_col = _column(header, "item_id", inter_path)
    t_col = _column(header, "timestamp", inter_path, required=False)
    r_col = _column(header, "rating", inter_path, required=False) if ratings else None
    if ratings and r_col is None:
        raise UsageError(f"{inter_path} has no `rating` column (it has {', '.join(f for f, _ in header)}), so "
                         "--min-rating cannot filter it; drop --min-rating")
    interactions, rating_values = [], []
    for line_no, values in rows:
        record = {"user_id": values[u_col], "item_id": values[i_col]}
        if not record["user_id"].strip() or not record["item_id"].strip():
            raise DataError(f"{inter_path} line {line_no}: empty user_id or item_id; fix the line")
        if t_col is not None:
            try:
                record["timestamp"] = _number(values[t_col])
            except ValueError:
                raise DataError(f"{inter_path} line {line_no}: timestamp {values[t_col]!r} is not a finite number; "
                                "fix the line") from None
        if r_col is not None:
            try:
                rating_values.append(float(_number(values[r_col])))
            except ValueError:
                raise DataError(f"{inter_path} line {line_no}: rating {values[r_col]!r} is not a finite number; "
                                "fix the line") from None
        interactions.append(record)

    items: dict[str, dict] = {}
    item_path = source / f"{name}.item"
    if item_path.exists():
        header, rows = read_atomic(item_path)
        id_col = _column(header, "item_id", item_path)
        text_cols = [c for c, (f, _) in enumerate(header) if c != id_col]
        for line_no, values in rows:
            item_id = values[id_col]
            if not item_id.strip():
                raise DataError(f"{item_path} line {line_no}: empty item_id; fix the line")
            if item_id in items:
                raise DataError(f"{item_path} line {line_no}: item_id {item_id!r} appears twice; keep one line")
            record = {"item_id": item_id}
            text = ". ".join(v.strip() for c in text_cols if (v := values[c]).strip())
            if text:
                record["text"] = text
            items[item_id] = record
    if not interactions:
        raise DataError(f"{inter_path} holds no interactions; add one `user_id<TAB>item_id` line per interaction")
    for record in interactions:
        items.setdefault(record["item_id"], {"item_id": record["item_id"]})
    return Converted(list(items.values()), interactions, "atomic", rating_values if ratings else None)


def _number(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return int(value) if value.is_integer() else value


def _read_index(path: Path) -> dict[str, str] | None:
    """NAME.item2index / NAME.user2index: `original<TAB>index` -> {index: original}."""
    if not path.exists():
        return None
    mapping = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not valid UTF-8; save it as UTF-8") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip():
            raise DataError(f"{path} line {line_no}: expected `original_id<TAB>index`; fix the line")
        mapping[parts[1]] = parts[0]
    return mapping


def convert_sequence(source: Path, name: str) -> Converted:
    item_of = _read_index(source / f"{name}.item2index")
    user_of = _read_index(source / f"{name}.user2index")
    sequences: dict[str, list[str]] = {}
    for part in ("train", "valid", "test"):
        path = source / f"{name}.{part}.inter"
        if not path.exists():
            continue
        header, rows = read_atomic(path)
        u_col = _column(header, "user_id", path)
        l_col = _column(header, "item_id_list", path)
        i_col = _column(header, "item_id", path)
        for line_no, values in rows:
            if not values[u_col].strip() or not values[i_col].strip():
                raise DataError(f"{path} line {line_no}: empty user_id or item_id; fix the line")
            sequence = values[l_col].split() + [values[i_col]]
            if len(sequence) > len(sequences.get(values[u_col], [])):
                sequences[values[u_col]] = sequence

    def item_id(token: str) -> str:
        if item_of is None:
            return token
        if token not in item_of:
            raise DataError(f"{source}/{name}.item2index has no entry for item index {token}; fix the index file")
        return item_of[token]

    items: dict[str, dict] = {}
    if item_of is not None:
        for index in sorted(item_of, key=lambda t: (0, int(t), t) if t.isascii() and t.isdigit() else (1, 0, t)):
            items[item_of[index]] = {"item_id": item_of[index]}
    text_path = source / f"{name}.text"
    if text_path.exists():
        header, rows = read_atomic(text_path)
        id_col = _column(header, "item_id", text_path)
        text_cols = [c for c, _ in enumerate(header) if c != id_col]
        raw_ids = set(item_of.values()) if item_of is not None else None
        for line_no, values in rows:
            token = values[id_col]
            if not token.strip():
                raise DataError(f"{text_path} line {line_no}: empty item_id; fix the line")
            key = token if raw_ids is None or token in raw_ids else item_id(token)
            text = ". ".join(v.strip() for c in text_cols if (v := values[c]).strip())
            record = items.setdefault(key, {"item_id": key})
            if text:
                record["text"] = text
    interactions = []
    for user, sequence in sequences.items():
        user_id = user_of.get(user, user) if user_of is not None else user
        for token in sequence:
            key = item_id(token)
            items.setdefault(key, {"item_id": key})
            interactions.append({"user_id": user_id, "item_id": key})
    if not interactions:
        raise DataError(f"{source} has no interactions in {name}.train/valid/test.inter; add some")
    return Converted(list(items.values()), interactions, "sequence")


def id_in_file_name(item_id: str) -> str:
    """An item id as --image-pattern's {item_id} writes it: unchanged ("B00O47ILVA", "42", "x y"), except that `/`
    (and Windows' `\\`) becomes %2F (%5C), NUL %00, and the ids "." and ".." %2E and %2E%2E: an id never names
    another folder."""
    for char in {"/", "\0", os.sep, os.altsep or "/"}:
        item_id = item_id.replace(char, f"%{ord(char):02X}")
    return "%2E" * len(item_id) if item_id in (".", "..") else item_id


def find_images(items: list[dict], images: Path, pattern: str) -> dict[str, Path]:
    """{item_id: image file} for each item whose file `images/pattern` exists ({item_id} as `id_in_file_name`
    writes it). A file whose path leads out of `images` (through a symbolic link) is refused, found or not."""
    check_image_options(images, pattern)
    folder = FolderPaths(images)
    found = {}
    for record in items:
        name = pattern.format(item_id=id_in_file_name(record["item_id"]))
        if why := folder.why_outside(name):
            raise DataError(f"--images {images}: {name}, the image of item {record['item_id']!r}, {why}; mscg "
                            "reads only files inside --images DIR: copy the file into it, or pass --images the "
                            "folder that holds the files themselves")
        path = images / name
        if path.is_file():
            found[record["item_id"]] = path
    return found


def check_image_options(images: Path, pattern: str) -> None:
    """--images is a folder and --image-pattern names a file inside it by {item_id}."""
    if not images.is_dir():
        raise UsageError(f"--images {images} is not a directory")
    if "{item_id}" not in pattern:
        raise UsageError("--image-pattern must contain {item_id}, e.g. \"{item_id}.jpg\"")
    try:
        example = pattern.format(item_id="1")
    except (KeyError, IndexError, ValueError):
        raise UsageError(f"--image-pattern {pattern!r} may hold only the placeholder {{item_id}}, e.g. "
                         "\"{item_id}.jpg\"") from None
    if os.path.isabs(example) or os.pardir in Path(example).parts:
        raise UsageError(f"--image-pattern {pattern!r} must name a file inside --images: a relative path without "
                         "`..`, e.g. \"{item_id}.jpg\" or \"posters/{item_id}.jpg\"")
