"""Validation during training: metric sums of a recommender on the validation targets of some users, also
per third of target popularity, so that a model's training history shows when its rare targets learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mscg.data.split import Split
from mscg.evaluation import ranked_batches
from mscg.metrics import add_sums, metric_sums
from mscg.popularity import GROUPS, train_counts

PER_THIRD = ("recall@10", "ndcg@10")  # recorded per popularity third as "ndcg@10/rare", ...


def popularity_thirds(split: Split, users: Sequence[int], n_items: int, target: str = "valid") -> dict[int, str]:
    """user -> the third (popular, middle, rare) its `target` ("valid" or "test") item falls in by training
    popularity; users split into three groups of (nearly) equal size, as `evaluate --by-popularity` groups them."""
    users = np.asarray(list(users), dtype=np.int64)
    target_counts = train_counts(split, n_items)[[split.target(int(u), target) for u in users]]
    order = np.argsort(-target_counts, kind="stable")  # equal counts keep user order: deterministic
    return {int(users[i]): name for name, members in zip(GROUPS, np.array_split(order, len(GROUPS)))
            for i in members}


def validation_sums(recommender, split: Split, users: Sequence[int], batch_size: int = 512,
                    thirds: dict[int, str] | None = None) -> dict[str, float]:
    """Sums of Recall/NDCG@5,10 (and "count") over `users`' validation targets; with `thirds`, also the sums
    of PER_THIRD and "count" of each popularity third ("ndcg@10/rare", "count/rare", ...). The loop adds
    them over ranks and divides each by its count."""
    total: dict[str, float] = {}
    for batch in ranked_batches(recommender, split, users, "valid", batch_size=batch_size):
        add_sums(total, metric_sums(batch.ranks))
        if thirds is not None:
            for name in GROUPS:
                members = [i for i, u in enumerate(batch.users) if thirds[int(u)] == name]
                if members:
                    part = metric_sums(batch.ranks[members])
                    add_sums(total, {f"{k}/{name}": part[k] for k in (*PER_THIRD, "count")})
    return total
