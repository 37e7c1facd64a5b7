"""Ranking users' held-out targets in batches: the one loop under `evaluate`, `fuse` and validation during
training.

Users are taken in order of history length (the longest first) so that a batch pads to its own longest history,
not to the model's window: Amazon histories average ~7 items in a 50-item window, and ranking them in id order
spent most of SASRec's forward pass, and of a generator's cross-attention, on padding. A batch's ranks do not
depend on which users share it (up to float order), so the metrics are those of id order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mscg.data.split import Split
from mscg.metrics import ranks_from_lists
from mscg.recommenders.defaults import EVAL_BATCH_SIZE



@dataclass
class UserBatch:
    users: list[int]
    histories: list[np.ndarray]  # what each user's `target` is predicted from
    targets: torch.Tensor  # (B,) item indices


@dataclass
class RankedBatch(UserBatch):
    ranks: torch.Tensor  # (B,) 1 = first; past the list when a list-limited recommender misses the target
    top: torch.Tensor | None  # (B, >=k) item indices best first (-1: empty slot), when asked for


def validation_users(n_users: int, valid_users: int, seed: int) -> np.ndarray:
    """The users validated after each epoch (and `fuse`'s): all of them, or a seeded sample of `valid_users`,
    sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_users)[:valid_users])


def by_history_length(split: Split, users: Sequence[int], target: str) -> list[int]:
    """`users`, the longest history (as the model sees it) first; equal lengths keep their order."""
    users = list(users)
    lengths = np.array([len(split.history(u, target)) for u in users], dtype=np.int64)
    return [users[i] for i in np.argsort(-lengths, kind="stable")]


def user_batches(split: Split, users: Sequence[int], target: str, batch_size: int = EVAL_BATCH_SIZE,
                 ) -> Iterator[UserBatch]:
    """Batches of `users` with their histories and `target` ("valid" or "test") items, by history length."""
    ordered = by_history_length(split, users, target)
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start:start + batch_size]
        yield UserBatch(chunk, [split.history(u, target) for u in chunk],
                        torch.tensor([split.target(u, target) for u in chunk], dtype=torch.long))


def ranked_batches(recommender, split: Split, users: Sequence[int], target: str, *, k: int = 10,
                   batch_size: int = EVAL_BATCH_SIZE, lists: bool = False, exclude_history: bool = False,
                   ) -> Iterator[RankedBatch]:
    """`user_batches` with each target's rank by `recommender`. `lists`: also the top-`k` lists (ranks are then
    read from them: the same Recall/NDCG@k); `exclude_history` leaves the history items (but the target) out
    of the lists, and so needs them."""
    for batch in user_batches(split, users, target, batch_size):
        top = None
        if lists or exclude_history:
            top, _ = recommender.top_k(batch.histories, k, exclude_history=exclude_history, keep=batch.targets)
            ranks = ranks_from_lists(top, batch.targets)
        else:
            ranks = recommender.rank(batch.histories, batch.targets, k=k)
        yield RankedBatch(batch.users, batch.histories, batch.targets, ranks, top)
