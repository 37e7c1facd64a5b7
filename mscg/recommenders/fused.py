"""The fused ranking (beyond the paper): a generator's beam and dense scorers' best items, re-ranked together.

Every score is a log-probability of the next item: the generator's beam score is the log-probability of the
item's code sequence (one item per code under the trie), a dense scorer's is the log-softmax of its scores over
the catalogue. A dense scorer is a SASRec model and/or the generator's own dense head (`train --dense-content`,
LIGER-style: it scores items by their content, so items training never met can enter the candidates). A
candidate from the union of the generator's beam and each dense scorer's top-C gets

    w_generator * generator + w_1 * dense_1 (+ w_2 * dense_2), the weights summing to 1,

where an item outside the beam takes the beam's lowest score (its true log-probability is at most about that).
NOTE: an item without training interactions (new, withheld) is a guess for the generator and SASRec, which never
met it, but not for the dense head, which scores content: when the head is a part, the other parts abstain on such
items, whose score is then the head's (the weights renormalised over the parts that score the item). Without a
head nothing abstains. `mscg fuse` chooses the weights on validation with such items left out of the candidates:
the weights are about how the parts rank the items they all know (a validation split has next to no targets
without training interactions, so it would only ever learn to keep new items out).
With one dense scorer the weights are (weight, 1 - weight): weight 1 ranks as the generator, 0 as the dense
scorer. `mscg fuse` chooses them on validation.

    FUSED/config.json   {"model_type": "fused", "candidates", "dense": "sasrec" | "head" | ["sasrec", "head"],
                         "weight" (one dense scorer) or "weights" (one per part, the generator's first)}
    FUSED/meta.json     the validation of every weighting tried, the item ids, provenance
    FUSED/generator/    a copy of the generator's model directory (with its codes)
    FUSED/dense/        a copy of the SASRec model directory (none without a SASRec scorer)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mscg.data.batching import excluded_items
from mscg.errors import DataError
from mscg.metrics import ranks_from_lists
from mscg.popularity import recorded_train_counts
from mscg.recommenders.dense_head import DenseHead

GENERATOR_DIR, DENSE_DIR = "generator", "dense"
WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # the generator's weights tried with one dense scorer
DENSE_KINDS = ("sasrec", "head")  # a fused model's dense scorer: a SASRec model dir, or the generator's dense head


def weight_grid(n_parts: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every weighting of `n_parts` parts on a grid of `step`, the weights summing to 1, the first part's
    rising slowest: for two parts (0, 1), (0.1, 0.9), ..., (1, 0)."""
    n = round(1 / step)

    def splits(parts: int, left: int) -> list[tuple[int, ...]]:
        if parts == 1:
            return [(left,)]
        return [(k, *rest) for k in range(left + 1) for rest in splits(parts - 1, left - k)]

    return [tuple(round(k * step, 10) for k in split) for split in splits(n_parts, n)]


