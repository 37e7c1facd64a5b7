"""The one split rule every stage uses (leave-one-out).

Per user, interactions are sorted by timestamp, ties (and files without timestamps) by file order.
The last item is the test target, the second last the validation target, the rest is training.
Users with fewer than 3 interactions are dropped (the count is reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mscg.data.interactions import INTERACTIONS_FILE, Interactions, load_interactions
from mscg.data.items import ITEMS_FILE, Catalogue, load_catalogue
from mscg.data.jsonl import jsonl_file
from mscg.errors import DataError

MIN_INTERACTIONS = 3
SPLITS = ("valid", "test")


@dataclass
class Split:
    user_ids: list[str]  # kept users, in order of first appearance
    sequences: list[np.ndarray]  # per kept user: item indices in time order (len >= 3)
    dropped_users: int

    def __len__(self) -> int:
        return len(self.user_ids)

    def train_sequence(self, u: int) -> np.ndarray:
        return self.sequences[u][:-2]

    def history(self, u: int, split: str) -> np.ndarray:
        """Everything before the target of `split` ("valid" or "test")."""
        return self.sequences[u][:-2] if split == "valid" else self.sequences[u][:-1]

    def target(self, u: int, split: str) -> int:
        return int(self.sequences[u][-2] if split == "valid" else self.sequences[u][-1])

    def train_items(self) -> np.ndarray:
        """Sorted unique item indices seen in training sequences."""
        return np.unique(np.concatenate([s[:-2] for s in self.sequences]))


def leave_one_out(interactions: Interactions) -> Split:
    n = len(interactions)
    file_order = np.arange(n)
    if interactions.timestamp is None:
        order = np.lexsort((file_order, interactions.user))
    else:
        order = np.lexsort((file_order, interactions.timestamp, interactions.user))
    users = interactions.user[order]
    items = interactions.item[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    # Users in order of first appearance in the file, as user_ids lists them.
    by_user = {int(users[s]): (s, e) for s, e in zip(starts, ends)}
    kept_ids, sequences, dropped = [], [], 0
    for u, user_id in enumerate(interactions.user_ids):
        s, e = by_user[u]
        if e - s < MIN_INTERACTIONS:
            dropped += 1
            continue
        kept_ids.append(user_id)
        sequences.append(items[s:e].copy())
    return Split(user_ids=kept_ids, sequences=sequences, dropped_users=dropped)


@dataclass
class Dataset:
    catalogue: Catalogue
    interactions: Interactions
    split: Split

    @property
    def items_path(self) -> Path:
        return self.catalogue.path

    @property
    def interactions_path(self) -> Path:
        return self.interactions.path


def dataset_files(data_dir: Path) -> tuple[Path, Path]:
    """DATA/items.jsonl and DATA/interactions.jsonl, each of them or its gzip-compressed `.jsonl.gz`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data {data_dir} is not a directory; pass the folder holding {ITEMS_FILE} and "
                        f"{INTERACTIONS_FILE} (`mscg prepare` makes one)")
    return jsonl_file(data_dir, ITEMS_FILE), jsonl_file(data_dir, INTERACTIONS_FILE)


def load_dataset(data_dir: Path) -> Dataset:
    items_path, interactions_path = dataset_files(data_dir)
    catalogue = load_catalogue(items_path)
    interactions = load_interactions(interactions_path, catalogue)
    split = leave_one_out(interactions)
    if len(split) == 0:
        raise DataError(f"{interactions_path}: no user has {MIN_INTERACTIONS} or more interactions, so nothing is "
                        "left to train and evaluate on; add interactions")
    return Dataset(catalogue, interactions, split)
