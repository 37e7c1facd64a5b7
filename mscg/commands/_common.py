"""What every command shares: option aliases, the user-error boundary, rendering helpers."""

from __future__ import annotations

import functools
import os
import traceback
from pathlib import Path
from typing import Annotated

import typer

from mscg.console import error, info
from mscg.errors import MscgError, UsageError

DEBUG = {"on": os.environ.get("MSCG_DEBUG") == "1"}

DataOpt = Annotated[Path, typer.Option("--data", "-d", help="Folder holding items.jsonl and interactions.jsonl.",
                                       show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output directory (written atomically).",
                                         show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                       help="Random seed: same seed, same result on the same machine.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (GPU when present), cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Training arithmetic on CUDA: fp32, or bf16 (autocast). "
                                          "The CPU always trains in fp32.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")]
# The training loop's flags (collab, train); each command's defaults come from its LoopConfig.
EpochsOpt = Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation NDCG@10).")]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up + cosine).")]
WeightDecayOpt = Annotated[float, typer.Option(help="AdamW weight decay.")]
PatienceOpt = Annotated[int, typer.Option(help="Epochs without a better validation NDCG@10 before stopping.")]


def user_errors(fn):
    """CLI boundary: an mscg error becomes one line on stderr and its exit code; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MscgError as e:
            if DEBUG["on"]:
                traceback.print_exc()
            error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            error("interrupted; the output was not written (training stages keep a checkpoint: rerun with --resume)")
            raise typer.Exit(130) from None
        except OSError as e:  # the file system said no: a full disk, a read-only or missing directory
            if DEBUG["on"]:
                traceback.print_exc()
            where = f" ({e.filename})" if e.filename else ""
            error(f"{e.strerror or e}{where}; check the path, its permissions and the free space")
            raise typer.Exit(1) from None

    return wrapper


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError:
        raise UsageError(f"--ks {text!r} must be comma-separated integers, e.g. 5,10") from None
    if not ks or ks[0] < 1:
        raise UsageError(f"--ks {text!r} must list positive integers, e.g. 5,10")
    return ks


def check_attention(d_model: int, n_heads: int, dropout: float) -> None:
    """The flags every transformer stage shares, refused with the flag named."""
    if d_model % n_heads:
        raise UsageError(f"--d-model {d_model} must be divisible by --n-heads {n_heads}")
    if not 0 <= dropout < 1:
        raise UsageError(f"--dropout {dropout} must be in [0, 1)")


def report_split(split) -> None:
    if split.dropped_users:
        info(f"dropped {split.dropped_users:,} users with fewer than 3 interactions; {len(split):,} users remain")
