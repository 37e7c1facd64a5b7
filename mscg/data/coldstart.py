"""The cold-start split: a seeded share of items withheld from training, kept in the catalogue.

A withheld item's interactions are removed everywhere except where it is a user's last interaction, so the
leave-one-out split (mscg/data/split.py) meets it only as a test target: no training stage (SASRec, the
quantizers, the generator) and no validation target ever sees it, yet it stays in items.jsonl with its text and
image. DATA/withheld_items.json lists the withheld ids; `evaluate` then reports the users whose test target is a
withheld item apart from the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mscg.errors import DataError, UsageError

WITHHELD_FILE = "withheld_items.json"


def last_interactions(users: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """(E,) bool: each user's last interaction in the split's time order (timestamp, ties by file order)."""
    file_order = np.arange(len(users))
    keys = (file_order, users) if timestamps is None else (file_order, timestamps, users)
    order = np.lexsort(keys)
    sorted_users = users[order]
    is_last = np.ones(len(users), dtype=bool)
    is_last[:-1] = sorted_users[:-1] != sorted_users[1:]
    out = np.zeros(len(users), dtype=bool)
    out[order[is_last]] = True
    return out


def withhold(interactions: list[dict[str, Any]], share: float, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """(the interactions kept, the withheld item ids in first-appearance order).

    `share` of the items that occur in `interactions` (rounded, at least one) are drawn with `seed`; their
    interactions go, except those that are a user's last."""
    if not 0 < share < 1:
        raise UsageError(f"--withhold-items {share} must be a share of the items between 0 and 1 (e.g. 0.1)")
    if not interactions:
        return [], []
    item_index: dict[str, int] = {}
    user_index: dict[str, int] = {}
    items = np.array([item_index.setdefault(r["item_id"], len(item_index)) for r in interactions], dtype=np.int64)
    users = np.array([user_index.setdefault(r["user_id"], len(user_index)) for r in interactions], dtype=np.int64)
    with_time = "timestamp" in interactions[0]
    stamps = np.array([float(r["timestamp"]) for r in interactions]) if with_time else None
    n = max(1, round(share * len(item_index)))
    chosen = np.sort(np.random.default_rng(seed).choice(len(item_index), size=n, replace=False))
    withheld = np.zeros(len(item_index), dtype=bool)
    withheld[chosen] = True
    keep = ~withheld[items] | last_interactions(users, stamps)
    ids = list(item_index)
    return [r for r, k in zip(interactions, keep) if k], [ids[i] for i in chosen]


def write_withheld(folder: Path, item_ids: list[str], share: float, seed: int) -> None:
    record = {"kind": "withheld_items", "share": share, "seed": seed, "count": len(item_ids), "item_ids": item_ids}
    (Path(folder) / WITHHELD_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def read_withheld(data: Path, index: dict[str, int]) -> np.ndarray | None:
    """Dense indices of DATA's withheld items, or None when DATA is no cold-start split."""
    path = Path(data) / WITHHELD_FILE
    if not path.is_file():
        return None
    try:
        ids = json.loads(path.read_text(encoding="utf-8")).get("item_ids")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise DataError(f"{path} is not a withheld-items file ({e}); re-create the split with "
                        "`mscg prepare --withhold-items`, or delete it") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DataError(f"{path}: item_ids must be a list of item id strings; re-create the split with "
                        "`mscg prepare --withhold-items`")
    unknown = next((i for i in ids if i not in index), None)
    if unknown is not None:
        raise DataError(f"{path} withholds item {unknown!r}, which is not in the catalogue; re-create the split with "
                        "`mscg prepare --withhold-items`")
    return np.array(sorted(index[i] for i in ids), dtype=np.int64)
