"""The training loop's config and the defaults the CLI's help shows, free of torch (so `mscg CMD --help` is
quick). Each LoopConfig field declared with `option(...)` is a flag of `collab` and `train` (mscg.configs); the
loop itself is training/loop.py."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mscg.configs import check_fields, option
from mscg.errors import UsageError

DEFAULT_LOG_EVERY = 50  # optimizer steps between training records (`--log-every`)
PRECISIONS = ("bf16", "fp32")
DEFAULT_VALID_USERS = 10_000  # `mscg train`, `collab`: validated after each epoch (a seeded sample when there are more)
MAX_SEED = 2**32 - 1
SEED_HELP = "Random seed: same seed, same result on the same machine."
VALID_USERS_HELP = "Users validated after each epoch (a seeded sample when there are more)."


def warmup_text(steps: int | None) -> str:
    """A LoopConfig's warmup_steps as --warmup-steps shows it: N, or auto (None: a share of the run's steps)."""
    return "auto" if steps is None else str(steps)


def parse_warmup(text: str) -> int | None:
    """--warmup-steps N (0: none) or auto (None: the loop's share of the run); ValueError for anything else."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a number of steps (0: none) or auto") from None


def seed_option() -> int:
    return option(0, help=SEED_HELP, ge=0, le=MAX_SEED)


def valid_users_option() -> int:
    return option(DEFAULT_VALID_USERS, help=VALID_USERS_HELP, ge=1)


@dataclass
class LoopConfig:
    """How a model trains. `collab` and `train` take each option as a flag, with their own defaults (SASREC_LOOP,
    GENERATOR_LOOP below); the `cli=False` ones are set by a config file (or from Python) only."""

    epochs: int = option(help="Maximum epochs (early stopping on validation NDCG@10).", ge=1)
    batch_size: int = option(help="Samples per step.", ge=1)
    lr: float = option(help="Peak learning rate (AdamW, warm-up + cosine).", gt=0)
    weight_decay: float = option(0.0, help="AdamW weight decay.", ge=0)
    warmup_fraction: float = option(0.02, help="Share of the steps warmed up when warmup_steps is auto.", ge=0, le=1,
                                    cli=False)
    warmup_max_steps: int | None = option(None, help="The most steps an auto warm-up takes (none: no cap).", ge=1,
                                          cli=False)
    warmup_steps: int | None = option(None, help="Steps of linear learning-rate warm-up: N (0: none), or auto "
                                      "({auto_warmup}).", ge=0, metavar="<N|auto>", parse=parse_warmup,
                                      show=warmup_text)
    min_lr_ratio: float = option(0.1, help="The learning rate at the end of the cosine decay, as a share of --lr.",
                                 ge=0, le=1, cli=False)
    patience: int = option(5, help="Validations without a better NDCG@10 before stopping (never before the warm-up "
                           "ends).", ge=1)
    validate_every: int = option(1, help="Epochs between validations (the last epoch is always validated).", ge=1)
    grad_clip: float = option(1.0, help="Gradient norm clipping (0: none).", ge=0, cli=False)
    seed: int = seed_option()
    precision: str = option("fp32", help="Training arithmetic on CUDA: fp32, or bf16 (autocast). The CPU always "
                            "trains in fp32.", choices=PRECISIONS)
    log_every: int = option(DEFAULT_LOG_EVERY, help="Optimizer steps between training records: the mean loss and "
                            "learning rate, in meta.json and training_log.csv.", ge=1)
    # a run-time knob, not an option: also checkpointed at every epoch end; MSCG_CHECKPOINT_SECONDS overrides it
    checkpoint_seconds: float = field(default_factory=lambda: _env_seconds("MSCG_CHECKPOINT_SECONDS", 300.0))

    def check(self) -> None:
        """Every option in its range, refused with its flag named."""
        check_fields(self)

    @property
    def auto_warmup(self) -> str:
        """What an auto warm-up is, in words (the --warmup-steps help)."""
        cap = f", at most {self.warmup_max_steps:,} steps" if self.warmup_max_steps is not None else ""
        return f"{self.warmup_fraction:.0%} of the run's steps{cap}"


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise UsageError(f"{name}={os.environ[name]!r} must be a number of seconds") from None


SASREC_LOOP = LoopConfig(epochs=200, batch_size=128, lr=1e-3, weight_decay=0.0, patience=10)  # collab
# train: the long regime, chosen on validation (benchmarks/ARCHIVE.md, "the long regime becomes the default"): cosine
# decay over 100 epochs, validation every 5 epochs, stop after 4 checks without a better one (20 epochs). The warm-up
# is 5% of the run, at most 400 steps (BENCHMARKS.md, "Training regime"): large catalogues keep the 400 steps they were
# tuned with; a small dataset's run is no longer all warm-up.
GENERATOR_LOOP = LoopConfig(epochs=100, batch_size=256, lr=2e-3, weight_decay=0.05, warmup_fraction=0.05,
                            warmup_max_steps=400, patience=4, validate_every=5)
MIN_RUN_STEPS = 100  # fewer optimizer steps than this in a whole run: warned (too few to train)
