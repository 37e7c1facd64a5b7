"""Validation during training: metric sums of a recommender on the validation targets of some users."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mscg.data.split import Split
from mscg.metrics import add_sums, metric_sums


def validation_sums(recommender, split: Split, users: Sequence[int], batch_size: int = 512) -> dict[str, float]:
    """Sums of Recall/NDCG@5,10 (and "count") over `users`' validation targets; the loop adds them over
    ranks and divides."""
    total: dict[str, float] = {}
    users = list(users)
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        histories = [split.history(u, "valid") for u in chunk]
        targets = torch.tensor([split.target(u, "valid") for u in chunk])
        add_sums(total, metric_sums(recommender.rank(histories, targets)))
    return total
