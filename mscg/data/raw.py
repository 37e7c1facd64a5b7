"""Raw downloads as `mscg prepare` reads them: Amazon Reviews 2023 JSONL and MovieLens CSV (or `.dat`) files.

Amazon Reviews 2023 (the McAuley lab's release): a reviews file CATEGORY.jsonl(.gz), one review a line
(`user_id`, `parent_asin`, `timestamp` in milliseconds, `rating`, ...), and the category's metadata file
meta_CATEGORY.jsonl(.gz), one product a line (`parent_asin`, `title`, `features` and `description`: lists of
strings, ...). An item is a `parent_asin` (a product, whatever its colour or size); its text is its title, features
and description. The metadata's `images` are URLs: mscg downloads nothing, so they are ignored.

MovieLens: ratings.csv (`userId,movieId,rating,timestamp`) and movies.csv (`movieId,title,genres`, the genres
`|`-separated) of ml-latest, ml-25m, ml-32m and the like; or ratings.dat and movies.dat (`::`-separated, no header,
Latin-1 in ml-1m) of ml-1m and ml-10m. An item's text is its title and genres.

Both readers stream their files (one line, one CSV row at a time; gzip decompressed on the way) and keep each
interaction in an `InteractionTable` row of 24 bytes, so memory grows with the number of interactions, never with
the reviews' text. Items of the metadata (movies) file that no interaction names are left out; items that
interactions name but the metadata lacks are kept without text. `Converted.notes` says how many of each.
"""

from __future__ import annotations

import csv
import math
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mscg.data.jsonl import binary_lines, field_number, field_str, jsonl_file, read_jsonl, shown
from mscg.data.recbole import Converted
from mscg.errors import DataError, UsageError

TEXT_CHARS = 2000  # an item text is cut here (at a word): the text encoder reads 256 tokens, about 1,000-1,500
AMAZON = "amazon"
MOVIELENS = "movielens"
META_PREFIX = "meta_"  # meta_CATEGORY.jsonl(.gz): an Amazon category's metadata
JSONL_NAMES = (".jsonl.gz", ".jsonl")  # how an Amazon file's name ends
MOVIELENS_NAMES = {".csv": ("ratings.csv", "movies.csv"), ".dat": ("ratings.dat", "movies.dat")}
DAT_COLUMNS = {"ratings": ["userId", "movieId", "rating", "timestamp"], "movies": ["movieId", "title", "genres"]}
NO_GENRES = "(no genres listed)"


@dataclass
class RawFiles:
    format: str  # AMAZON or MOVIELENS
    interactions: Path  # the reviews file, or ratings.csv / ratings.dat
    items: Path  # meta_CATEGORY.jsonl(.gz), or movies.csv / movies.dat


# ---- interactions as columns ------------------------------------------------------------------------------

