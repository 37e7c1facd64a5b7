"""Shaping a dataset before it is written: rating filter, seeded user sample, iterated k-core, and the
items' images (placed inside the dataset folder: hard-linked, or copied).

The filters run in this order, each on what the one before kept: `--min-rating` -> `--sample-users` ->
k-core (`--min-user-interactions`, `--min-item-interactions`). When any of them runs, items left with no
interaction are dropped from the catalogue as well, so the dataset stays self-consistent.
An mscg dataset folder (items.jsonl + interactions.jsonl) is read here too, so that it can be reshaped.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from mscg.data.interactions import INTERACTIONS_FILE, load_interactions
from mscg.data.items import ITEMS_FILE, load_catalogue
from mscg.data.jsonl import field_number, jsonl_file, read_jsonl
from mscg.data.raw import InteractionTable
from mscg.data.recbole import Converted
from mscg.errors import DataError, UsageError

IMAGES_DIR = "images"  # where prepare places the images, inside the dataset folder
RATING_FIELD = "rating"


@dataclass
class Step:
    """What one filter removed."""
    name: str  # as the user spelled it, e.g. "--min-rating 4"
    users: int
    items: int  # distinct items that lost their last interaction
    interactions: int
    note: str = ""


@dataclass
class Shaped:
    items: list[dict]
    interactions: Sequence[dict]  # a list of records, or (from the raw readers) an InteractionTable
    steps: list[Step] = field(default_factory=list)
    unused_items: int = 0  # catalogue items that had no interaction to begin with (dropped when filtering)
    users: int = 0  # distinct users of `interactions`


# ---- the filters: each takes interaction records and returns those it keeps, in order ------------------
# They work on integer codes (one per user, one per item) and row numbers, so that a table of millions of
# interactions is filtered without a Python object per interaction; the functions on records wrap them.

def filter_rating(interactions: list[dict], ratings: Sequence[float], min_rating: float) -> list[dict]:
    """The interactions rated at least `min_rating`."""
    assert len(ratings) == len(interactions)
    return _records(interactions, _rating_rows(ratings, np.arange(len(interactions)), min_rating))


def sample_users(interactions: list[dict], n: int, seed: int) -> list[dict]:
    """The interactions of `n` users drawn at random with `seed` (all of them when there are no more than `n`)."""
    user, _, _ = _codes(interactions)
    return _records(interactions, _sample_rows(user, np.arange(len(user)), n, seed))


def k_core(interactions: list[dict], min_user: int, min_item: int) -> tuple[list[dict], int]:
    """(kept, rounds): drop the interactions of users with fewer than `min_user` interactions and of items with
    fewer than `min_item`, and repeat (a dropped item can take a user below `min_user`, and so on) until every
    user and item left has enough. Repeats of a (user, item) pair count."""
    user, item, _ = _codes(interactions)
    rows, rounds = _k_core_rows(user, item, np.arange(len(user)), min_user, min_item)
    return _records(interactions, rows), rounds


def _records(interactions: list[dict], rows: np.ndarray) -> list[dict]:
    return [interactions[i] for i in rows.tolist()]


def _codes(interactions: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(user codes, item codes, item ids by code): codes number the ids in order of first appearance."""
    if isinstance(interactions, InteractionTable):
        assert interactions.rows is None, "filter the whole table"
        return interactions.user, interactions.item, interactions.item_ids
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    n = len(interactions)
    user = np.fromiter((users.setdefault(r["user_id"], len(users)) for r in interactions), np.int64, n)
    item = np.fromiter((items.setdefault(r["item_id"], len(items)) for r in interactions), np.int64, n)
    return user, item, list(items)


def _rating_rows(ratings: Sequence[float], rows: np.ndarray, min_rating: float) -> np.ndarray:
    return rows[np.asarray(ratings, dtype=np.float64)[rows] >= min_rating]


