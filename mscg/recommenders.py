"""A uniform interface over the trained models that `evaluate` and `recommend` use.

`load_recommender(path)` reads the model directory's config and returns an object with
`top_k(histories, k)` -> (items (B, k) dense indices, -1 when fewer exist; scores (B, k)), and
`rank(histories, targets)` -> the 1-based rank of each target (full ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mscg.artifacts.modeldir import load_weights, read_model_dir
from mscg.data.batching import left_pad
from mscg.metrics import ranks_from_lists, ranks_from_scores
from mscg.models.sasrec import PAD_ITEM, SASRec, SASRecConfig

MODEL_TYPES = ("sasrec", "mscg-generator")


class SASRecRecommender:
    kind = "sasrec"

    def __init__(self, model: SASRec, item_ids: list[str], device: torch.device, meta: dict):
        self.model = model.to(device).eval()
        self.item_ids = item_ids
        self.device = device
        self.meta = meta
        self.max_history = model.config.max_history

    @torch.no_grad()
    def scores(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        x = left_pad(histories, self.max_history, pad=PAD_ITEM, offset=1).to(self.device)
        return self.model.score(x).float()  # (B, n_items)

    @torch.no_grad()
    def top_k(self, histories: Sequence[np.ndarray], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.scores(histories)
        k = min(k, scores.shape[1])
        # Stable sort: equal scores keep item-index order, as in ranks_from_scores.
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        return order.cpu(), scores.gather(1, order).cpu()

    @torch.no_grad()
    def rank(self, histories: Sequence[np.ndarray], targets: torch.Tensor) -> torch.Tensor:
        return ranks_from_scores(self.scores(histories), targets.to(self.device)).cpu()

    def memory_bytes_per_item(self) -> float:
        table = self.model.item_table()
        return table.shape[1] * table.element_size()


def load_recommender(path: Path, device: torch.device, *, beam_size: int | None = None, codes_path: Path | None = None):
    config, meta = read_model_dir(path, "model", "MODEL", MODEL_TYPES)
    if config["model_type"] == "sasrec":
        fields = {k: v for k, v in config.items() if k in SASRecConfig.__dataclass_fields__}
        model = load_weights(SASRec(SASRecConfig(**fields)), path)
        return SASRecRecommender(model, meta["item_ids"], device, meta)
    from mscg.generator_recommender import load_generator_recommender

    return load_generator_recommender(path, config, meta, device, beam_size=beam_size, codes_path=codes_path)


def rank_with_lists(recommender, histories, targets, k: int) -> torch.Tensor:
    items, _ = recommender.top_k(histories, k)
    return ranks_from_lists(items, targets)