@dataclass
class InteractionTable:
    """Interactions as columns: user and item codes (first-appearance order) and timestamps, 16 bytes a row (24
    with the ratings `Converted` keeps beside it). Iterating yields interactions.jsonl records, made one by one."""
    user_ids: list[str]  # code -> id
    item_ids: list[str]
    user: np.ndarray  # (E,) int32 user code
    item: np.ndarray  # (E,) int32 item code
    timestamp: np.ndarray | None  # (E,) float64, or None: file order is time order
    rows: np.ndarray | None = None  # the rows kept, in file order (indices into the columns); None: every row

    def __len__(self) -> int:
        return len(self.user) if self.rows is None else len(self.rows)

    def select(self, rows: np.ndarray) -> InteractionTable:
        """The table of `rows` (indices into the columns, not into an earlier selection)."""
        return replace(self, rows=rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rows = np.arange(len(self.user)) if self.rows is None else self.rows
        for start in range(0, len(rows), 65536):  # numpy -> Python a block at a time: fast, and bounded
            block = rows[start:start + 65536]
            users, items = self.user[block].tolist(), self.item[block].tolist()
            if self.timestamp is None:
                for u, i in zip(users, items, strict=True):
                    yield {"user_id": self.user_ids[u], "item_id": self.item_ids[i]}
                continue
            for u, i, t in zip(users, items, self.timestamp[block].tolist(), strict=True):
                yield {"user_id": self.user_ids[u], "item_id": self.item_ids[i],
                       "timestamp": int(t) if t.is_integer() else t}


class _TableBuilder:
    """Collects interactions into compact growing arrays (array.array), one row at a time."""

    def __init__(self, *, timestamps: bool, ratings: bool):
        self.users: dict[str, int] = {}  # id -> code
        self.items: dict[str, int] = {}
        self.user, self.item = array("i"), array("i")
        self.timestamp = array("d") if timestamps else None
        self.rating = array("d") if ratings else None

    def add(self, user_id: str, item_id: str, timestamp: float | None, rating: float | None) -> None:
        """One interaction; `timestamp` and `rating` are given where the builder keeps them."""
        self.user.append(self.users.setdefault(user_id, len(self.users)))
        self.item.append(self.items.setdefault(item_id, len(self.items)))
        if self.timestamp is not None:
            self.timestamp.append(timestamp)
        if self.rating is not None:
            self.rating.append(rating)

    def table(self) -> InteractionTable:
        def column(values: array, dtype) -> np.ndarray:
            return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype)

        return InteractionTable(list(self.users), list(self.items), column(self.user, np.int32),
                                column(self.item, np.int32),
                                None if self.timestamp is None else column(self.timestamp, np.float64))

    def ratings(self) -> np.ndarray | None:
        return None if self.rating is None else np.frombuffer(self.rating, dtype=np.float64)


# ---- finding the files ------------------------------------------------------------------------------------

def find_raw_files(source: Path, *, name: str | None = None, meta: Path | None = None) -> RawFiles | None:
    """The raw files SOURCE names: a reviews or ratings file (its item file next to it, or `meta`), or a folder
    holding ratings.csv + movies.csv (ratings.dat + movies.dat) or CATEGORY.jsonl(.gz) + meta_CATEGORY.jsonl(.gz)
    (`name`: the category, where the folder holds several). None: a folder without any of them."""
    if meta is not None and not meta.is_file():
        raise UsageError(f"--meta {meta} is not a file; pass the metadata file (meta_CATEGORY.jsonl.gz, movies.csv)")
    if not source.is_dir():
        if name is not None:
            raise UsageError(f"--name chooses a dataset inside a folder; {source} is a file: drop --name")
        return _raw_file(source, meta)
    if meta is not None:
        raise UsageError(f"--meta goes with a reviews or ratings file as SOURCE; {source} is a folder, whose files "
                         "are found by their names: drop --meta, or pass the reviews file as SOURCE")
    for ratings, movies in MOVIELENS_NAMES.values():
        if (source / ratings).is_file():
            if not (source / movies).is_file():
                raise UsageError(f"{source} holds {ratings} but no {movies}; MovieLens ships both: put {movies} "
                                 "next to it")
            if name is not None:
                raise UsageError(f"{source} holds one MovieLens dataset ({ratings} + {movies}); drop --name")
            return RawFiles(MOVIELENS, source / ratings, source / movies)
    categories = sorted(c for p in source.glob(f"{META_PREFIX}*")
                        if (c := _amazon_stem(p.name[len(META_PREFIX):])) and p.is_file())
    if not categories:
        return None
    if name is not None:
        if name not in categories:
            raise UsageError(f"{source} holds no Amazon category {name!r} ({META_PREFIX}{name}.jsonl.gz); --name is "
                             f"one of: {', '.join(categories)}")
        chosen = name
    else:
        complete = [c for c in categories if _reviews_next_to(source, c).is_file()]
        if len(complete) > 1:
            raise UsageError(f"{source} holds Amazon files of {len(complete)} categories ({', '.join(complete)}); "
                             "pass --name to choose one")
        chosen = complete[0] if complete else categories[0]
    reviews = _reviews_next_to(source, chosen)
    if not reviews.is_file():
        raise UsageError(f"{source} holds {META_PREFIX}{chosen} but no reviews file {chosen}.jsonl.gz; put the "
                         "category's reviews file next to its metadata")
    return RawFiles(AMAZON, reviews, jsonl_file(source, f"{META_PREFIX}{chosen}.jsonl"))


