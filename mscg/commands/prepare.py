"""`mscg prepare`: convert RecBole files into items.jsonl + interactions.jsonl."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from mscg.artifacts.atomic import AtomicDir, check_output
from mscg.commands._common import ForceOpt, OutputOpt, user_errors
from mscg.console import info
from mscg.data.interactions import INTERACTIONS_FILE
from mscg.data.items import ITEMS_FILE
from mscg.data.jsonl import write_jsonl_line
from mscg.data.recbole import attach_images, convert_atomic, convert_sequence, detect, resolve_source


@dataclass
class PrepareResult:
    format: str
    items: int
    interactions: int
    users: int
    with_text: int
    with_image: int


def prepare(source: str, output: Path, *, name: str | None = None, images: Path | None = None,
            image_pattern: str = "{item_id}.jpg", force: bool = False) -> PrepareResult:
    source_dir = resolve_source(source)
    fmt, name = detect(source_dir, name)
    inputs = [source_dir] + ([images] if images else [])
    check_output(output, force=force, inputs=inputs)  # fail before the slow part
    converted = convert_atomic(source_dir, name) if fmt == "atomic" else convert_sequence(source_dir, name)
    with_image = attach_images(converted.items, images, image_pattern, output) if images is not None else 0
    with AtomicDir(output, force=force, inputs=inputs) as tmp:
        with open(tmp / ITEMS_FILE, "w", encoding="utf-8") as f:
            f.writelines(write_jsonl_line(r) for r in converted.items)
        with open(tmp / INTERACTIONS_FILE, "w", encoding="utf-8") as f:
            f.writelines(write_jsonl_line(r) for r in converted.interactions)
    return PrepareResult(
        format=fmt, items=len(converted.items), interactions=len(converted.interactions),
        users=len({r["user_id"] for r in converted.interactions}),
        with_text=sum("text" in r for r in converted.items), with_image=with_image,
    )


@user_errors
def prepare_cli(
    source: Annotated[str, typer.Argument(help="Folder of RecBole files, or recbole:ml-100k (shipped in the "
                                               "recbole wheel).", show_default=False)],
    output: OutputOpt,
    name: Annotated[str | None, typer.Option(help="Dataset name (file prefix) when the folder holds several.")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of item images; items whose file exists get an "
                                                     "`image` field.")] = None,
    image_pattern: Annotated[str, typer.Option(help="Image file name inside --images.")] = "{item_id}.jpg",
    force: ForceOpt = False,
) -> None:
    """Convert RecBole atomic files (NAME.inter + NAME.item) or sequence files (NAME.train/valid/test.inter +
    NAME.text) into OUTPUT/items.jsonl and OUTPUT/interactions.jsonl.

    [bold]Examples[/bold]

      mscg prepare recbole:ml-100k -o data/ml-100k --images ../shared/data/ml-100k-posters/posters

      mscg prepare ../shared/data/amazon-scientific -o data/scientific
    """
    r = prepare(source, output, name=name, images=images, image_pattern=image_pattern, force=force)
    info(f"wrote {output}: {r.items:,} items ({r.with_text:,} with text, {r.with_image:,} with an image), "
         f"{r.interactions:,} interactions of {r.users:,} users ({r.format} RecBole files)")
