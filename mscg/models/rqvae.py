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

import hashlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from mscg.errors import DataError, UsageError
from mscg.models.residual_quantizer import ResidualQuantizer

if TYPE_CHECKING:
    from mscg.artifacts.embeddings import Embeddings
    from mscg.training.loop import Event


@dataclass
class RQVAEConfig:
    dim: int
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    normalize: bool = True
    modality: str = "text"
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    latent_dim: int = 32
    commitment: float = 0.25
    dropout: float = 0.0
    model_type: str = "rq-vae"

    def to_json(self) -> dict:
        return asdict(self)


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


# ---------------------------------------------------------------------------------------------------
# Training (called by `mscg quantize --method rq-vae`).

MIN_STEPS = 3_000  # optimisation steps at least, however small the catalogue
MIN_EPOCHS = 20  # passes over the catalogue at least, however large
LOOP_EPOCH_STEPS = 100  # small catalogues are repeated within one loop epoch up to about this many steps
RESTART_EVERY = 100  # steps between dead-code restarts
RESTART_UNTIL = 0.8  # fraction of training after which codewords are left to settle
RESTART_SAMPLE = 16_384  # items whose codes decide which codewords are dead (and replace them)
OPTIONS = ("epochs", "batch_size", "lr")


def default_batch_size(n_items: int) -> int:
    """256 for small catalogues, growing to 1024 from 64k items (about 64 steps per pass at least)."""
    return int(min(1024, max(256, 2 ** math.floor(math.log2(max(n_items // 64, 1))))))


def schedule(n_items: int, batch_size: int, epochs: int | None = None) -> tuple[int, int]:
    """(passes over the catalogue, passes per loop epoch).

    By default at least MIN_STEPS optimisation steps and MIN_EPOCHS passes. A loop epoch (and its
    checkpoint) holds several passes when the catalogue is small; it always divides `epochs`.
    """
    target = max(1, math.ceil(LOOP_EPOCH_STEPS * batch_size / max(n_items, 1)))
    if epochs is None:
        epochs = max(MIN_EPOCHS, math.ceil(MIN_STEPS * batch_size / max(n_items, 1)))
        epochs = math.ceil(epochs / target) * target
    repeats = max(r for r in range(1, max(1, min(target, epochs)) + 1) if epochs % r == 0)
    return epochs, repeats


class ItemVectors:
    """BatchSource over the rows of an (N, D) tensor, each row `repeats` times (one loop epoch = `repeats` passes)."""

    def __init__(self, vectors: torch.Tensor, repeats: int = 1):
        self.vectors = vectors
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.vectors) * self.repeats

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": self.vectors[indices % len(self.vectors)]}


@torch.no_grad()
def restart_dead_codewords(model: RQVAE, vectors: torch.Tensor, *, seed: int) -> int:
    """Move the codewords that no item of a random sample maps to onto residuals of that sample.

    Returns how many moved. Usage is counted afresh on the sample (not by the quantizer's running
    average, which a checkpoint does not hold), and the sample is drawn from `seed` alone: resumed and
    distributed runs restart the same codewords. Under torchrun rank 0's codebooks are broadcast.
    """
    from mscg.training import distributed as dist

    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(vectors), generator=generator)[:RESTART_SAMPLE]
    was_training = model.training
    model.eval()
    z = model.latent(model.prepare(vectors[rows]))  # (S, latent)
    codes = model.rq.encode(z)  # (S, L)
    for level, size in enumerate(model.rq.codebook_sizes):
        getattr(model.rq, f"usage_{level}").copy_(torch.bincount(codes[:, level], minlength=size))
    moved = model.rq.restart_dead_codes(z, threshold=0.5, generator=generator)  # count 0 = dead
    if dist.world_size() > 1:
        for codebook in model.rq.codebooks:
            torch.distributed.broadcast(codebook.data, src=0)
    model.train(was_training)
    return moved


def fingerprint_of(vectors: torch.Tensor, item_ids: list[str]) -> str:
    """sha256 of the vectors and their item ids (a resume must train on the same inputs)."""
    h = hashlib.sha256(vectors.detach().cpu().contiguous().numpy())
    h.update("\n".join(item_ids).encode())
    return h.hexdigest()


def _remember_last(events: Iterator[Event], last: dict[str, Event]) -> Iterator[Event]:
    for event in events:
        last["event"] = event
        yield event


def fit_rqvae(emb: Embeddings, sizes: list[int], *, normalize: bool = True, seed: int = 0, device: str = "auto",
              output: Path | None = None, force: bool = False, resume: bool = False,
              options: dict[str, Any] | None = None) -> tuple[RQVAE, RQVAEConfig, dict[str, Any]]:
    """Train an RQ-VAE on `emb` (an Embeddings artifact); returns (model, config, training summary).

    The resume checkpoint lives in OUTPUT's partial directory, which `quantize` then turns into OUTPUT.
    """
    import shutil

    from mscg.artifacts.atomic import partial_path
    from mscg.training import distributed as dist
    from mscg.training.loop import LoopConfig, LoopResult, train_loop
    from mscg.training.render import render

    options = dict(options or {})
    for key in options:
        if key not in OPTIONS:
            raise UsageError(f"--{key.replace('_', '-')} does not apply to --method rq-vae; drop it")
    vectors = emb.vectors.detach().to(torch.float32).cpu()
    n_items = len(vectors)
    if n_items < 2:
        raise DataError(f"{emb.path or 'the embeddings'}: {n_items} vectors; rq-vae needs at least 2 items to train")
    batch_size = int(options.get("batch_size", default_batch_size(n_items)))
    lr = float(options.get("lr", 1e-3))
    # Under torchrun the batch is per process: plan with the global batch so the step budget holds.
    epochs, repeats = schedule(n_items, batch_size * dist.world_size(), options.get("epochs"))
    loop = LoopConfig(epochs=epochs // repeats, batch_size=batch_size, lr=lr, seed=seed)
    loop.check()  # before the k-means initialisation
    dev = dist.resolve_device(device)

    config = RQVAEConfig(dim=int(vectors.shape[1]), codebook_sizes=list(sizes), normalize=normalize,
                         modality=emb.modality)
    torch.manual_seed(seed)
    model = RQVAE(config)
    model.init_codebooks(vectors, seed=seed)

    checkpoint_dir = None
    if output is not None:
        checkpoint_dir = partial_path(Path(output))
        if dist.is_main():
            if not resume and checkpoint_dir.exists():
                shutil.rmtree(checkpoint_dir)
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()

    restarted = []

    def after_step(core: RQVAE, step: int, total: int) -> None:
        if step % RESTART_EVERY == 0 and step <= RESTART_UNTIL * total:
            restarted.append(restart_dead_codewords(core, vectors, seed=seed * 1_000_003 + step))

    result = LoopResult()
    fingerprint = {"model": config.to_json(), "epochs": epochs, "passes_per_loop_epoch": repeats,
                   "vectors": fingerprint_of(vectors, emb.item_ids)}
    events = train_loop(model, ItemVectors(vectors, repeats), loop, device=dev, checkpoint_dir=checkpoint_dir,
                        resume=resume, fingerprint=fingerprint, after_step=after_step, result=result)
    last: dict[str, Event] = {}
    render(_remember_last(events, last), "quantize (rq-vae)", quiet=not dist.is_main())
    training = {**result.summary(), "epochs_run": result.epochs_run * repeats, "passes_per_loop_epoch": repeats,
                "steps": last["event"].step, "batch_size": batch_size, "lr": lr,
                "dead_code_restarts": sum(restarted)}  # in this process (not counting before a resume)
    return model, config, training