def _amazon_stem(file_name: str) -> str | None:
    """The category of an Amazon file name (Toys_and_Games.jsonl.gz -> Toys_and_Games), None for another name."""
    for suffix in JSONL_NAMES:
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[:-len(suffix)]
    return None


def _reviews_next_to(folder: Path, category: str) -> Path:
    return jsonl_file(folder, f"{category}.jsonl")


def _raw_file(path: Path, meta: Path | None) -> RawFiles:
    """A reviews or ratings file given as SOURCE, with its item file."""
    if not path.is_file():
        raise UsageError(f"{path} does not exist; pass a folder of RecBole, MovieLens or Amazon files, a reviews "
                         "or ratings file, or recbole:ml-100k")
    file_name = path.name
    for suffix, (ratings, movies) in MOVIELENS_NAMES.items():
        if file_name.endswith((suffix, suffix + ".gz")):
            if file_name.startswith("movies."):
                raise UsageError(f"{path} is MovieLens' movie list; pass its {ratings} as SOURCE (with --meta "
                                 f"{path} where it lies elsewhere)")
            items = meta if meta is not None else path.with_name(movies)
            if not items.is_file():
                raise UsageError(f"{path} is read as MovieLens ratings, but there is no {movies} next to it; pass "
                                 f"--meta path/to/{movies}")
            return RawFiles(MOVIELENS, path, items)
    stem = _amazon_stem(file_name)
    if stem is None:
        raise UsageError(f"{path} is neither a MovieLens ratings file (ratings.csv, ratings.dat) nor an Amazon "
                         "Reviews 2023 file (CATEGORY.jsonl or .jsonl.gz); pass one of them, or a folder")
    if stem in ("items", "interactions"):
        raise UsageError(f"{path} is part of an mscg dataset; pass the folder that holds it")
    if stem.startswith(META_PREFIX):
        category = stem[len(META_PREFIX):]
        raise UsageError(f"{path} is Amazon metadata; pass the reviews file ({category}.jsonl.gz) as SOURCE, with "
                         f"--meta {path}")
    items = meta if meta is not None else jsonl_file(path.parent, f"{META_PREFIX}{stem}.jsonl")
    if not items.is_file():
        raise UsageError(f"{path} is read as Amazon reviews, but there is no {META_PREFIX}{stem}.jsonl.gz next to "
                         f"it; pass --meta path/to/{META_PREFIX}{stem}.jsonl.gz (the category's metadata file)")
    return RawFiles(AMAZON, path, items)


# ---- reading ------------------------------------------------------------------------------------------------

OnRead = Callable[[Path, int, int], None]  # (file, bytes read, its size): how far the reading got


def convert_raw(files: RawFiles, *, ratings: bool = False, on_read: OnRead | None = None) -> Converted:
    """Items and interactions of raw files; `ratings`: also each interaction's rating (for --min-rating)."""
    convert = convert_amazon if files.format == AMAZON else convert_movielens
    return convert(files.interactions, files.items, ratings=ratings, on_read=on_read)


def _reporter(path: Path, on_read: OnRead | None) -> Callable[[int], None] | None:
    try:
        size = path.stat().st_size
    except OSError:  # the reader names the file
        return None
    return None if on_read is None else lambda done: on_read(path, done, size)


def convert_amazon(reviews: Path, meta: Path, *, ratings: bool = False, on_read: OnRead | None = None) -> Converted:
    built = _TableBuilder(timestamps=True, ratings=ratings)
    for line_no, obj in read_jsonl(reviews, _reporter(reviews, on_read)):
        where = f"{reviews} line {line_no}"
        user_id, item_id = _amazon_id(obj, "user_id", where), _amazon_id(obj, "parent_asin", where)
        timestamp = field_number(obj, "timestamp", where)
        if timestamp is None:
            raise DataError(f"{where}: missing \"timestamp\"; every review of Amazon Reviews 2023 has one "
                            "(milliseconds since 1970)")
        rating = field_number(obj, "rating", where) if ratings else None
        if ratings and rating is None:
            raise DataError(f"{where}: no \"rating\"; --min-rating needs a number \"rating\" on every review")
        built.add(user_id, item_id, timestamp, rating)
    if not built.user:
        raise DataError(f"{reviews} holds no reviews; pass the category's reviews file (CATEGORY.jsonl.gz)")
    texts: dict[str, str | None] = {}
    unused = 0
    for line_no, obj in read_jsonl(meta, _reporter(meta, on_read)):
        where = f"{meta} line {line_no}"
        item_id = field_str(obj, "parent_asin", where, required=True)
        if item_id not in built.items:
            unused += 1
        elif item_id not in texts:  # a product listed twice: its first line
            texts[item_id] = join_text(_amazon_fields(obj, where))
    return _converted(AMAZON, built, texts, meta, unused, "without a review")


