"""What every command shares: option aliases, the user-error boundary, rendering helpers."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from mscg.artifacts.atomic import FILE_SIZE_LIMIT, NO_SPACE, release_all, write_limit, write_text_atomic
from mscg.console import error, info, is_quiet
from mscg.errors import MscgError, UsageError
from mscg.training.defaults import DEFAULT_LOG_EVERY, PRECISIONS

DEBUG = {"on": os.environ.get("MSCG_DEBUG") == "1"}
ROOM = {NO_SPACE: "free some space", FILE_SIZE_LIMIT: "raise the limit"}  # what to do about a write_limit

DataOpt = Annotated[Path, typer.Option("--data", "-d", help="Folder holding items.jsonl and interactions.jsonl.",
                                       show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output directory (written atomically).",
                                         show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                       help="Random seed: same seed, same result on the same machine.")]
DEVICE_METAVAR = "<device>"  # not a fixed set (cuda:N), so no Choice: the help names the forms
DeviceOpt = Annotated[str, typer.Option("--device", metavar=DEVICE_METAVAR,
                                        help="auto (GPU when present), cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[Literal[PRECISIONS], typer.Option(
    "--precision", help="Training arithmetic on CUDA: fp32, or bf16 (autocast). "
                        "The CPU always trains in fp32.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint "
                                         "(or a finished one kept with --keep-checkpoint, with --force; the "
                                         "budget flags --epochs, --patience, --validate-every may change, and "
                                         "--lr: lower it to continue a run that diverged).")]
KeepCheckpointOpt = Annotated[bool, typer.Option("--keep-checkpoint", help="Keep the final resume checkpoint in "
                                                 "the output (resume.pt), so that the run can later continue "
                                                 "with a larger budget.")]
NoVerifyOpt = Annotated[bool, typer.Option("--no-verify", help="Use the artifacts found through meta.json even when "
                                           "their SHA-256 differs from the one recorded there.")]
# The training loop's flags (collab, train); each command's defaults come from its LoopConfig.
EpochsOpt = Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation NDCG@10).")]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up + cosine).")]
WeightDecayOpt = Annotated[float, typer.Option(help="AdamW weight decay.")]
PatienceOpt = Annotated[int, typer.Option(help="Validations without a better NDCG@10 before stopping (never "
                                          "before the warm-up ends).")]
WarmupStepsOpt = Annotated[str, typer.Option(metavar="<N|auto>", help="Steps of linear learning-rate warm-up: N "
                                              "(0: none), or auto (2% of the run's steps).")]
ValidateEveryOpt = Annotated[int, typer.Option(help="Epochs between validations (the last epoch is always "
                                               "validated).")]
LogEveryOpt = Annotated[int, typer.Option(help="Optimizer steps between training records: the mean loss and "
                                          "learning rate, in meta.json and training_log.csv.")]
QuantizeLogEveryOpt = Annotated[int | None, typer.Option(
    "--log-every", help="Optimizer steps between training records (rq-vae, rq-dino): the mean loss and learning "
                        f"rate, in meta.json and training_log.csv (default: {DEFAULT_LOG_EVERY}).",
    show_default=False)]


def warmup_text(steps: int | None) -> str:
    """A LoopConfig's warmup_steps as --warmup-steps shows it: N, or auto (None: 2% of the run's steps)."""
    return "auto" if steps is None else str(steps)


def parse_warmup(text: str) -> int | None:
    """--warmup-steps N (0: none) or auto (None: the loop's 2% rule)."""
    if text.strip().lower() == "auto":
        return None
    try:
        steps = int(text)
    except ValueError:
        raise UsageError(f"--warmup-steps {text!r} must be a number of steps (0: none) or auto") from None
    if steps < 0:
        raise UsageError("--warmup-steps must be 0 or more (or auto)")
    return steps


def user_errors(fn):
    """CLI boundary: an mscg error becomes one line on stderr and its exit code; no traceback. A full disk is
    named as such, whichever library reported it; the output locks this command took are released."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MscgError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            error("interrupted; the output was not written (training stages keep a checkpoint: rerun with --resume)")
            raise typer.Exit(130) from None
        except OSError as e:  # the file system said no: a full disk, a read-only or missing directory
            where = f" ({e.filename})" if e.filename else ""
            reason = write_limit(e, Path.cwd())
            if reason is not None:
                _fail(f"{reason} while writing {e.filename or 'the output'}; {ROOM[reason]} and rerun", 1)
            _fail(f"{e.strerror or e}{where}; check the path, its permissions and the free space", 1)
        except Exception as e:  # a library's wrapper of a failed write (safetensors, torch.save): a full disk?
            reason = write_limit(e, Path.cwd())
            if reason is None:
                raise
            _fail(f"{reason} ({str(e).splitlines()[0][:200]}); {ROOM[reason]} and rerun", 1)
        finally:
            release_all()

    return wrapper


def _fail(message: str, code: int):
    if DEBUG["on"]:
        traceback.print_exc()
    error(message)
    raise typer.Exit(code) from None


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


SUMMARY_METRICS = ("ndcg@10", "recall@10")  # the final line of collab/train; the rest is in meta.json


def valid_summary(valid: dict[str, float]) -> str:
    """"ndcg@10 0.1234, recall@10 0.2345": the validation metrics a run's last line names."""
    return ", ".join(f"{k} {valid[k]:.4f}" for k in SUMMARY_METRICS if k in valid)


def report_split(split) -> None:
    if split.dropped_users:
        info(f"dropped {split.dropped_users:,} users with fewer than 3 interactions; {len(split):,} users remain")


def resume_finished_run(output: Path, resume: bool) -> None:
    """`--resume` of a run that finished with --keep-checkpoint: its kept checkpoint seeds the partial output
    (when that holds none), so the run continues from where it ended."""
    from mscg.artifacts.atomic import partial_path
    from mscg.training.loop import RESUME_FILE

    kept, partial = Path(output) / RESUME_FILE, partial_path(Path(output))
    if resume and kept.is_file() and not kept.is_symlink() and not (partial / RESUME_FILE).exists():
        if partial.is_symlink():
            raise UsageError(f"the partial output {partial} is a symbolic link, and mscg never writes through one; "
                             "remove the link")
        partial.mkdir(exist_ok=True)
        shutil.copyfile(kept, partial / RESUME_FILE)


# ---- results that may go to stdout (`-o -`) ---------------------------------------------------------

def is_stdout(output: Path | str | None) -> bool:
    return output is not None and str(output) == "-"


def write_result(output: Path | str, text: str, *, force: bool, inputs) -> None:
    """The result into `output` atomically, or onto stdout for "-" (then nothing else goes to stdout)."""
    if is_stdout(output):
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(Path(output), text, force=force, inputs=inputs)


def human_console(output: Path | str | None) -> Console:
    """Where the table for people goes: stdout, or stderr when the result itself goes to stdout."""
    return Console(stderr=True, quiet=is_quiet()) if is_stdout(output) else Console()
