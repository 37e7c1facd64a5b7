"""Popularity breakdown of a leave-one-out evaluation (`mscg evaluate --by-popularity`).

Popularity of an item = how often it occurs in the training split (the part of each sequence before
the validation and test items). Users are grouped by the popularity of their target item into three
groups of (nearly) equal size — popular, middle, rare — and Recall@K / NDCG@K are reported per group.
For the top-K lists themselves: the mean popularity of the recommended items (average recommendation
popularity), the share of list slots that hold an item already in the user's history, and the share of
slots filled at all (a generator's beam, with history items left out, may hold fewer than K items).
The same three-way grouping by the popularity of the user's most recent history item (the input the next
item follows) shows whether a model falls short where that item is rare: an item seen in few training
sequences is an input the model knows little about, as a rare target is an output it knows little about.

A model that leans on popularity does well on popular targets and looks better on a split whose
targets are more popular; these numbers make that visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mscg.data.split import Split
from mscg.errors import DataError, UsageError
from mscg.metrics import means, metric_sums

GROUPS = ("popular", "middle", "rare")
COUNTS_KEY = "train_item_counts"  # in a model's meta.json: train_counts, in item order


def train_counts(split: Split, n_items: int) -> np.ndarray:
    """(n_items,) occurrences of each item in the training split."""
    train = [split.train_sequence(u) for u in range(len(split))]
    return np.bincount(np.concatenate(train) if train else np.zeros(0, np.int64), minlength=n_items)


def items_below(counts: np.ndarray, item_ids: list[str], n: int) -> list[str]:
    """The ids of the items whose training count (`train_counts`, in catalogue order) is below `n`."""
    return [item_id for item_id, c in zip(item_ids, counts) if c < n]


def recorded_train_counts(meta: dict, n_items: int, model) -> np.ndarray | None:
    """The training popularity a model's meta.json records (`train`, `collab --model-out`); None for a model
    trained before mscg recorded it."""
    counts = meta.get(COUNTS_KEY) if isinstance(meta, dict) else None
    if counts is None:
        return None
    if not isinstance(counts, list) or len(counts) != n_items or \
            not all(type(c) is int and 0 <= c < 1 << 62 for c in counts):
        raise DataError(f"{model}/meta.json: {COUNTS_KEY} must list one count >= 0 per item ({n_items:,}); "
                        "re-create the model with the stage that made it")
    return np.asarray(counts, dtype=np.int64)


def no_counts_error(asked_by: str, model) -> UsageError:
    """`asked_by` (an option) needs training popularity that the model's meta.json does not record."""
    return UsageError(f"{asked_by} needs the model's training popularity, but {model}/meta.json records none (a "
                      "model made by an older mscg); re-create it with `mscg train` or `mscg collab --model-out`")


def most_popular(counts: np.ndarray, k: int) -> np.ndarray:
    """The (up to) k items most often in training, ties in catalogue order."""
    return np.argsort(-np.asarray(counts), kind="stable")[:k]


class PopularityBreakdown:
    """Collects per-user ranks, targets and top-K lists batch by batch; `summary()` gives the breakdown."""

    def __init__(self, counts: np.ndarray, k: int):
        self.counts = counts
        self.k = k
        self.ranks: list[torch.Tensor] = []
        self.targets: list[np.ndarray] = []
        self.list_popularity: list[np.ndarray] = []  # per user: mean count of the top-K items
        self.in_history: list[np.ndarray] = []  # per user: top-K slots holding a history item
        self.filled: list[np.ndarray] = []  # per user: top-K slots holding an item (beams may run short)
        self.last_items: list[np.ndarray] = []  # per user: the most recent history item (-1: empty history)

    def add(self, ranks: torch.Tensor, targets: torch.Tensor, top: torch.Tensor,
            histories: Sequence[np.ndarray]) -> None:
        """ranks (B,), targets (B,), top (B, >=K) item indices best first (-1 = empty slot), histories: B arrays."""
        top = top[:, :self.k].numpy()
        valid = top >= 0  # (B, K)
        pop = np.where(valid, self.counts[np.clip(top, 0, None)], 0)  # (B, K)
        self.list_popularity.append(pop.sum(1) / np.maximum(valid.sum(1), 1))
        self.in_history.append(np.array([np.isin(row[ok], h).sum() for row, ok, h in zip(top, valid, histories)]))
        self.filled.append(valid.sum(1))
        self.last_items.append(np.array([h[-1] if len(h) else -1 for h in histories], dtype=np.int64))
        self.ranks.append(ranks.cpu())
        self.targets.append(targets.numpy())

    def summary(self, ks: tuple[int, ...]) -> dict:
        ranks = torch.cat(self.ranks)
        targets = np.concatenate(self.targets)
        target_counts = self.counts[targets]
        last = np.concatenate(self.last_items)
        last_counts = np.where(last >= 0, self.counts[np.clip(last, 0, None)], 0)  # an empty history counts 0
        filled = np.concatenate(self.filled).sum()
        return {
            "by_target_popularity": grouped(ranks, target_counts, ks, "target_train_count"),
            "by_last_item_popularity": grouped(ranks, last_counts, ks, "last_item_train_count"),
            "target_train_count_mean": round(float(target_counts.mean()), 3),
            f"recommended_train_count@{self.k}": round(float(np.concatenate(self.list_popularity).mean()), 3),
            f"history_share@{self.k}": round(float(np.concatenate(self.in_history).sum() / max(filled, 1)), 6),
            f"list_fill@{self.k}": round(float(filled / (len(targets) * self.k)), 6),  # < 1: beams ran short
        }


def popularity_groups(counts: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """counts (U,) one training count per user -> [(group, user indices)] for GROUPS: three (nearly) equal groups
    by count, most popular first."""
    order = np.argsort(-counts, kind="stable")  # stable: equal counts keep user order, so groups are deterministic
    return list(zip(GROUPS, np.array_split(order, len(GROUPS))))


def grouped(ranks: torch.Tensor, counts: np.ndarray, ks: tuple[int, ...], range_key: str) -> list[dict]:
    """ranks (U,), counts (U,) one training count per user -> the metrics of GROUPS, users split into three
    (nearly) equal groups by count, most popular first; `range_key` names each group's [min, max] count."""
    groups = []
    for name, members in popularity_groups(counts):
        if len(members) == 0:
            continue
        group = {"group": name, "users": int(len(members)),
                 range_key: [int(counts[members].min()), int(counts[members].max())]}
        group.update({m: round(v, 6) for m, v in means(metric_sums(ranks[members], ks)).items()})
        groups.append(group)
    return groups
