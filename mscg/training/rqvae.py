"""Training the RQ-VAE quantizer (`mscg quantize --method rq-vae`): k-means-initialised codebooks, the
shared loop over the catalogue's vectors, dead-codeword restarts during the first 80% of the steps."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mscg.errors import DataError
from mscg.models.rqvae import RQVAE, RQVAEConfig
from mscg.training import distributed as dist
from mscg.training.loop import DEFAULT_LOG_EVERY, Event, LoopConfig, train_loop

MIN_STEPS = 3_000  # optimisation steps at least, however small the catalogue
MIN_EPOCHS = 20  # passes over the catalogue at least, however large
LOOP_EPOCH_STEPS = 100  # small catalogues are repeated within one loop epoch up to about this many steps
RESTART_EVERY = 100  # steps between dead-code restarts
RESTART_UNTIL = 0.8  # fraction of training after which codewords are left to settle
RESTART_SAMPLE = 16_384  # items whose codes decide which codewords are dead (and replace them)


@dataclass
class RQVAETraining:
    """`quantize --method rq-vae`'s training options; None = chosen from the catalogue size."""

    epochs: int | None = None  # passes over the catalogue (default: `schedule`)
    batch_size: int | None = None  # default: `default_batch_size`
    lr: float = 1e-3
    log_every: int = DEFAULT_LOG_EVERY  # optimizer steps between training records


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


def fit_rqvae(config: RQVAEConfig, training: RQVAETraining, vectors: torch.Tensor, item_ids: list[str], *,
              seed: int = 0, device: torch.device = torch.device("cpu"), checkpoint_dir: Path | None = None,
              resume: bool = False, source: str = "the embeddings",
              ) -> Generator[Event, None, tuple[RQVAE, dict[str, Any]]]:
    """Train an RQ-VAE on `vectors` (N, dim) of the items `item_ids` (read from `source`, for messages).

    Yields the loop's events; returns (the model, a summary of its training for meta.json). Its records
    count loop epochs (`passes_per_loop_epoch` passes over the catalogue each).
    """
    vectors = vectors.detach().to(torch.float32).cpu()
    n_items = len(vectors)
    if n_items < 2:
        raise DataError(f"{source}: {n_items} vectors; rq-vae needs at least 2 items to train")
    batch_size = int(training.batch_size or default_batch_size(n_items))
    lr = float(training.lr)
    # Under torchrun the batch is per process: plan with the global batch so the step budget holds.
    epochs, repeats = schedule(n_items, batch_size * dist.world_size(), training.epochs)
    loop = LoopConfig(epochs=epochs // repeats, batch_size=batch_size, lr=lr, seed=seed, precision="bf16",
                      log_every=int(training.log_every))
    loop.check()  # before the k-means initialisation
    torch.manual_seed(seed)
    model = RQVAE(config)
    model.init_codebooks(vectors, seed=seed)

    restarted = []

    def after_step(core: RQVAE, step: int, total: int) -> None:
        if step % RESTART_EVERY == 0 and step <= RESTART_UNTIL * total:
            restarted.append(restart_dead_codewords(core, vectors, seed=seed * 1_000_003 + step))

    fingerprint = {"model": config.to_json(), "epochs": epochs, "passes_per_loop_epoch": repeats,
                   "vectors": fingerprint_of(vectors, item_ids)}
    result = yield from train_loop(model, ItemVectors(vectors, repeats), loop, device=device,
                                   checkpoint_dir=checkpoint_dir, resume=resume, fingerprint=fingerprint,
                                   after_step=after_step)
    summary = {**result.summary(), "epochs_run": result.epochs_run * repeats, "passes_per_loop_epoch": repeats,
               "optimizer_steps": result.steps, "batch_size": batch_size, "lr": lr,
               "dead_code_restarts": sum(restarted)}  # in this process (not counting before a resume)
    return model, summary