def _amazon_id(obj: dict[str, Any], key: str, where: str) -> str:
    if key not in obj or obj[key] is None:
        raise DataError(f"{where}: missing \"{key}\"; every review of Amazon Reviews 2023 has \"user_id\", "
                        "\"parent_asin\" and \"timestamp\" (is this the reviews file, not the metadata?)")
    value = field_str(obj, key, where, required=True)
    if not value.strip():
        raise DataError(f"{where}: \"{key}\" is empty; fix or drop the line")
    return value


def _amazon_fields(obj: dict[str, Any], where: str) -> Iterator[str]:
    """The title, features and description of a metadata line, as strings (a list field gives each entry)."""
    for key in ("title", "features", "description"):
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            yield value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            yield from value
        else:
            raise DataError(f"{where}: \"{key}\" must be a string or a list of strings, found {shown(value)}; fix "
                            "the line")


def convert_movielens(ratings_file: Path, movies_file: Path, *, ratings: bool = False,
                      on_read: OnRead | None = None) -> Converted:
    columns, rows = _table_rows(ratings_file, "ratings", required=("userId", "movieId"),
                                optional=("rating", "timestamp"), on_read=on_read)
    u_col, i_col, r_col, t_col = (columns[c] for c in ("userId", "movieId", "rating", "timestamp"))
    if ratings and r_col is None:
        raise UsageError(f"{ratings_file} has no `rating` column, so --min-rating cannot filter it; drop --min-rating")
    built = _TableBuilder(timestamps=t_col is not None, ratings=ratings)
    for line_no, values in rows:
        user_id = _value(values, u_col, "userId", ratings_file, line_no)
        item_id = _value(values, i_col, "movieId", ratings_file, line_no)
        timestamp = None if t_col is None else _number(values, t_col, "timestamp", ratings_file, line_no)
        rating = _number(values, r_col, "rating", ratings_file, line_no) if ratings else None
        built.add(user_id, item_id, timestamp, rating)
    if not built.user:
        raise DataError(f"{ratings_file} holds no ratings; add one line per rating")
    columns, rows = _table_rows(movies_file, "movies", required=("movieId", "title"), optional=("genres",),
                                on_read=on_read)
    m_col, title_col, g_col = columns["movieId"], columns["title"], columns["genres"]
    texts: dict[str, str | None] = {}
    unused = 0
    for line_no, values in rows:
        item_id = _value(values, m_col, "movieId", movies_file, line_no)
        if item_id not in built.items:
            unused += 1
        elif item_id not in texts:
            genres = values[g_col].strip() if g_col is not None else ""
            genres = "" if genres == NO_GENRES else ", ".join(g for g in genres.split("|") if g.strip())
            texts[item_id] = join_text([values[title_col], genres])
    return _converted(MOVIELENS, built, texts, movies_file, unused, "without a rating")


def _converted(fmt: str, built: _TableBuilder, texts: dict[str, str | None], item_file: Path, unused: int,
               without: str) -> Converted:
    """The catalogue: the item file's items that interactions name, in its order, then those it lacks (no text)."""
    items = [{"item_id": item_id, "text": text} if text else {"item_id": item_id} for item_id, text in texts.items()]
    missing = [item_id for item_id in built.items if item_id not in texts]
    items.extend({"item_id": item_id} for item_id in missing)
    notes = []
    if missing:
        notes.append(f"{len(missing):,} items not in {item_file.name}, kept without text")
    if unused:
        notes.append(f"{unused:,} items of {item_file.name} {without} left out")
    return Converted(items, built.table(), fmt, built.ratings(), notes=notes)


