"""Residual k-means (`rq-kmeans`): k-means on the vectors, then on the residuals, level by level.

No training loop: the codebooks are the k-means centres (`mscg.training.rq_kmeans.fit_rq_kmeans`).
Vectors are L2-normalised first by default (cosine geometry, so that text, image and collaborative
tables are on one scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mscg.models.config import JsonConfig
from mscg.models.residual_quantizer import ResidualQuantizer


@dataclass
class RQKMeansConfig(JsonConfig):
    dim: int
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    normalize: bool = True
    balanced_last_level: bool = False  # the last level by a balanced (Sinkhorn) assignment over the items coded
    modality: str = "text"
    model_type: str = "rq-kmeans"


class RQKMeans(nn.Module):
    def __init__(self, config: RQKMeansConfig):
        super().__init__()
        self.config = config
        self.rq = ResidualQuantizer(dim=config.dim, codebook_sizes=config.codebook_sizes)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.config.normalize else x

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, dim) -> (N, L) codes."""
        return self.rq.encode(self.prepare(x), balance_last=self.config.balanced_last_level)

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor) -> float:
        """Mean squared error between the (normalised) vectors and their quantized reconstruction."""
        target = self.prepare(x)
        return float((target - self.rq.decode(self.encode(x))).pow(2).sum(1).mean())