def fused_scores(scores: Sequence[torch.Tensor], weights: Sequence[float],
                 abstain: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """sum of weight * score over the parts, a part with weight 0 left out (so its -inf does not enter).

    abstain: per part, None or (B, M) bool where that part does not score the candidate; there the weights of the
    others are renormalised (where every weighted part abstains, none does)."""
    used = [(w, x, None if abstain is None else abstain[n]) for n, (w, x) in enumerate(zip(weights, scores))
            if w > 0]
    if all(a is None for _, _, a in used):
        return used[0][1].clone() if len(used) == 1 else sum(w * x for w, x, _ in used)
    shape = used[0][1].shape
    share = [torch.full(shape, w) if a is None else torch.where(a, 0.0, w) for w, _, a in used]  # (B, M) each
    total = sum(share)
    nobody = total == 0
    share = [torch.where(nobody, w, x) for (w, _, _), x in zip(used, share)]
    total = torch.where(nobody, sum(w for w, _, _ in used), total)
    fused = sum(torch.where(x > 0, x * s, 0.0) for x, (_, s, _) in zip(share, used))  # an abstaining -inf is 0
    return fused / total


class FusedRecommender:
    kind = "fused"

    def __init__(self, generator, dense, weight: float | Sequence[float], candidates: int, meta: dict | None = None):
        """`dense`: one dense scorer or a list of them; `weight`: the generator's weight with one dense scorer, or
        one weight per part (the generator's first) summing to 1."""
        self.dense = list(dense) if isinstance(dense, (list, tuple)) else [dense]
        for part in self.dense:
            if generator.item_ids != part.item_ids:
                raise DataError("the generator and a dense model of a fused model were trained on other catalogues; "
                                "fuse models of the same data")
        weights = [float(weight), 1 - float(weight)] if isinstance(weight, (int, float)) else list(map(float, weight))
        if len(weights) != len(self.dense) + 1:
            raise ValueError("one weight per part: the generator's, then each dense scorer's")
        self.generator, self.weights, self.n_candidates = generator, weights, int(candidates)
        self.item_ids = generator.item_ids
        self.untrained = None  # (N,) bool: items without training interactions, on which all but the head abstain
        if any(isinstance(part, DenseHead) for part in self.dense):
            counts = recorded_train_counts(generator.meta, len(self.item_ids), "the generator")
            self.untrained = None if counts is None else torch.from_numpy(counts == 0)
        self.device = generator.device
        self.beam_size = generator.beam_size
        self.meta = meta or {}

    @torch.no_grad()
    def candidates(self, histories: Sequence[np.ndarray], k: int, *, exclude_history: bool = False,
                   keep: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(items (B, M), [scores (B, M) of each part, the generator's first]) of the union of the beam (at least k)
        and each dense scorer's top max(C, k), beam first; -1 / -inf where a row has fewer."""
        beam_items, beam_scores = self.generator.top_k(histories, self.generator.beam_for(k),
                                                       exclude_history=exclude_history, keep=keep)
        excluded = excluded_items(histories, len(self.item_ids), keep) if exclude_history else None
        items, dense_all = beam_items, []
        for part in self.dense:
            scores = torch.log_softmax(part.scores(histories), dim=1).cpu()  # (B, N) over the catalogue
            if excluded is not None:
                scores = scores.masked_fill(excluded, float("-inf"))
            c = min(max(self.n_candidates, k), scores.shape[1])
            top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :c]
            top = top.masked_fill(scores.gather(1, top) == float("-inf"), -1)
            known = (top[:, :, None] == items[:, None, :]).any(dim=2)
            items = torch.cat([items, top.masked_fill(known, -1)], dim=1)
            dense_all.append(scores)
        valid = items >= 0
        finite = torch.where(torch.isfinite(beam_scores), beam_scores, torch.full_like(beam_scores, float("inf")))
        floor = finite.min(dim=1, keepdim=True).values  # the beam's lowest score (inf: an empty beam)
        floor = torch.where(torch.isfinite(floor), floor, torch.full_like(floor, float("-inf")))
        generator = torch.cat([beam_scores, floor.expand(-1, items.shape[1] - beam_items.shape[1])], dim=1)
        minus_inf = torch.full(items.shape, float("-inf"))
        parts = [generator] + [scores.gather(1, items.clamp(min=0)) for scores in dense_all]
        return items, [torch.where(valid, x, minus_inf) for x in parts]

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
        items, parts = self.candidates(histories, k, exclude_history=exclude_history, keep=keep)
        return self.order(items, self.combine(items, parts, self.weights), k)

    def combine(self, items: torch.Tensor, parts: list[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
        """The fused scores (B, M) of `candidates`' items and part scores under `weights` (see the NOTE)."""
        if self.untrained is None:
            return fused_scores(parts, weights)
        unknown = self.untrained[items.clamp(min=0)] & (items >= 0)  # (B, M)
        abstain = [unknown] + [None if isinstance(part, DenseHead) else unknown for part in self.dense]
        return fused_scores(parts, weights, abstain)

    @torch.no_grad()
    def rank(self, histories: Sequence[np.ndarray], targets: torch.Tensor, *, k: int = 10,
             exclude_history: bool = False) -> torch.Tensor:
        """Ranks within the fused candidates (at least `k` deep); targets outside them rank past the list."""
        items, _ = self.top_k(histories, self.generator.beam_for(k), exclude_history=exclude_history, keep=targets)
        return ranks_from_lists(items, targets)

    def memory_bytes_per_item(self) -> float:
        return self.generator.memory_bytes_per_item() + sum(d.memory_bytes_per_item() for d in self.dense)


def fused_parts(path: Path, config: dict) -> tuple[list[float], int, list[tuple[Path, str]], list[str]]:
    """(weights, candidates, [(part directory, the model kind it must hold)], the dense scorers' kinds) of a fused
    model's config: the generator's directory, then the SASRec model's when a dense scorer is "sasrec"."""
    candidates = config.get("candidates")
    dense = config.get("dense", "sasrec")
    kinds = [dense] if isinstance(dense, str) else dense
    if not isinstance(kinds, list) or not kinds or any(k not in DENSE_KINDS for k in kinds) or \
            len(set(kinds)) != len(kinds):
        raise DataError(f"{path}/config.json: dense must be one of {', '.join(DENSE_KINDS)} or a list of them; "
                        "re-create it with `mscg fuse`")
    if "weights" in config:
        weights = config["weights"]
        if not isinstance(weights, list) or len(weights) != len(kinds) + 1 or \
                any(not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 <= w <= 1 for w in weights) or \
                abs(sum(weights) - 1) > 1e-6:
            raise DataError(f"{path}/config.json: weights must be {len(kinds) + 1} numbers from 0 to 1 summing to 1; "
                            "re-create it with `mscg fuse`")
    else:
        weight = config.get("weight")
        if len(kinds) != 1 or not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1:
            raise DataError(f"{path}/config.json: weight must be a number from 0 to 1; re-create it with `mscg fuse`")
        weights = [weight, 1 - weight]
    if type(candidates) is not int or candidates < 1:
        raise DataError(f"{path}/config.json: candidates must be an integer >= 1; re-create it with `mscg fuse`")
    parts = [(Path(path) / GENERATOR_DIR, "mscg-generator")]
    if "sasrec" in kinds:
        parts.append((Path(path) / DENSE_DIR, "sasrec"))
    return [float(w) for w in weights], candidates, parts, kinds


def load_folder(path: Path, config: dict, meta: dict, device: torch.device, *, beam_size: int | None = None,
                codes_path: Path | None = None, verify: bool = True) -> FusedRecommender:
    """A `mscg fuse` folder (see recommenders.load): its parts, each a model folder inside it, loaded as such."""
    from mscg.recommenders import load

    weights, candidates, parts, kinds = fused_parts(path, config)
    loaded = []
    for part_path, kind in parts:
        part = load(part_path, device, beam_size=beam_size, verify=verify)
        if part.kind != kind:
            raise DataError(f"{part_path} holds a {part.kind} model where a {kind} one belongs; re-create {path} "
                            "with `mscg fuse`")
        loaded.append(part)
    generator = loaded[0]
    dense = [loaded[1] if kind == "sasrec" else DenseHead(generator) for kind in kinds]
    return FusedRecommender(generator, dense, weights, candidates=candidates, meta=meta)
