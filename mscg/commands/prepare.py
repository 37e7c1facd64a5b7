"""`mscg prepare`: convert RecBole files, MovieLens or Amazon Reviews 2023 downloads (or reshape an mscg dataset)
into items.jsonl + interactions.jsonl."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from mscg.artifacts.atomic import AtomicDir, check_output
from mscg.commands._common import ForceOpt, OutputOpt, SeedOpt, user_errors
from mscg.console import info, plural, progress_bar, stderr
from mscg.data.coldstart import withhold, write_withheld
from mscg.data.interactions import INTERACTIONS_FILE
from mscg.data.items import ITEMS_FILE
from mscg.data.jsonl import write_jsonl_line
from mscg.data.raw import AMAZON, MOVIELENS, OnRead, convert_raw, find_raw_files
from mscg.data.recbole import (
    check_image_options,
    convert_atomic,
    convert_sequence,
    detect,
    find_images,
    resolve_source,
)
from mscg.data.shaping import IMAGES_DIR, Step, is_mscg_dataset, place_images, read_mscg_dataset, shape
from mscg.errors import UsageError


@dataclass
class PrepareResult:
    format: str  # atomic, sequence, amazon, movielens or mscg
    items: int
    interactions: int
    users: int
    with_text: int
    with_image: int
    steps: list[Step] = field(default_factory=list)  # what each filter removed, in order
    unused_items: int = 0  # items without any interaction in the source, dropped by the filters
    linked_images: int = 0  # of `with_image`: hard links in OUTPUT/images/ to the source files
    copied_images: int = 0  # of `with_image`: copies in OUTPUT/images/
    notes: list[str] = field(default_factory=list)  # what the conversion left out or kept without text


SOURCE_KINDS = {"atomic": "atomic RecBole files", "sequence": "RecBole sequence files", "mscg": "an mscg dataset",
                AMAZON: "Amazon Reviews 2023 files", MOVIELENS: "MovieLens files"}
READABLE = ("RecBole files (NAME.inter, or NAME.train/valid/test.inter), MovieLens files (ratings.csv + movies.csv, "
            "or ratings.dat + movies.dat), Amazon Reviews 2023 files (CATEGORY.jsonl.gz + meta_CATEGORY.jsonl.gz) "
            "or an mscg dataset (items.jsonl + interactions.jsonl)")


def prepare(source: str, output: Path, *, name: str | None = None, meta: Path | None = None,
            images: Path | None = None, image_pattern: str = "{item_id}.jpg", copy_images: bool = False,
            min_rating: float | None = None, sample_users: int | None = None, seed: int = 0,
            min_user_interactions: int | None = None, min_item_interactions: int | None = None,
            withhold_items: float | None = None, force: bool = False, on_read: OnRead | None = None
            ) -> PrepareResult:
    """Convert (or reshape) SOURCE into the dataset folder OUTPUT. `on_read(file, bytes read, size)`: how far the
    reading of raw downloads got, now and then."""
    if min_rating is not None and not math.isfinite(min_rating):
        raise UsageError(f"--min-rating {min_rating} must be a finite number, e.g. 4")
    if withhold_items is not None and not 0 < withhold_items < 1:
        raise UsageError(f"--withhold-items {withhold_items:g} must be a share of the items between 0 and 1, e.g. 0.1")
    source_dir = resolve_source(source)  # a folder, or a reviews or ratings file
    filters = {"min_rating": min_rating, "n_users": sample_users, "min_user_interactions": min_user_interactions,
               "min_item_interactions": min_item_interactions}
    raw = None
    if is_mscg_dataset(source_dir):
        fmt = "mscg"
        if meta is not None:
            raise UsageError(f"{source_dir} is an mscg dataset; --meta goes with a reviews or ratings file: drop it")
        if name is not None:
            raise UsageError(f"{source_dir} is an mscg dataset (items.jsonl + interactions.jsonl), not RecBole "
                             "files; drop --name")
        reshaping = any(v is not None for v in (*filters.values(), images, withhold_items)) or copy_images
        if not reshaping:
            raise UsageError(f"{source_dir} is already an mscg dataset (items.jsonl + interactions.jsonl); use it "
                             f"directly with -d {source_dir}, or reshape it with --min-rating, --sample-users, "
                             "--min-user-interactions, --min-item-interactions, --copy-images or --withhold-items")
    else:
        if not source_dir.is_dir() or not any(source_dir.glob("*.inter")):  # RecBole files go first
            raw = find_raw_files(source_dir, name=name, meta=meta)
            if raw is None:
                raise UsageError(f"{source_dir} holds none of the files prepare reads: {READABLE}; pass the folder "
                                 "that holds them")
            fmt = raw.format
        else:
            if meta is not None:
                raise UsageError(f"{source_dir} holds RecBole files; --meta goes with a reviews or ratings file: "
                                 "drop it")
            fmt, name = detect(source_dir, name)
        if fmt == "sequence" and min_rating is not None:
            raise UsageError(f"{source_dir} holds RecBole sequence files, which have no rating column; drop "
                             "--min-rating")
        if copy_images and images is None:
            raise UsageError("--copy-images copies the images that --images finds; pass --images DIR")
    if images is not None:
        check_image_options(images, image_pattern)
    inputs = [source_dir] + ([raw.items] if raw else []) + ([images] if images else [])
    check_output(output, force=force, inputs=inputs)  # fail before the slow part
    ratings = min_rating is not None
    sources: dict[str, Path] = {}
    if fmt == "mscg":
        converted, sources = read_mscg_dataset(source_dir, ratings=ratings)
    elif raw is not None:
        converted = convert_raw(raw, ratings=ratings, on_read=on_read)
    elif fmt == "atomic":
        converted = convert_atomic(source_dir, name, ratings=ratings)
    else:
        converted = convert_sequence(source_dir, name)
    if images is not None:
        sources.update(find_images(converted.items, images, image_pattern))
    shaped = shape(converted, seed=seed, **filters)
    withheld: list[str] | None = None
    if withhold_items is not None:  # last: the cold-start split of the dataset the filters leave
        kept, withheld = withhold(list(shaped.interactions), withhold_items, seed)
        shaped.steps.append(Step(f"--withhold-items {withhold_items:g}", users=0, items=0,
                                 interactions=len(shaped.interactions) - len(kept),
                                 note=f"{len(withheld):,} items withheld, kept only as test targets"))
        shaped.interactions = kept
    with AtomicDir(output, force=force, inputs=inputs, keep_modes=[IMAGES_DIR]) as tmp:  # images: see place_images
        placed = place_images(shaped.items, sources, tmp, copy=copy_images)
        with open(tmp / ITEMS_FILE, "w", encoding="utf-8") as f:
            f.writelines(write_jsonl_line(r) for r in shaped.items)
        with open(tmp / INTERACTIONS_FILE, "w", encoding="utf-8") as f:
            f.writelines(write_jsonl_line(r) for r in shaped.interactions)
        if withheld is not None:
            write_withheld(tmp, withheld, withhold_items, seed)
    return PrepareResult(
        format=fmt, items=len(shaped.items), interactions=len(shaped.interactions),
        users=shaped.users, with_text=sum("text" in r for r in shaped.items), with_image=len(placed),
        steps=shaped.steps, unused_items=shaped.unused_items, linked_images=placed.linked,
        copied_images=placed.copied, notes=converted.notes,
    )


def summary(output: Path, r: PrepareResult) -> str:
    """The one info line: what was written, and what each filter removed."""
    placed = (f", hard-linked into {IMAGES_DIR}/" if not r.copied_images else
              f", copied into {IMAGES_DIR}/" if not r.linked_images else
              f", in {IMAGES_DIR}/: {r.linked_images:,} hard-linked, {r.copied_images:,} copied")
    placed = placed if r.with_image else ""
    source = "; ".join([SOURCE_KINDS[r.format], *r.notes])
    line = (f"wrote {output}: {r.items:,} items ({r.with_text:,} with text, {r.with_image:,} with an image{placed}), "
            f"{r.interactions:,} interactions of {r.users:,} users ({source})")
    for step in r.steps:
        note = f" ({step.note})" if step.note else ""
        line += (f"; {step.name} removed {plural(step.interactions, 'interaction')}, {plural(step.users, 'user')}, "
                 f"{plural(step.items, 'item')}{note}")
    if r.unused_items:
        line += f"; {r.unused_items:,} items without any interaction dropped"
    return line


@user_errors
def prepare_cli(
    source: Annotated[str, typer.Argument(help="A folder of RecBole, MovieLens (ratings.csv + movies.csv) or "
                                               "Amazon Reviews 2023 files (CATEGORY.jsonl.gz + "
                                               "meta_CATEGORY.jsonl.gz); a MovieLens ratings.csv or an Amazon "
                                               "reviews file itself; recbole:ml-100k (shipped in the recbole wheel); "
                                               "or an mscg dataset folder to reshape.", show_default=False)],
    output: OutputOpt,
    name: Annotated[str | None, typer.Option(help="Dataset name when the folder holds several: the RecBole file "
                                                  "prefix, or the Amazon category (Toys_and_Games).")] = None,
    meta: Annotated[Path | None, typer.Option(help="The item file of a reviews or ratings file given as SOURCE: "
                                                   "meta_CATEGORY.jsonl(.gz) for Amazon reviews, movies.csv for "
                                                   "MovieLens (default: the one next to SOURCE).",
                                              show_default=False)] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of item images; each item whose file exists gets it "
                                                     "in OUTPUT/images/ (a hard link where the file system "
                                                     "allows, else a copy) and an `image` field naming it there, "
                                                     "so that OUTPUT can be moved or copied on its own.")] = None,
    image_pattern: Annotated[str, typer.Option(help="Image file name inside --images ({item_id}: the id as it is, "
                                                    "but / becomes %2F, and the ids . and .. %2E and %2E%2E); no "
                                                    "`..`, no absolute path.")] = "{item_id}.jpg",
    copy_images: Annotated[bool, typer.Option("--copy-images", help="Copy the images into OUTPUT/images/ instead "
                                              "of hard-linking them (a change to a source file then leaves OUTPUT "
                                              "as it is).")] = False,
    min_rating: Annotated[float | None, typer.Option(help="Keep only interactions rated at least this (the "
                                                     "`rating` column of NAME.inter or ratings.csv, the `rating` of "
                                                     "an Amazon review, or the `rating` field of an mscg "
                                                     "interactions.jsonl).", show_default=False)] = None,
    sample_users: Annotated[int | None, typer.Option(min=1, help="Keep the interactions of this many users, drawn "
                                                     "at random with --seed.", show_default=False)] = None,
    min_user_interactions: Annotated[int | None, typer.Option(min=1, help="k-core: drop users with fewer "
                                                              "interactions than this.", show_default=False)] = None,
    min_item_interactions: Annotated[int | None, typer.Option(min=1, help="k-core: drop items with fewer "
                                                              "interactions than this.", show_default=False)] = None,
    withhold_items: Annotated[float | None, typer.Option(help="Cold-start split: withhold this share of the items "
                                                         "(drawn with --seed) from training. Their interactions "
                                                         "are removed except where one is a user's last (the test "
                                                         "target); the items stay in items.jsonl, and "
                                                         "OUTPUT/withheld_items.json lists them for `evaluate`.",
                                                         show_default=False)] = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Convert RecBole atomic files (NAME.inter + NAME.item) or sequence files (NAME.train/valid/test.inter +
    NAME.text), MovieLens or Amazon Reviews 2023 downloads into OUTPUT/items.jsonl and OUTPUT/interactions.jsonl,
    optionally filtered.

    MovieLens: ratings.csv + movies.csv (ml-latest, ml-25m, ml-32m), or ratings.dat + movies.dat (ml-1m, ml-10m); an
    item's text is its title and genres. Amazon Reviews 2023: the reviews file CATEGORY.jsonl(.gz) and the
    metadata file meta_CATEGORY.jsonl(.gz); an item is a parent_asin, its text its title, features and
    description (cut at 2,000 characters), its timestamps the reviews' (milliseconds). The metadata's image URLs
    are ignored: mscg downloads nothing (give images you have with --images). Items that no interaction names are
    left out, and items the metadata (movies) file lacks are kept without text; the summary line counts both.
    The files are read line by line (gzip or not): memory grows with the number of interactions, about 24 bytes
    each, not with the size of the files.

    The filters run in this order: --min-rating, then --sample-users (drawn from the users the rating filter
    kept), then the k-core (--min-user-interactions, --min-item-interactions), repeated until every user and
    item left has enough interactions (dropping an item can take a user below the limit). With any filter,
    items left without an interaction are dropped from items.jsonl too. SOURCE may also be an mscg dataset
    folder: the filters (and --copy-images) then apply to its items.jsonl and interactions.jsonl, every field
    kept. Same options and --seed, same bytes. --withhold-items then makes a cold-start split of the result.

    Every image goes into OUTPUT/images/ (a hard link where the file system allows, a copy with --copy-images),
    so a dataset holds its images. mscg reads only files inside a dataset's folder (and here, inside --images
    DIR): an image path that is absolute, climbs out with `..` or leads out through a symbolic link is refused.

    [bold]Examples[/bold]

      mscg prepare recbole:ml-100k -o data/ml-100k --images path/to/posters

      mscg prepare recbole:ml-100k -o data/ml-small --min-rating 4 --sample-users 300 --min-user-interactions 5 \\
        --min-item-interactions 5

      mscg prepare path/to/ml-32m -o data/ml-32m --min-rating 4 --min-user-interactions 5

      mscg prepare path/to/Toys_and_Games.jsonl.gz -o data/toys --min-user-interactions 5 --min-item-interactions 5
    """
    with progress_bar() as bar:
        r = prepare(source, output, name=name, meta=meta, images=images, image_pattern=image_pattern,
                    copy_images=copy_images, min_rating=min_rating, sample_users=sample_users, seed=seed,
                    min_user_interactions=min_user_interactions, min_item_interactions=min_item_interactions,
                    withhold_items=withhold_items, force=force, on_read=reading_bar(bar))
    info(summary(output, r))


def reading_bar(bar) -> OnRead:
    """A bar per file read, in MiB; where stderr is not a terminal (a log), a status line a minute instead."""
    tasks: dict[Path, int] = {}
    last_log = [time.monotonic()]

    def on_read(path: Path, done: int, size: int) -> None:
        total = max(1, size >> 20)
        if path not in tasks:
            tasks[path] = bar.add_task(f"reading {path.name} (MiB)", total=total, status="")
        bar.update(tasks[path], completed=total if done >= size else done >> 20)
        if not stderr.is_terminal and time.monotonic() - last_log[0] > 60:
            last_log[0] = time.monotonic()
            info(f"prepare: read {done >> 20:,} of {size >> 20:,} MiB of {path.name}")

    return on_read
