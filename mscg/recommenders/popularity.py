"""Popularity as a recommender: the items most often in training, the same ranking for every history. It answers
a history with no known item (`fallback="popular"` in the API, `recommend` and `serve`) and is the floor a trained
model should beat (benchmarks report it beside the models)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mscg.data.batching import excluded_items
from mscg.metrics import ranks_from_scores
from mscg.popularity import most_popular, no_counts_error, recorded_train_counts


class PopularityRecommender:
    kind = "popularity"

    def __init__(self, counts: np.ndarray, item_ids: list[str], meta: dict | None = None):
        """counts: (n_items,) each item's training count (`mscg.popularity.train_counts`), in catalogue order."""
        self.counts = np.asarray(counts, dtype=np.int64)
        self.item_ids = item_ids
        self.meta = meta or {}
        self.scores_row = torch.from_numpy(self.counts.astype(np.float64))  # (n_items,)

    @classmethod
    def of_model(cls, recommender, model, asked_by: str) -> PopularityRecommender:
        """The training popularity a loaded model's meta.json records; `asked_by` (an option) and `model` (its
        folder) name them in the error for a model that records none."""
        counts = recorded_train_counts(recommender.meta, len(recommender.item_ids), model)
        if counts is None:
            raise no_counts_error(asked_by, model)
        return cls(counts, recommender.item_ids, recommender.meta)

    def most_popular(self, k: int) -> list[tuple[int, float]]:
        """(item index, training count) of the k most popular items, ties in catalogue order."""
        return [(int(i), float(self.counts[i])) for i in most_popular(self.counts, k)]

    def top_k(self, histories: Sequence[np.ndarray], k: int, *, exclude_history: bool = False,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.scores_row.expand(len(histories), -1)  # (B, n_items)
        if exclude_history:
            scores = scores.masked_fill(excluded_items(histories, len(self.counts), keep), float("-inf"))
        k = min(k, scores.shape[1])
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]  # ties: catalogue order
        top = scores.gather(1, order)
        return order.masked_fill(top == float("-inf"), -1), top

    def rank(self, histories: Sequence[np.ndarray], targets: torch.Tensor, *, k: int = 10,
             exclude_history: bool = False) -> torch.Tensor:
        scores = self.scores_row.expand(len(histories), -1)
        if exclude_history:
            scores = scores.masked_fill(excluded_items(histories, len(self.counts), targets), float("-inf"))
        return ranks_from_scores(scores, targets)

    def memory_bytes_per_item(self) -> float:
        return float(self.counts.itemsize)
