"""Residual vector quantization: a stack of codebooks, each quantizing what the previous left over.

    z ─VQ₁→ c₁, r₁ = z - e(c₁) ─VQ₂→ c₂, r₂ = r₁ - e(c₂) ─ ... ;  ẑ = Σ e(cₗ)

`forward` returns (quantized, indices, losses) with a straight-through gradient and the VQ-VAE
codebook + commitment terms, so RQ-VAE and RQ-DINO train it inside a network; `encode`/`decode`
map vectors to codes and back. Codebooks are initialised by residual k-means on a first batch,
and codewords left unused are restarted from random residuals (dead-code handling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResidualQuantizer(nn.Module):
    def __init__(self, *, dim: int, codebook_sizes: list[int], commitment: float = 0.25):
        super().__init__()
        self.dim = dim
        self.codebook_sizes = list(codebook_sizes)
        self.commitment = commitment
        self.codebooks = nn.ParameterList(nn.Parameter(torch.randn(k, dim) * 0.01) for k in self.codebook_sizes)
        # Exponential moving count of how often each codeword is chosen in training (dead-code restarts).
        for level, k in enumerate(self.codebook_sizes):
            self.register_buffer(f"usage_{level}", torch.ones(k), persistent=False)

    @property
    def n_levels(self) -> int:
        return len(self.codebook_sizes)

    @staticmethod
    def nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """(N, D), (K, D) -> (N,) index of the nearest codeword (squared Euclidean; ties -> lowest index)."""
        distances = (x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.T + codebook.pow(2).sum(1)[None])  # (N, K)
        return distances.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """z: (N, D) -> quantized (N, D) with straight-through gradient, indices (N, L), losses."""
        residual = z
        quantized = torch.zeros_like(z)
        indices = []
        codebook_loss = z.new_zeros(())
        commit_loss = z.new_zeros(())
        for level, codebook in enumerate(self.codebooks):
            idx = self.nearest(residual.detach(), codebook.detach())
            chosen = codebook[idx]  # (N, D)
            codebook_loss = codebook_loss + F.mse_loss(chosen, residual.detach())
            commit_loss = commit_loss + F.mse_loss(residual, chosen.detach())
            quantized = quantized + chosen
            residual = residual - chosen.detach()
            indices.append(idx)
            if self.training:
                with torch.no_grad():
                    counts = torch.bincount(idx, minlength=codebook.shape[0]).to(z.dtype)
                    getattr(self, f"usage_{level}").mul_(0.99).add_(counts, alpha=0.01)
        straight_through = z + (quantized - z).detach()
        losses = {"codebook": codebook_loss, "commitment": self.commitment * commit_loss}
        return straight_through, torch.stack(indices, dim=1), losses

    @torch.no_grad()
    def encode(self, z: torch.Tensor, *, balance_last: bool = False) -> torch.Tensor:
        """(N, D) -> (N, L) codes. `balance_last`: the last level by a balanced assignment over these N
        vectors (`balanced_assignment`) instead of the nearest codeword."""
        residual = z
        indices = []
        for level, codebook in enumerate(self.codebooks):
            last = level == len(self.codebooks) - 1
            idx = balanced_assignment(residual, codebook) if balance_last and last else self.nearest(residual, codebook)
            residual = residual - codebook[idx]
            indices.append(idx)
        return torch.stack(indices, dim=1)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, L) codes -> (N, D) sum of the chosen codewords (the inverse of `encode`, up to quantization)."""
        out = torch.zeros(indices.shape[0], self.dim, dtype=self.codebooks[0].dtype, device=indices.device)
        for level, codebook in enumerate(self.codebooks):
            out += codebook[indices[:, level]]
        return out

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, *, seed: int) -> None:
        """Residual k-means initialisation of every level from the vectors `z` (N, D)."""
        residual = z.detach().float().cpu()
        for level, k in enumerate(self.codebook_sizes):
            centres = kmeans(residual, k, seed=seed + level)
            self.codebooks[level].data.copy_(centres.to(self.codebooks[level]))
            residual = residual - centres[self.nearest(residual, centres)]

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, *, threshold: float = 0.03, generator=None) -> int:
        """Move codewords chosen less than `threshold` times per batch (EMA) onto random residuals of `z`."""
        restarted = 0
        residual = z.detach()
        for level, codebook in enumerate(self.codebooks):
            usage = getattr(self, f"usage_{level}")
            dead = (usage < threshold).nonzero().flatten()
            idx = self.nearest(residual, codebook)
            if len(dead):
                pick = torch.randint(0, residual.shape[0], (len(dead),), generator=generator).to(residual.device)
                codebook.data[dead] = residual[pick].to(codebook.dtype)
                usage[dead] = 1.0
                restarted += len(dead)
            residual = residual - codebook[idx]
        return restarted


def balanced_assignment(x: torch.Tensor, codebook: torch.Tensor, *, epsilon: float = 0.003,
                        iterations: int = 50) -> torch.Tensor:
    """(N, D), (K, D) -> (N,) codewords chosen so that each is used about N/K times: Sinkhorn-Knopp on the
    standardised squared distances (entropic optimal transport to uniform codeword marginals), then the
    most likely codeword per vector, as MQL4GRec and LETTER assign their last level (epsilon 0.003).

    NOTE: a property of the whole set: encoding one vector alone gives its nearest codeword.
    """
    distances = (x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.T + codebook.pow(2).sum(1)[None]).double()
    distances = (distances - distances.mean()) / distances.std().clamp_min(1e-12)  # (N, K), scale-free
    log_q = -distances / epsilon
    n, k = log_q.shape
    for _ in range(iterations):  # in the log domain: exp(-d / 0.003) overflows
        log_q = log_q - log_q.logsumexp(dim=0, keepdim=True) - math.log(k)  # every codeword gets 1/K
        log_q = log_q - log_q.logsumexp(dim=1, keepdim=True) - math.log(n)  # every vector gives 1/N
    return log_q.argmax(dim=1)


def kmeans(x: torch.Tensor, k: int, *, seed: int, max_points: int = 200_000) -> torch.Tensor:
    """k-means centres (k, D) with scikit-learn (k-means++, seeded); fitted on at most `max_points` rows.

    When x has fewer distinct rows than k, the missing centres repeat existing ones (never chosen
    twice by `nearest`, which prefers the lowest index).
    """
    from sklearn.cluster import KMeans

    data = x.double().numpy()
    if len(data) > max_points:
        rng = torch.Generator().manual_seed(seed)
        data = data[torch.randperm(len(data), generator=rng)[:max_points].numpy()]
    distinct = len({row.tobytes() for row in data}) if len(data) <= 4 * k else k
    n_clusters = max(1, min(k, distinct))
    model = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed, max_iter=100).fit(data)
    centres = torch.from_numpy(model.cluster_centers_).float()
    if n_clusters < k:
        centres = torch.cat([centres, centres[torch.arange(k - n_clusters) % n_clusters]])
    return centres