def join_text(parts: Iterable[str]) -> str | None:
    """One text of the non-empty parts, each ended as a sentence, white space collapsed, cut to TEXT_CHARS (at a
    word where one ends in the last half)."""
    kept: list[str] = []
    size = 0
    for part in parts:
        part = " ".join(part[:2 * TEXT_CHARS].split())
        if not part:
            continue
        if kept and kept[-1][-1] not in ".!?:;":
            kept[-1] += "."
        kept.append(part)
        size += len(part) + 1
        if size > TEXT_CHARS:
            break
    text = " ".join(kept)
    if len(text) > TEXT_CHARS:
        cut = text.rfind(" ", 0, TEXT_CHARS + 1)
        text = text[:cut if cut > TEXT_CHARS // 2 else TEXT_CHARS].rstrip()
    return text or None


# ---- MovieLens' two file formats, as rows ------------------------------------------------------------------

def _table_rows(path: Path, kind: str, *, required: tuple[str, ...], optional: tuple[str, ...] = (),
                on_read: OnRead | None = None) -> tuple[dict[str, int | None], Iterator[tuple[int, list[str]]]]:
    """({column: index or None}, rows as (line number, values)) of a MovieLens file: CSV with a header, or `.dat`
    (`::`-separated, the columns fixed, no header)."""
    lines = _text_lines(path, latin1=path.name.endswith((".dat", ".dat.gz")), on_read=on_read)
    if path.name.endswith((".dat", ".dat.gz")):
        header = DAT_COLUMNS[kind]
        return {c: header.index(c) for c in (*required, *optional)}, _dat_rows(path, header, lines)
    reader = csv.reader(lines, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path} is empty; a MovieLens {kind} file starts with the header "
                        f"{','.join((*required, *optional))}") from None
    except csv.Error as e:
        raise DataError(f"{path} line 1: {e}; fix the header") from None
    if header:
        header[0] = header[0].removeprefix("\ufeff")  # a byte-order mark some editors write
    for column in required:
        if column not in header:
            raise DataError(f"{path} line 1: no `{column}` column (the header is {','.join(header)}); MovieLens' "
                            f"{kind} file has {','.join((*required, *optional))}: fix the header")
    columns = {c: header.index(c) if c in header else None for c in (*required, *optional)}

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for values in reader:
                if not values:  # a blank line
                    continue
                if len(values) != len(header):
                    raise DataError(f"{path} line {reader.line_num}: {len(values)} comma-separated values for the "
                                    f"{len(header)} columns {','.join(header)}; fix the line (a value with a comma "
                                    "goes in double quotes)")
                yield reader.line_num, values
        except csv.Error as e:
            raise DataError(f"{path} line {reader.line_num}: {e}; fix the quoting") from None

    return columns, rows()


def _dat_rows(path: Path, header: list[str], lines: Iterator[str]) -> Iterator[tuple[int, list[str]]]:
    for line_no, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        values = line.split("::")
        if len(values) != len(header):
            raise DataError(f"{path} line {line_no}: {len(values)} `::`-separated values for the {len(header)} "
                            f"fields {'::'.join(header)}; fix the line")
        yield line_no, values


def _text_lines(path: Path, *, latin1: bool, on_read: OnRead | None = None) -> Iterator[str]:
    """The file's lines as text: UTF-8, or (`latin1`, for ml-1m's .dat files) Latin-1 where a line is not UTF-8."""
    for line_no, raw in enumerate(binary_lines(path, "a MovieLens file", _reporter(path, on_read)), start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            if not latin1:
                raise DataError(f"{path} line {line_no}: not valid UTF-8; save the file as UTF-8") from None
            yield raw.decode("latin-1")


def _value(values: list[str], column: int, name: str, path: Path, line_no: int) -> str:
    value = values[column].strip()
    if not value:
        raise DataError(f"{path} line {line_no}: `{name}` is empty; fix or drop the line")
    return value


def _number(values: list[str], column: int, name: str, path: Path, line_no: int) -> float:
    text = values[column].strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise DataError(f"{path} line {line_no}: `{name}` {text[:40]!r} is not a finite number; fix the line")
    return value
