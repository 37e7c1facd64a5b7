"""RQ-VAE (`rq-vae`): an MLP auto-encoder with a residual quantizer on its latent.

TIGER (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023) gives each item a
semantic ID this way: x ─encoder→ z ─RQ→ ẑ = Σ e(cₗ) ─decoder→ x̂, trained with
‖x - x̂‖² + Σₗ ‖sg(rₗ) - e(cₗ)‖² + β ‖rₗ - sg(e(cₗ))‖² (β = 0.25), the codebooks initialised by
k-means on the encoder's latents before training; the item's code is (c₁ … c_L).

NOTE: where mscg departs from TIGER —
- inputs are L2-normalised by default (cosine geometry, as for rq-kmeans), and always divided by the
  mean input norm (a stored buffer) so that one learning rate fits embeddings of any scale;
- the k-means initialisation sees the latents of the whole catalogue (up to 200k items), not one batch;
- AdamW with warm-up + cosine decay (the shared loop) instead of Adagrad, and a step budget that
  scales with the catalogue instead of TIGER's fixed 20k epochs;
- the reconstruction term is summed over input dimensions but the codebook and commitment terms are
  averaged over latent dimensions (as ResidualQuantizer returns them): in TIGER's units the commitment
  weight is β / latent_dim. With Adam the codebook term's scale hardly matters; the weaker commitment
  reconstructed better at the same collision rate (ml-100k text MSE 0.231 vs 0.305, Amazon
  Scientific text 0.114 vs 0.172, 3 x 64 codewords);
- every 100 steps during the first 80% of training, codewords that no item of a random sample maps
  to are restarted from that sample's residuals (dead-code handling; TIGER relies on the k-means
  initialisation alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mscg.models.config import JsonConfig
from mscg.models.residual_quantizer import ResidualQuantizer


@dataclass
class RQVAEConfig(JsonConfig):
    dim: int
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    normalize: bool = True
    modality: str = "text"
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    latent_dim: int = 32
    commitment: float = 0.25
    dropout: float = 0.0
    model_type: str = "rq-vae"


def mlp(dims: list[int], dropout: float) -> nn.Sequential:
    """Linear layers through `dims`, ReLU (+ dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, config: RQVAEConfig):
        super().__init__()
        self.config = config
        dims = [config.dim, *config.hidden_dims, config.latent_dim]
        self.encoder = mlp(dims, config.dropout)
        self.decoder = mlp(dims[::-1], config.dropout)
        self.rq = ResidualQuantizer(dim=config.latent_dim, codebook_sizes=config.codebook_sizes,
                                    commitment=config.commitment)
        # Mean norm of the (normalised) training inputs; inputs are divided by it (saved with the weights).
        self.register_buffer("input_scale", torch.ones(()))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors the auto-encoder reconstructs: L2-normalised when `normalize`."""
        x = x.to(self.input_scale.device, torch.float32)
        return F.normalize(x, dim=-1) if self.config.normalize else x

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """(N, dim) prepared inputs -> (N, latent_dim) encoder output."""
        return self.encoder(x / self.input_scale)

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, *, seed: int, max_points: int = 200_000) -> None:
        """Set the input scale from the vectors `x` (N, dim), then residual k-means on their latents (TIGER).

        Catalogues above `max_points` items are represented by a seeded random sample.
        """
        if len(x) > max_points:
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_points]]
        prepared = self.prepare(x)  # (n, dim)
        self.input_scale.fill_(float(prepared.norm(dim=1).mean().clamp_min(1e-12)))
        z = torch.cat([self.latent(part) for part in prepared.split(65_536)])  # (n, latent)
        self.rq.init_kmeans(z, seed=seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, dim) raw vectors -> scalar loss (reconstruction + codebook + commitment)."""
        target = self.prepare(x)  # (B, dim)
        z = self.latent(target)  # (B, latent)
        quantized, _, losses = self.rq(z)  # (B, latent), (B, L)
        recon = self.decoder(quantized) * self.input_scale  # (B, dim)
        reconstruction = (recon - target).pow(2).sum(1).mean()  # squared error per item, as reported
        return reconstruction + losses["codebook"] + losses["commitment"]  # these two: means over latent dims

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *, chunk: int = 65_536) -> torch.Tensor:
        """(N, dim) vectors -> (N, L) int64 codes (on the CPU)."""
        codes = [self.rq.encode(self.latent(self.prepare(part))).cpu() for part in x.split(chunk)]
        return torch.cat(codes) if codes else torch.zeros(0, self.rq.n_levels, dtype=torch.long)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, L) codes -> (N, dim) reconstructed (prepared) inputs."""
        codes = codes.to(self.input_scale.device, torch.long)
        return self.decoder(self.rq.decode(codes)) * self.input_scale

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, *, chunk: int = 65_536) -> float:
        """Mean over items of ‖prepare(x) - decode_codes(encode(x))‖² (as rq-kmeans reports it)."""
        total = 0.0
        for part in x.split(chunk):
            target = self.prepare(part)
            total += float((target - self.decode_codes(self.encode(part))).pow(2).sum(1).sum())
        return total / max(len(x), 1)