def _sample_rows(user: np.ndarray, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    codes = user[rows]
    first, at = np.unique(codes, return_index=True)
    users = first[np.argsort(at)].tolist()  # first-appearance order: seeded = stable
    if n >= len(users):
        return rows
    chosen = np.zeros(int(first[-1]) + 1, dtype=bool)
    chosen[random.Random(seed).sample(users, n)] = True
    return rows[chosen[codes]]


def _k_core_rows(user: np.ndarray, item: np.ndarray, rows: np.ndarray, min_user: int, min_item: int
                 ) -> tuple[np.ndarray, int]:
    rounds = 0
    while True:
        u, i = user[rows], item[rows]
        keep = (np.bincount(u)[u] >= min_user) & (np.bincount(i)[i] >= min_item)
        if keep.all():
            return rows, rounds
        rows, rounds = rows[keep], rounds + 1


def _distinct(codes: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(codes))) if len(codes) else 0


def _removed(name: str, user: np.ndarray, item: np.ndarray, before: np.ndarray, after: np.ndarray,
             note: str = "") -> Step:
    return Step(name, _distinct(user[before]) - _distinct(user[after]),
                _distinct(item[before]) - _distinct(item[after]), len(before) - len(after), note)


def shape(converted: Converted, *, min_rating: float | None = None, n_users: int | None = None, seed: int = 0,
          min_user_interactions: int | None = None, min_item_interactions: int | None = None) -> Shaped:
    """Apply the filters that are given, in the documented order; without any, the records as they are."""
    interactions = converted.interactions
    user, item, item_ids = _codes(interactions)
    rows = np.arange(len(user))
    steps = []
    if min_rating is not None:
        assert converted.ratings is not None, "read the source with ratings"
        kept = _rating_rows(converted.ratings, rows, min_rating)
        steps.append(_removed(f"--min-rating {min_rating:g}", user, item, rows, kept))
        rows = kept
    if n_users is not None:
        kept = _sample_rows(user, rows, n_users, seed)
        available = _distinct(user[rows])
        note = f"only {available:,} users to draw from: all kept" if available <= n_users else ""
        steps.append(_removed(f"--sample-users {n_users} --seed {seed}", user, item, rows, kept, note))
        rows = kept
    if min_user_interactions is not None or min_item_interactions is not None:
        kept, rounds = _k_core_rows(user, item, rows, min_user_interactions or 1, min_item_interactions or 1)
        name = " ".join(f"{flag} {n}" for flag, n in (("--min-user-interactions", min_user_interactions),
                                                       ("--min-item-interactions", min_item_interactions)) if n)
        steps.append(_removed(name, user, item, rows, kept, f"k-core, {rounds} round{'s' * (rounds != 1)} of drops"))
        rows = kept
    if not steps:
        return Shaped(converted.items, interactions, users=_distinct(user))
    if not len(rows):
        raise UsageError(f"no interaction is left after {', then '.join(s.name for s in steps)}; loosen the "
                         "filters")
    interacted = set(np.asarray(item_ids, dtype=object)[np.unique(item[rows])].tolist())
    had = set(item_ids)
    kept_records = (interactions.select(rows) if isinstance(interactions, InteractionTable)
                    else _records(interactions, rows))
    return Shaped([r for r in converted.items if r["item_id"] in interacted], kept_records, steps,
                  unused_items=sum(r["item_id"] not in had for r in converted.items), users=_distinct(user[rows]))


# ---- an mscg dataset folder as a source ---------------------------------------------------------------

def is_mscg_dataset(folder: Path) -> bool:
    """FOLDER holds items.jsonl and interactions.jsonl (each plain or gzip-compressed: `.jsonl.gz`)."""
    return folder.is_dir() and all(jsonl_file(folder, name).is_file() for name in (ITEMS_FILE, INTERACTIONS_FILE))


