"""SASRec as a recommender (`mscg collab --model-out`): the next item's score is the inner product of the history's
last hidden state with each item's row of the item table, so every item is scored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mscg.artifacts.configcheck import check_config, check_weights
from mscg.artifacts.meta import check_item_ids
from mscg.artifacts.modeldir import load_weights
from mscg.data.batching import excluded_items, left_pad
from mscg.metrics import ranks_from_scores
from mscg.models.sasrec import PAD_ITEM, SASRec, SASRecConfig


class SASRecRecommender:
    kind = "sasrec"

    def __init__(self, model: SASRec, item_ids: list[str], device: torch.device, meta: dict):
        self.model = model.to(device).eval()
        self.item_ids = item_ids
        self.device = device
        self.meta = meta
        self.max_history = model.config.max_history

    @torch.no_grad()
    def scores(self, histories: Sequence[np.ndarray], *, exclude_history: bool = False,
               keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_items) scores of the next item; -inf for history items (but `keep`) when `exclude_history`."""
        longest = max((len(h) for h in histories), default=1)  # pad to the batch's longest history, not the window
        x = left_pad(histories, min(self.max_history, max(longest, 1)), pad=PAD_ITEM, offset=1).to(self.device)
        scores = self.model.score(x).float()  # (B, n_items)
        if exclude_history:
            scores = scores.masked_fill(excluded_items(histories, scores.shape[1], keep).to(self.device),
                                        float("-inf"))
        return scores

    @torch.no_grad()
    def top_k(self, histories: Sequence[np.ndarray], k: int, *, exclude_history: bool = False,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.scores(histories, exclude_history=exclude_history, keep=keep)
        k = min(k, scores.shape[1])
        # Stable sort: equal scores keep item-index order, as in ranks_from_scores.
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        top = scores.gather(1, order)
        if exclude_history:
            order = order.masked_fill(top == float("-inf"), -1)  # fewer unseen items than k
        return order.cpu(), top.cpu()

    @torch.no_grad()
    def rank(self, histories: Sequence[np.ndarray], targets: torch.Tensor, *, k: int = 10,
             exclude_history: bool = False) -> torch.Tensor:
        """Full ranking (`k` does not limit it); with `exclude_history` the target stays among the items."""
        scores = self.scores(histories, exclude_history=exclude_history, keep=targets)
        return ranks_from_scores(scores, targets.to(self.device)).cpu()

    def memory_bytes_per_item(self) -> float:
        table = self.model.item_table()
        return table.shape[1] * table.element_size()


def load_folder(path: Path, config: dict, meta: dict, device: torch.device, **_) -> SASRecRecommender:
    """A `mscg collab --model-out` folder (see recommenders.load)."""
    fields = {k: v for k, v in config.items() if k in SASRecConfig.__dataclass_fields__}
    sconfig = check_config(path, fields, SASRecConfig, "`mscg collab --model-out`")
    item_ids = check_item_ids(path, meta, sconfig.n_items)
    check_weights(path, lambda: SASRec(sconfig))
    return SASRecRecommender(load_weights(SASRec(sconfig), path), item_ids, device, meta)
