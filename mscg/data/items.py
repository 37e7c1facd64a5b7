"""items.jsonl: the catalogue. One object per line: `item_id` (string, unique), optional `text`
(string), optional `image` (path relative to the directory of items.jsonl). Other fields are ignored.
The file order defines each item's dense index inside mscg."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mscg.data.jsonl import field_str, read_jsonl
from mscg.errors import DataError

ITEMS_FILE = "items.jsonl"


@dataclass
class Catalogue:
    path: Path
    item_ids: list[str]
    texts: list[str | None]
    images: list[Path | None]  # resolved paths; None = item has no image
    index: dict[str, int]

    def __len__(self) -> int:
        return len(self.item_ids)


def load_catalogue(path: Path) -> Catalogue:
    path = Path(path)
    item_ids: list[str] = []
    texts: list[str | None] = []
    images: list[Path | None] = []
    first_line: dict[str, int] = {}
    for line_no, obj in read_jsonl(path):
        where = f"{path} line {line_no}"
        item_id = field_str(obj, "item_id", where, required=True)
        if not item_id.strip():
            raise DataError(f"{where}: \"item_id\" is empty; give every item a non-empty id")
        if item_id in first_line:
            raise DataError(f"{where}: item_id {item_id!r} already appears on line {first_line[item_id]}; "
                            "item ids must be unique")
        text = field_str(obj, "text", where, required=False)
        if text is not None and not text.strip():
            raise DataError(f"{where}: \"text\" of item {item_id!r} is empty; omit the field for items without text")
        image = field_str(obj, "image", where, required=False)
        if image is not None and not image.strip():
            raise DataError(f"{where}: \"image\" of item {item_id!r} is empty; "
                            "omit the field for items without an image")
        first_line[item_id] = line_no
        item_ids.append(item_id)
        texts.append(text)
        images.append(path.parent / image if image is not None else None)
    if not item_ids:
        raise DataError(f"{path} holds no items; write one JSON object per item")
    return Catalogue(path=path, item_ids=item_ids, texts=texts, images=images,
                     index={item_id: i for i, item_id in enumerate(item_ids)})
