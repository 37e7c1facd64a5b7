"""The fused ranking (beyond the paper): a generator's beam and a dense scorer's best items, re-ranked together.

Both scores are log-probabilities of the next item: the generator's beam score is the log-probability of the
item's code sequence (one item per code under the trie), the dense scorer's (SASRec) is the log-softmax of its
scores over the catalogue. A candidate from the union of the generator's beam and the dense top-C gets

    weight * generator + (1 - weight) * dense

where an item outside the beam takes the beam's lowest score (its true log-probability is at most about that).
Weight 1 ranks as the generator, weight 0 as the dense scorer; `mscg fuse` chooses it on validation.

    FUSED/config.json   {"model_type": "fused", "weight", "candidates"}
    FUSED/meta.json     the validation of every weight tried, the item ids, provenance
    FUSED/generator/    a copy of the generator's model directory (with its codes)
    FUSED/dense/        a copy of the SASRec model directory
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mscg.data.batching import seen_items
from mscg.errors import DataError
from mscg.metrics import ranks_from_lists

GENERATOR_DIR, DENSE_DIR = "generator", "dense"
WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # tried on validation by `mscg fuse`


def fused_scores(generator: torch.Tensor, dense: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * generator + (1 - weight) * dense, a side with weight 0 left out (so its -inf does not enter)."""
    if weight <= 0:
        return dense.clone()
    if weight >= 1:
        return generator.clone()
    return weight * generator + (1 - weight) * dense


class FusedRecommender:
    kind = "fused"

    def __init__(self, generator, dense, weight: float, candidates: int, meta: dict | None = None):
        if generator.item_ids != dense.item_ids:
            raise DataError("the generator and the dense model of a fused model were trained on other catalogues; "
                            "fuse models of the same data")
        self.generator, self.dense = generator, dense
        self.weight, self.n_candidates = float(weight), int(candidates)
        self.item_ids = generator.item_ids
        self.device = generator.device
        self.beam_size = generator.beam_size
        self.meta = meta or {}

    @torch.no_grad()
    def candidates(self, histories: Sequence[np.ndarray], k: int, *, exclude_history: bool = False,
                   keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(items (B, M), generator scores (B, M), dense scores (B, M)) of the union of the beam (at least k) and
        the dense top max(C, k), beam first; -1 / -inf where a row has fewer."""
        beam_items, beam_scores = self.generator.top_k(histories, max(self.generator.beam_size, k),
                                                       exclude_history=exclude_history, keep=keep)
        dense_all = torch.log_softmax(self.dense.scores(histories), dim=1).cpu()  # (B, N) over the catalogue
        if exclude_history:
            for row, seen in enumerate(seen_items(histories, keep)):
                dense_all[row, seen] = float("-inf")
        c = min(max(self.n_candidates, k), dense_all.shape[1])
        dense_top = torch.sort(dense_all, dim=1, descending=True, stable=True).indices[:, :c]
        dense_top = dense_top.masked_fill(dense_all.gather(1, dense_top) == float("-inf"), -1)
        in_beam = (dense_top[:, :, None] == beam_items[:, None, :]).any(dim=2)
        items = torch.cat([beam_items, dense_top.masked_fill(in_beam, -1)], dim=1)
        valid = items >= 0
        finite = torch.where(torch.isfinite(beam_scores), beam_scores, torch.full_like(beam_scores, float("inf")))
        floor = finite.min(dim=1, keepdim=True).values  # the beam's lowest score (inf: an empty beam)
        floor = torch.where(torch.isfinite(floor), floor, torch.full_like(floor, float("-inf")))
        generator = torch.cat([beam_scores, floor.expand(-1, dense_top.shape[1])], dim=1)
        dense = dense_all.gather(1, items.clamp(min=0))
        minus_inf = torch.full_like(dense, float("-inf"))
        return items, torch.where(valid, generator, minus_inf), torch.where(valid, dense, minus_inf)

    @staticmethod
    def order(items: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best candidates by `scores` (stable: ties keep the beam-first order); -1 where fewer exist."""
        best = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        top_scores = scores.gather(1, best)
        top_items = items.gather(1, best).masked_fill(top_scores == float("-inf"), -1)
        if top_items.shape[1] < k:
            pad = k - top_items.shape[1]
            top_items = torch.nn.functional.pad(top_items, (0, pad), value=-1)
            top_scores = torch.nn.functional.pad(top_scores, (0, pad), value=float("-inf"))
        return top_items, top_scores

    @torch.no_grad()
    def top_k(self, histories: Sequence[np.ndarray], k: int, *, exclude_history: bool = False,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        items, generator, dense = self.candidates(histories, k, exclude_history=exclude_history, keep=keep)
        return self.order(items, fused_scores(generator, dense, self.weight), k)

    @torch.no_grad()
    def rank(self, histories: Sequence[np.ndarray], targets: torch.Tensor, *, k: int = 10,
             exclude_history: bool = False) -> torch.Tensor:
        """Ranks within the fused candidates (at least `k` deep); targets outside them rank past the list."""
        items, _ = self.top_k(histories, max(self.beam_size, k), exclude_history=exclude_history, keep=targets)
        return ranks_from_lists(items, targets)

    def memory_bytes_per_item(self) -> float:
        return self.generator.memory_bytes_per_item() + self.dense.memory_bytes_per_item()


def fused_parts(path: Path, config: dict) -> tuple[float, int, list[tuple[Path, str]]]:
    """(weight, candidates, [(part directory, the model kind it must hold)]) of a fused model's config."""
    weight, candidates = config.get("weight"), config.get("candidates")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1:
        raise DataError(f"{path}/config.json: weight must be a number from 0 to 1; re-create it with `mscg fuse`")
    if type(candidates) is not int or candidates < 1:
        raise DataError(f"{path}/config.json: candidates must be an integer >= 1; re-create it with `mscg fuse`")
    return float(weight), candidates, [(Path(path) / GENERATOR_DIR, "mscg-generator"), (Path(path) / DENSE_DIR,
                                                                                         "sasrec")]
