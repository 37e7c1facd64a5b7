"""interactions.jsonl: one object per line: `user_id`, `item_id` (strings), optional `timestamp`
(number; when absent on every line, file order is the time order). Every item_id must be in items.jsonl."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mscg.data.items import Catalogue
from mscg.data.jsonl import field_number, field_str, read_jsonl
from mscg.errors import DataError

INTERACTIONS_FILE = "interactions.jsonl"


@dataclass
class Interactions:
    path: Path
    user_ids: list[str]  # one per distinct user, in order of first appearance
    user: np.ndarray  # (E,) int64 dense user index
    item: np.ndarray  # (E,) int64 dense item index (catalogue order)
    timestamp: np.ndarray | None  # (E,) float64, or None when the file has no timestamps

    def __len__(self) -> int:
        return len(self.item)


def load_interactions(path: Path, catalogue: Catalogue) -> Interactions:
    path = Path(path)
    user_index: dict[str, int] = {}
    users, items, stamps = array("q"), array("q"), array("d")  # 8 bytes an interaction each: no Python objects
    with_time = None  # decided by the first record
    first_line = 0
    for line_no, obj in read_jsonl(path):
        where = f"{path} line {line_no}"
        user_id = field_str(obj, "user_id", where, required=True)
        item_id = field_str(obj, "item_id", where, required=True)
        timestamp = field_number(obj, "timestamp", where)
        item = catalogue.index.get(item_id)
        if item is None:
            raise DataError(f"{where}: item_id {item_id!r} is not in {catalogue.path}; add it there or drop this line")
        if with_time is None:
            with_time, first_line = timestamp is not None, line_no
        elif with_time != (timestamp is not None):
            raise DataError(f"{where}: \"timestamp\" is {'missing' if with_time else 'present'} here but "
                            f"{'present' if with_time else 'missing'} on line {first_line}; "
                            "give every line a timestamp or none")
        users.append(user_index.setdefault(user_id, len(user_index)))
        items.append(item)
        if with_time:
            stamps.append(timestamp)
    if not items:
        raise DataError(f"{path} holds no interactions; write one JSON object per interaction")
    return Interactions(  # the arrays' buffers, not copies
        path=path, user_ids=list(user_index), user=np.frombuffer(users, dtype=np.int64),
        item=np.frombuffer(items, dtype=np.int64),
        timestamp=np.frombuffer(stamps, dtype=np.float64) if with_time else None,
    )
