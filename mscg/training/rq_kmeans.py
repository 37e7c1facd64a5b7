"""Fitting residual k-means (`mscg quantize --method rq-kmeans`): no loop, the codebooks are the centres."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch

from mscg.models.rq_kmeans import RQKMeans, RQKMeansConfig
from mscg.training.loop import Event


def fit_rq_kmeans(config: RQKMeansConfig, training: None, vectors: torch.Tensor, item_ids: list[str], *,
                  seed: int = 0, device: torch.device | None = None, checkpoint_dir: Path | None = None,
                  resume: bool = False, source: str = "") -> Generator[Event, None, tuple[RQKMeans, dict[str, Any]]]:
    """k-means on the (normalised) vectors (N, dim), then on the residuals, level by level, on the CPU.

    The signature is every embedding quantizer's (`mscg.quantizers`); k-means has no training options,
    no device placement and nothing to resume.

    Returns (the model, a training summary: per level the mean squared residual left after that level's
    nearest centre, i.e. k-means' inertia per vector), as a fit like the trained quantizers'.
    """
    yield from ()  # no events: k-means has no training loop
    model = RQKMeans(config)
    z = model.prepare(vectors)
    model.rq.init_kmeans(z, seed=seed)
    return model, {"levels": level_records(model, z)}


@torch.no_grad()
def level_records(model: RQKMeans, z: torch.Tensor) -> list[dict[str, Any]]:
    """[{"level": 1.., "mean_squared_residual": ...}]: what each level leaves of the vectors z (N, D)."""
    residual = z.detach().float().cpu()
    records = []
    for level, codebook in enumerate(model.rq.codebooks):
        centres = codebook.detach().float().cpu()
        residual = residual - centres[model.rq.nearest(residual, centres)]
        records.append({"level": level + 1,
                        "mean_squared_residual": float(f"{float(residual.pow(2).sum(1).mean()):.6g}")})
    return records