def read_mscg_dataset(folder: Path, *, ratings: bool = False) -> tuple[Converted, dict[str, Path]]:
    """(records, {item_id: image file}) of an mscg dataset folder, every field of every record kept.
    `ratings`: also read each interaction's number `rating` (for --min-rating)."""
    items_path, inter_path = jsonl_file(folder, ITEMS_FILE), jsonl_file(folder, INTERACTIONS_FILE)
    catalogue = load_catalogue(items_path)  # both files checked line by line, with the readers' messages
    load_interactions(inter_path, catalogue)
    items = [obj for _, obj in read_jsonl(items_path)]
    images = {item_id: path for item_id, path in zip(catalogue.item_ids, catalogue.images, strict=True)
              if path is not None}
    interactions, values, missing = [], [], []
    for line_no, obj in read_jsonl(inter_path):
        interactions.append(obj)
        if ratings:
            values.append(field_number(obj, RATING_FIELD, f"{inter_path} line {line_no}"))
            if values[-1] is None:
                missing.append(line_no)
    if missing and len(missing) == len(values):
        raise UsageError(f"{inter_path} has no \"{RATING_FIELD}\" field, so --min-rating cannot filter it; "
                         "drop --min-rating, or filter the RecBole files it was prepared from")
    if missing:
        raise DataError(f"{inter_path} line {missing[0]}: no \"{RATING_FIELD}\"; --min-rating needs a number "
                        f"\"{RATING_FIELD}\" on every line ({len(missing):,} lines lack one)")
    return Converted(items, interactions, "mscg", values if ratings else None), images


# ---- images ---------------------------------------------------------------------------------------

def image_file_name(item_id: str, source: Path) -> str:
    """The file name of an item's image in IMAGES_DIR: its id, percent-encoded where a file name could not hold it
    (`/`, a leading dot, ...), with the source's suffix. Distinct ids give distinct names."""
    name = quote(item_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    suffix = source.suffix if source.suffix[1:].isalnum() else ""
    if len(name.encode()) + len(suffix) > 200:  # file systems cap a name at 255 bytes
        name = "#" + hashlib.sha256(item_id.encode()).hexdigest()  # quote() never leaves a "#"
    return name + suffix


@dataclass
class Placed:
    """How the images went into the dataset folder."""
    linked: int = 0  # hard links to the source files
    copied: int = 0

    def __len__(self) -> int:
        return self.linked + self.copied


def place_images(items: list[dict], sources: dict[str, Path], into: Path, *, copy: bool = False) -> Placed:
    """Give each item in `sources` the image `IMAGES_DIR/<image_file_name>` inside `into` (the partial output
    folder), so that the dataset folder holds its images and can be moved on its own.

    Each file is a hard link to its source where the file system allows one (the same file system, a file the
    user may link) and a copy otherwise, or always with `copy`. A copy is readable by everyone (0644, less the
    umask) only where its source is; otherwise only by its owner (0600). A linked source is placed as the file
    it links to; nothing is written through a link.
    """
    placed = Placed()
    if sources:
        (into / IMAGES_DIR).mkdir()
    for record in items:
        source = sources.get(record["item_id"])
        if source is None:
            continue
        name = image_file_name(record["item_id"], source)
        if _place_file(source, into / IMAGES_DIR / name, record["item_id"], link=not copy):
            placed.linked += 1
        else:
            placed.copied += 1
        record["image"] = f"{IMAGES_DIR}/{name}"
    return placed


def _place_file(source: Path, dest: Path, item_id: str, *, link: bool) -> bool:
    """Hard-link (when `link` and the file system allows it) or copy `source` to the new file `dest`; True when
    linked."""
    real = os.path.realpath(source)  # the file a link leads to (checked to lie inside its folder when read)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang the open
    try:
        fd = os.open(real, flags)
    except OSError as e:
        raise DataError(f"the image {source} of item {item_id!r} cannot be read ({e.strerror or e}); fix its path "
                        "or drop the item's image field") from None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"the image {source} of item {item_id!r} is not a regular file; fix its path or drop "
                            "the item's image field")
        if link:
            try:
                os.link(real, dest, follow_symlinks=False)
            except FileExistsError:
                raise _collision(dest) from None
            except OSError:  # another file system, a file the user may not link (EPERM), too many links: copy
                pass
            else:
                linked = os.lstat(dest)
                if (linked.st_dev, linked.st_ino) == (st.st_dev, st.st_ino):
                    return True
                os.unlink(dest)  # the path was swapped between the open and the link
                raise DataError(f"the image {source} of item {item_id!r} changed while it was linked; rerun")
        mode = 0o644 if st.st_mode & stat.S_IROTH else 0o600
        try:
            out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            raise _collision(dest) from None
        with os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(src, out)
    return False


def _collision(dest: Path) -> DataError:
    return DataError(f"two items' images would both be placed at {dest.name}; rename one of the image files")
