"""`mscg prepare`: convert RecBole files (or reshape an mscg dataset) into items.jsonl + interactions.jsonl."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from mscg.artifacts.atomic import AtomicDir, check_output
from mscg.commands._common import ForceOpt, OutputOpt, SeedOpt, user_errors
from mscg.console import info
from mscg.data.coldstart import withhold, write_withheld
from mscg.data.interactions import INTERACTIONS_FILE
from mscg.data.items import ITEMS_FILE
from mscg.data.jsonl import write_jsonl_line
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
    format: str  # atomic, sequence or mscg
    items: int
    interactions: int
    users: int
    with_text: int
    with_image: int
    steps: list[Step] = field(default_factory=list)  # what each filter removed, in order
    unused_items: int = 0  # items without any interaction in the source, dropped by the filters
    linked_images: int = 0  # of `with_image`: hard links in OUTPUT/images/ to the source files
    copied_images: int = 0  # of `with_image`: copies in OUTPUT/images/


SOURCE_KINDS = {"atomic": "atomic RecBole files", "sequence": "RecBole sequence files", "mscg": "an mscg dataset"}


def prepare(source: str, output: Path, *, name: str | None = None, images: Path | None = None,
            image_pattern: str = "{item_id}.jpg", copy_images: bool = False, min_rating: float | None = None,
            sample_users: int | None = None, seed: int = 0, min_user_interactions: int | None = None,
            min_item_interactions: int | None = None, withhold_items: float | None = None,
            force: bool = False) -> PrepareResult:
    if min_rating is not None and not math.isfinite(min_rating):
        raise UsageError(f"--min-rating {min_rating} must be a finite number, e.g. 4")
    if withhold_items is not None and not 0 < withhold_items < 1:
        raise UsageError(f"--withhold-items {withhold_items:g} must be a share of the items between 0 and 1, e.g. 0.1")
    source_dir = resolve_source(source)
    filters = {"min_rating": min_rating, "n_users": sample_users, "min_user_interactions": min_user_interactions,
               "min_item_interactions": min_item_interactions}
    if is_mscg_dataset(source_dir):
        fmt = "mscg"
        if name is not None:
            raise UsageError(f"{source_dir} is an mscg dataset (items.jsonl + interactions.jsonl), not RecBole "
                             "files; drop --name")
        reshaping = any(v is not None for v in (*filters.values(), images, withhold_items)) or copy_images
        if not reshaping:
            raise UsageError(f"{source_dir} is already an mscg dataset (items.jsonl + interactions.jsonl); use it "
                             f"directly with -d {source_dir}, or reshape it with --min-rating, --sample-users, "
                             "--min-user-interactions, --min-item-interactions, --copy-images or --withhold-items")
    else:
        fmt, name = detect(source_dir, name)
        if fmt == "sequence" and min_rating is not None:
            raise UsageError(f"{source_dir} holds RecBole sequence files, which have no rating column; drop "
                             "--min-rating")
        if copy_images and images is None:
            raise UsageError("--copy-images copies the images that --images finds; pass --images DIR")
    if images is not None:
        check_image_options(images, image_pattern)
    inputs = [source_dir] + ([images] if images else [])
    check_output(output, force=force, inputs=inputs)  # fail before the slow part
    ratings = min_rating is not None
    sources: dict[str, Path] = {}
    if fmt == "mscg":
        converted, sources = read_mscg_dataset(source_dir, ratings=ratings)
    elif fmt == "atomic":
        converted = convert_atomic(source_dir, name, ratings=ratings)
    else:
        converted = convert_sequence(source_dir, name)
    if images is not None:
        sources.update(find_images(converted.items, images, image_pattern))
    shaped = shape(converted, seed=seed, **filters)
    withheld: list[str] | None = None
    if withhold_items is not None:  # last: the cold-start split of the dataset the filters leave
        kept, withheld = withhold(shaped.interactions, withhold_items, seed)
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
        users=len({r["user_id"] for r in shaped.interactions}),
        with_text=sum("text" in r for r in shaped.items), with_image=len(placed), steps=shaped.steps,
        unused_items=shaped.unused_items, linked_images=placed.linked, copied_images=placed.copied,
    )


def summary(output: Path, r: PrepareResult) -> str:
    """The one info line: what was written, and what each filter removed."""
    placed = (f", hard-linked into {IMAGES_DIR}/" if not r.copied_images else
              f", copied into {IMAGES_DIR}/" if not r.linked_images else
              f", in {IMAGES_DIR}/: {r.linked_images:,} hard-linked, {r.copied_images:,} copied")
    placed = placed if r.with_image else ""
    line = (f"wrote {output}: {r.items:,} items ({r.with_text:,} with text, {r.with_image:,} with an image{placed}), "
            f"{r.interactions:,} interactions of {r.users:,} users ({SOURCE_KINDS[r.format]})")
    for step in r.steps:
        note = f" ({step.note})" if step.note else ""
        line += (f"; {step.name} removed {step.interactions:,} interactions, {step.users:,} users, "
                 f"{step.items:,} items{note}")
    if r.unused_items:
        line += f"; {r.unused_items:,} items without any interaction dropped"
    return line


@user_errors
def prepare_cli(
    source: Annotated[str, typer.Argument(help="Folder of RecBole files, recbole:ml-100k (shipped in the "
                                               "recbole wheel), or an mscg dataset folder to reshape.",
                                          show_default=False)],
    output: OutputOpt,
    name: Annotated[str | None, typer.Option(help="Dataset name (file prefix) when the folder holds several.")] = None,
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
                                                     "`rating` column of NAME.inter, or the `rating` field of "
                                                     "an mscg interactions.jsonl).", show_default=False)] = None,
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
    NAME.text) into OUTPUT/items.jsonl and OUTPUT/interactions.jsonl, optionally filtered.

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

      mscg prepare recbole:ml-100k -o data/ml-100k --images ../shared/data/ml-100k-posters/posters

      mscg prepare recbole:ml-100k -o data/ml-small --min-rating 4 --sample-users 300 --min-user-interactions 5 \\
        --min-item-interactions 5 --images ../shared/data/ml-100k-posters/posters --copy-images

      mscg prepare ../shared/data/amazon-scientific -o data/scientific
    """
    r = prepare(source, output, name=name, images=images, image_pattern=image_pattern, copy_images=copy_images,
                min_rating=min_rating, sample_users=sample_users, seed=seed,
                min_user_interactions=min_user_interactions, min_item_interactions=min_item_interactions,
                withhold_items=withhold_items, force=force)
    info(summary(output, r))
