"""What every command shares: option aliases, the user-error boundary, rendering helpers."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mscg.artifacts.atomic import FILE_SIZE_LIMIT, NO_SPACE, release_all, write_limit, write_text_atomic
from mscg.console import error, info, is_quiet
from mscg.errors import MscgError, UsageError
from mscg.training.defaults import MAX_SEED, SEED_HELP, VALID_USERS_HELP

DEBUG = {"on": os.environ.get("MSCG_DEBUG") == "1"}
ROOM = {NO_SPACE: "free some space", FILE_SIZE_LIMIT: "raise the limit"}  # what to do about a write_limit

DataOpt = Annotated[Path, typer.Option("--data", "-d", help="Folder holding items.jsonl and interactions.jsonl.",
                                       show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output directory (written atomically).",
                                         show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help=SEED_HELP)]
DEVICE_METAVAR = "<device>"  # not a fixed set (cuda:N), so no Choice: the help names the forms
DeviceOpt = Annotated[str, typer.Option("--device", metavar=DEVICE_METAVAR,
                                        help="auto (GPU when present), cpu, cuda or cuda:N.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint "
                                         "(or a finished one kept with --keep-checkpoint, with --force; the "
                                         "budget flags --epochs, --patience, --validate-every may change, and "
                                         "--lr: lower it to continue a run that diverged).")]
KeepCheckpointOpt = Annotated[bool, typer.Option("--keep-checkpoint", help="Keep the final resume checkpoint in "
                                                 "the output (resume.pt), so that the run can later continue "
                                                 "with a larger budget.")]
NoVerifyOpt = Annotated[bool, typer.Option("--no-verify", help="Use the artifacts found through meta.json even when "
                                           "their SHA-256 differs from the one recorded there.")]
ValidUsersOpt = Annotated[int, typer.Option(help=VALID_USERS_HELP)]  # (collab and train: a field of their configs)


def tap(events, on_event):
    """A fit's events (mscg.training.loop.Event), each handed to `on_event` too (the Python API's callback) before
    the display gets it; the fit's return value stays the generator's."""
    while True:
        try:
            event = next(events)
        except StopIteration as done:
            return done.value
        on_event(event)
        yield event


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
