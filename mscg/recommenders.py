"""One interface over the trained models, used by `evaluate`, `recommend` and validation in training.

`load_recommender(path, device)` reads a model directory and returns a recommender with
`top_k(histories, k, exclude_history=..., keep=...)` -> (items (B, k) dense indices best first, -1 where
fewer exist; scores (B, k)) and `rank(histories, targets, k=..., exclude_history=...)` -> the 1-based rank
of each target. A recommender sizes its own search: asked for k items (k beyond the history's items when
they are excluded), a generator widens its beam as needed; SASRec scores every item.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mscg.artifacts.configcheck import check_config, check_weights
from mscg.artifacts.meta import check_item_ids
from mscg.artifacts.modeldir import load_weights, read_model_dir
from mscg.data.batching import left_pad, seen_items
from mscg.errors import DataError
from mscg.metrics import ranks_from_scores
from mscg.models.sasrec import PAD_ITEM, SASRec, SASRecConfig

MODEL_TYPES = ("sasrec", "mscg-generator", "fused")


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
        x = left_pad(histories, self.max_history, pad=PAD_ITEM, offset=1).to(self.device)
        scores = self.model.score(x).float()  # (B, n_items)
        if exclude_history:
            for row, seen in enumerate(seen_items(histories, keep)):
                scores[row, seen.to(self.device)] = float("-inf")
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


def load_recommender(path: Path, device: torch.device, *, beam_size: int | None = None, codes_path: Path | None = None,
                     verify: bool = True):
    """The recommender of a model directory. Its config is checked (types, ranges, and the tensor shapes of
    model.safetensors' header) before anything is built; `verify`: a generator's codes must have the digest
    its meta.json records."""
    config, meta = read_model_dir(path, "model", "MODEL", MODEL_TYPES)
    if config["model_type"] == "sasrec":
        fields = {k: v for k, v in config.items() if k in SASRecConfig.__dataclass_fields__}
        sconfig = check_config(path, fields, SASRecConfig, "`mscg collab --model-out`")
        item_ids = check_item_ids(path, meta, sconfig.n_items)
        check_weights(path, lambda: SASRec(sconfig))
        model = load_weights(SASRec(sconfig), path)
        return SASRecRecommender(model, item_ids, device, meta)
    if config["model_type"] == "fused":  # mscg fuse: a generator and a SASRec model, each in its own folder
        from mscg.fused import DenseHead, FusedRecommender, fused_parts

        weights, candidates, parts, kinds = fused_parts(path, config)
        loaded = []
        for part_path, kind in parts:
            part = load_recommender(part_path, device, beam_size=beam_size, verify=verify)
            if part.kind != kind:
                raise DataError(f"{part_path} holds a {part.kind} model where a {kind} one belongs; re-create "
                                f"{path} with `mscg fuse`")
            loaded.append(part)
        generator = loaded[0]
        dense = [loaded[1] if kind == "sasrec" else DenseHead(generator) for kind in kinds]
        return FusedRecommender(generator, dense, weights, candidates=candidates, meta=meta)
    from mscg.generator_recommender import load_generator_recommender

    return load_generator_recommender(path, config, meta, device, beam_size=beam_size, codes_path=codes_path,
                                      verify=verify)
