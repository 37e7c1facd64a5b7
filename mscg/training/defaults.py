"""The training loop's config and the defaults the CLI's help shows, free of torch (so `mscg CMD --help` is
quick). The loop itself is training/loop.py."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from mscg.errors import UsageError

DEFAULT_LOG_EVERY = 50  # optimizer steps between training records (`--log-every`)
PRECISIONS = ("bf16", "fp32")
DEFAULT_BEAM_SIZE = 20  # `mscg train --beam-size`: validation, and the default beam of evaluate and recommend
DEFAULT_VALID_USERS = 10_000  # `mscg train`: validated after each epoch (a seeded sample when there are more)
FUSE_CANDIDATES = 50  # `mscg fuse`: the dense model's best items added to the generator's beam


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    warmup_fraction: float = 0.02
    warmup_steps: int | None = None  # linear warm-up steps; None: warmup_fraction of all steps
    min_lr_ratio: float = 0.1
    patience: int = 5  # validations without a better metric before stopping (never before warm-up ends)
    validate_every: int = 1  # epochs between validations (the last epoch is always validated)
    grad_clip: float = 1.0
    seed: int = 0
    precision: str = "fp32"  # on CUDA: "fp32" or "bf16" (autocast); the CPU always trains in fp32
    log_every: int = DEFAULT_LOG_EVERY  # optimizer steps between step records (a run-time knob: resume may change it)
    # also checkpointed at every epoch end; MSCG_CHECKPOINT_SECONDS overrides the default
    checkpoint_seconds: float = field(default_factory=lambda: _env_seconds("MSCG_CHECKPOINT_SECONDS", 300.0))

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.lr < math.inf:
            raise UsageError("--lr must be a positive number")
        if not 0 <= self.weight_decay < math.inf:
            raise UsageError("--weight-decay must be a number >= 0")
        if self.patience < 1:
            raise UsageError("--patience must be at least 1")
        if self.validate_every < 1:
            raise UsageError("--validate-every must be at least 1")
        if self.log_every < 1:
            raise UsageError("--log-every must be at least 1")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise UsageError("--warmup-steps must be 0 or more")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision!r} must be one of: {', '.join(PRECISIONS)}")


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise UsageError(f"{name}={os.environ[name]!r} must be a number of seconds") from None


SASREC_LOOP = LoopConfig(epochs=200, batch_size=128, lr=1e-3, weight_decay=0.0, patience=10)  # collab
# train: the long regime, chosen on validation (BENCHMARKS.md, "the long regime becomes the default"): a 400-step
# warm-up, cosine decay over 100 epochs, validation every 5 epochs, stop after 4 checks without a better one (20 epochs)
GENERATOR_LOOP = LoopConfig(epochs=100, batch_size=256, lr=2e-3, weight_decay=0.05, warmup_steps=400, patience=4,
                            validate_every=5)
