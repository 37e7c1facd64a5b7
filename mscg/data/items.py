"""items.jsonl: the catalogue. One object per line: `item_id` (string, unique), optional `text`
(string), optional `image` (path relative to the directory of items.jsonl, and inside it: see
`FolderPaths`). Other fields are ignored. The file order defines each item's dense index inside mscg."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mscg.data.jsonl import field_str, read_jsonl
from mscg.errors import DataError

ITEMS_FILE = "items.jsonl"


class FolderPaths:
    """Paths named relative to one folder (a dataset's images, a model folder's codes), which must stay inside it.

    The rule: the path is relative, and its real path (every symbolic link on the way resolved, as opening it
    would) lies inside the real path of the folder. So an absolute path, a `..` that climbs out, and a symbolic
    link to a file or to a folder outside are refused wherever they are on the way; a `..` or a link that stays
    inside is fine, and the folder itself may be reached through a link. A path that does not exist is judged
    by the part of it that does.
    NOTE: checked when read, not held: a process that swaps a link inside the folder between the check and
    the read is not guarded against (whoever can write the folder can put any file in it anyway).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.real_root = os.path.realpath(self.root)
        self._prefix = self.real_root.rstrip(os.sep) + os.sep  # what every real path inside starts with
        self._real_dirs: dict[str, str] = {}  # folder named inside root -> its real path (a catalogue names few)

    def real_path(self, relative: str) -> str:
        """The real path of ROOT/relative: os.path.realpath, with the real path of each folder computed once."""
        head, tail = os.path.split(relative)
        if tail in ("", ".", ".."):
            return os.path.realpath(os.path.join(self.real_root, relative))
        real_dir = self._real_dirs.get(head)
        if real_dir is None:
            real_dir = self._real_dirs[head] = os.path.realpath(os.path.join(self.real_root, head))
        path = os.path.join(real_dir, tail)
        return os.path.realpath(path) if os.path.islink(path) else path

    def why_outside(self, relative: str) -> str | None:
        """Why ROOT/relative does not stay inside ROOT (to follow "the image X ..."); None when it does."""
        if "\0" in relative:
            return "holds a NUL character"
        if os.path.isabs(relative):
            return "is an absolute path"
        real = self.real_path(relative)
        if real == self.real_root or real.startswith(self._prefix):
            return None
        if os.path.normpath(relative).split(os.sep)[0] == os.pardir:
            return "climbs out of the folder with `..`"
        return f"leads out of the folder through a symbolic link (to {real})"


@dataclass
class Catalogue:
    path: Path
    item_ids: list[str]
    texts: list[str | None]
    images: list[Path | None]  # ROOT/image (inside ROOT, the folder of items.jsonl); None = item has no image
    index: dict[str, int]

    def __len__(self) -> int:
        return len(self.item_ids)


def load_catalogue(path: Path) -> Catalogue:
    path = Path(path)
    folder = FolderPaths(path.parent)
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
        if image is not None and (why := folder.why_outside(image)):
            raise DataError(f"{where}: the image {image!r} of item {item_id!r} {why}; mscg reads only images "
                            f"inside the dataset folder {path.parent}: copy the file into it and give its path "
                            f"relative to {path.name} (`mscg prepare --images DIR` does that)")
        first_line[item_id] = line_no
        item_ids.append(item_id)
        texts.append(text)
        images.append(path.parent / image if image is not None else None)
    if not item_ids:
        raise DataError(f"{path} holds no items; write one JSON object per item")
    return Catalogue(path=path, item_ids=item_ids, texts=texts, images=images,
                     index={item_id: i for i, item_id in enumerate(item_ids)})
