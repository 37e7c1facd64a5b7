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

    Returns (the model, an empty training summary), as a fit like the trained quantizers'.
    """
    yield from ()  # no events: k-means has no training loop
    model = RQKMeans(config)
    model.rq.init_kmeans(model.prepare(vectors), seed=seed)
    return model, {}
