"""Ranking metrics for leave-one-out evaluation (one relevant item per user).

Recall@K = 1 if the target is among the top K; NDCG@K = 1 / log2(rank + 1) if rank <= K. Ranks are
1-based; equal scores are ordered by item index (deterministic), the same order `recommend` prints.
"""

from __future__ import annotations

import math

import torch

DEFAULT_KS = (5, 10)


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores: (B, N), targets: (B,) item indices -> (B,) 1-based ranks of the targets.

    A NaN score is the worst score: a target scored NaN ranks last (N), and a NaN item is never ahead of one
    (every comparison with NaN is false, so without this a NaN target would rank first)."""
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    index = torch.arange(scores.shape[1], device=scores.device)[None]
    ahead = (scores > target_scores) | ((scores == target_scores) & (index < targets[:, None]))
    ranks = ahead.sum(dim=1) + 1
    return torch.where(target_scores.squeeze(1).isnan(), torch.full_like(ranks, scores.shape[1]), ranks)


def ranks_from_lists(ranked: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ranked: (B, K) item indices best first (-1 = empty), targets: (B,) -> ranks; K+1 = not found."""
    hits = ranked == targets[:, None]  # (B, K)
    found = hits.any(dim=1)
    first = hits.float().argmax(dim=1) + 1
    return torch.where(found, first, torch.full_like(first, ranked.shape[1] + 1))


def metric_sums(ranks: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    """Sums over users (divide by "count" for means) of Recall@K and NDCG@K."""
    ranks = ranks.double()
    sums = {"count": float(len(ranks))}
    for k in ks:
        hit = ranks <= k
        sums[f"recall@{k}"] = float(hit.sum())
        sums[f"ndcg@{k}"] = float((hit.double() / torch.log2(ranks + 1)).sum())
    return sums


def add_sums(total: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    for key, value in part.items():
        total[key] = total.get(key, 0.0) + value
    return total


def means(sums: dict[str, float]) -> dict[str, float]:
    count = sums.get("count", 0.0)
    return {k: (v / count if count else math.nan) for k, v in sums.items() if k != "count"}
