"""The shared training loop: it yields events and prints nothing; commands render them.

Samples come from a `BatchSource` (len + vectorised `batch(indices)`); `model(**batch)` returns the
loss. The iterator's return value (`result = yield from train_loop(...)`) is the `LoopResult`. The loop
owns shuffling (seeded per epoch, DistributedSampler under torchrun), AdamW with warm-up + cosine decay,
gradient clipping, bf16 autocast on CUDA, early stopping on a validation metric (higher is better), and
resume checkpoints in the output's partial directory.

Resume is exact on CPU: the checkpoint holds model, optimizer, scheduler, RNG state and the position
inside the epoch, and each epoch's sample order is a pure function of (seed, epoch).

Training records: every epoch adds a `history` entry (its mean training loss, the learning rate of its last
step, and the validation metrics where it validated), every `log_every` optimizer steps a `steps` entry (the
mean loss since the previous one, the learning rate of that step). They live in the loop state, so a resumed
run continues them; recording reads values the loop computes anyway (no random numbers, no other math).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from mscg.artifacts.modeldir import non_finite
from mscg.errors import DataError, DivergedError, UsageError
from mscg.training import distributed as dist
from mscg.training.defaults import DEFAULT_LOG_EVERY, MIN_RUN_STEPS, LoopConfig

RESUME_FILE = "resume.pt"


class BatchSource(Protocol):
    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]: ...


@dataclass
class Event:
    kind: str  # "start" | "step" | "epoch" | "done" | "phase" (a pass outside the loop: step of total_steps) |
    # "warning" (info["message"]: what the user should know before the run starts)
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    lr: float | None = None
    metric: float | None = None
    is_best: bool = False
    resumed_from: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopResult:
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    steps: int = 0  # optimizer steps in all (a resumed run counts those before the interruption)
    seconds: float = 0.0  # training time in all (a resumed run counts the time before the interruption)
    samples_per_second: float = 0.0  # this process's rate
    targets_per_second: float | None = None  # where a sample holds several targets (generator windows)
    precision: str = "fp32"  # the arithmetic training ran in
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: RECORD_KEYS + validation metrics
    step_log: list[dict[str, Any]] = field(default_factory=list)  # every log_every steps: step, epoch, loss, lr
    log_every: int = DEFAULT_LOG_EVERY
    warnings: list[str] = field(default_factory=list)  # what keeps the budget from completing its schedule

    def best_scores(self) -> dict[str, float]:
        """The validation metrics of the best epoch (empty without validation)."""
        best = next((h for h in self.history if h["epoch"] == self.best_epoch), {})
        return {k: v for k, v in best.items() if k not in RECORD_KEYS}

    def summary(self) -> dict[str, Any]:
        """What a model directory records about its training."""
        out = {"best_epoch": self.best_epoch, "best_valid_metric": self.best_metric, "epochs_run": self.epochs_run,
               "seconds": round(self.seconds, 2), "samples_per_second": round(self.samples_per_second, 1),
               "precision": self.precision, "history": self.history, "log_every": self.log_every,
               "steps": self.step_log}
        if self.targets_per_second is not None:
            out["targets_per_second"] = round(self.targets_per_second, 1)
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def train_loop(
    model: torch.nn.Module,
    source: BatchSource,
    config: LoopConfig,
    *,
    device: torch.device,
    validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    metric: str = "ndcg@10",
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
    after_step: Callable[[torch.nn.Module, int, int], None] | None = None,
    result: LoopResult | None = None,
) -> Generator[Event, None, LoopResult]:
    """Train `model` in place; at the end it holds the best validated weights (or the last ones).

    `validate(model)` returns sums over this rank's share of users plus "count" (and "metric/group" sums
    with their "count/group"); the loop adds them over ranks and divides. `after_step(model, step,
    total_steps)` runs after each optimizer step (e.g. an EMA teacher update). `result` is filled in as
    training goes, and returned at the end.
    """
    config.check()
    result = result if result is not None else LoopResult()
    model.to(device)
    core = model
    if dist.world_size() > 1:
        model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    sampler = DistributedSampler(source, num_replicas=dist.world_size(), rank=dist.rank(),
                                 shuffle=True, seed=config.seed, drop_last=False)
    steps_per_epoch = max(1, math.ceil(len(sampler) / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = warmup_steps(total_steps, config)
    result.warnings = schedule_warnings(total_steps, warmup, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps, warmup, config))
    bf16 = device.type == "cuda" and config.precision == "bf16"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    result.precision = "bf16" if bf16 else "fp32"

    state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_metric": None, "best_epoch": None,
             "bad_validations": 0, "seconds": 0.0, "history": [], **_fresh_records()}
    best_state: dict[str, torch.Tensor] | None = None
    # The budget (epochs, patience, validation interval) may change on resume: a finished or stopped run
    # continues with a larger one (its learning-rate decay then stretches over the new budget); so may the peak
    # learning rate: a run that diverged continues from its last checkpoint with a lower one.
    run_time = ("checkpoint_seconds", "epochs", "patience", "validate_every", "log_every", "lr")
    knobs = {k: v for k, v in asdict(config).items() if k not in run_time}
    fingerprint = json.loads(json.dumps({"loop": knobs, **(fingerprint or {})}, default=str))
    ckpt_path = Path(checkpoint_dir) / RESUME_FILE if checkpoint_dir is not None else None
    resumed_from = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        best_state = _load_checkpoint(ckpt_path, core, optimizer, scheduler, state, fingerprint, device)
        resumed_from = state["step"]
        _set_peak_lr(optimizer, scheduler, config.lr)
    else:
        torch.manual_seed(config.seed + dist.rank())
    for message in result.warnings:
        yield Event("warning", info={"message": message})
    yield Event("start", epoch=state["epoch"], step=state["step"], total_steps=total_steps, resumed_from=resumed_from)

    started, seconds_before = time.perf_counter(), state["seconds"]  # 0 unless resumed
    saved = {"step": resumed_from}  # the step of the checkpoint on disk, if any

    def save_checkpoint() -> None:
        if non_finite(core) is not None:  # a checkpoint only of weights worth resuming from
            raise _diverged(state, "the weights are no longer finite", config.lr, saved["step"])
        state["seconds"] = seconds_before + time.perf_counter() - started
        _save_checkpoint(ckpt_path, core, optimizer, scheduler, state, best_state, fingerprint)
        saved["step"] = state["step"]

    samples_seen = 0
    last_checkpoint = time.monotonic()
    stop = False
    while state["epoch"] < config.epochs and not stop:
        epoch = state["epoch"]
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        batches = order.split(config.batch_size)
        model.train()
        for b in range(state["batch_in_epoch"], len(batches)):
            batch = {k: v.to(device, non_blocking=True) for k, v in source.batch(batches[b]).items()}
            with autocast:
                loss = model(**batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # (under DDP the gradients are averaged over ranks by now: every rank sees the same norm)
            if config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(core.parameters(), config.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in core.parameters() if p.grad is not None])
            step_loss = float(loss.detach())
            if not (math.isfinite(step_loss) and bool(torch.isfinite(norm))):  # stop before the step spoils them
                what = f"the loss is {step_loss}" if not math.isfinite(step_loss) else "the gradient is not finite"
                raise _diverged({**state, "epoch": epoch, "step": state["step"] + 1}, what, config.lr, saved["step"])
            step_lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            state["batch_in_epoch"] = b + 1
            samples_seen += len(batches[b])
            if after_step is not None:
                after_step(core, state["step"], total_steps)
            _record_step(state, epoch + 1, step_loss, step_lr, config.log_every)
            yield Event("step", epoch=epoch, step=state["step"], total_steps=total_steps,
                        loss=step_loss, lr=scheduler.get_last_lr()[0])
            if ckpt_path is not None and time.monotonic() - last_checkpoint > config.checkpoint_seconds:
                save_checkpoint()
                last_checkpoint = time.monotonic()
        # End of epoch: validate (every validate_every epochs, and the last), keep the best weights, maybe stop.
        value, is_best, scores = None, False, {}
        if non_finite(core) is not None:  # the last step overflowed: nothing to validate (NaN would rank as a hit)
            raise _diverged(state | {"epoch": epoch}, "the weights are no longer finite", config.lr, saved["step"])
        if validate is not None and ((epoch + 1) % config.validate_every == 0 or epoch + 1 == config.epochs):
            model.eval()
            with torch.no_grad(), autocast:
                sums = validate(core)
            keys = sorted(sums)
            totals = dist.all_reduce_sum(torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64))
            totals = dict(zip(keys, totals.tolist()))
            count = max(totals.pop("count", 1.0), 1.0)
            # "metric/group" sums are divided by their group's "count/group" (popularity thirds)
            group_counts = {k.split("/", 1)[1]: max(totals.pop(k), 1.0) for k in list(totals)
                            if k.startswith("count/")}
            scores = {k: v / (group_counts.get(k.split("/", 1)[1], 1.0) if "/" in k else count)
                      for k, v in totals.items()}
            value = scores[metric]
            is_best = state["best_metric"] is None or value > state["best_metric"]
            if is_best:
                state["best_metric"], state["best_epoch"], state["bad_validations"] = value, epoch + 1, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in core.state_dict().items()})
            else:
                state["bad_validations"] += 1
                stop = state["bad_validations"] >= config.patience and state["step"] >= warmup
        state["history"].append({**_epoch_record(state, epoch + 1), **{k: round(v, 6) for k, v in scores.items()}})
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        _fill(result, state, config)
        yield Event("epoch", epoch=epoch + 1, step=state["step"], total_steps=total_steps,
                    metric=value, is_best=is_best, info={"stopping": stop})
        if ckpt_path is not None:
            save_checkpoint()
            last_checkpoint = time.monotonic()

    if best_state is not None:
        core.load_state_dict(best_state)
    # (again here: a resumed run whose epochs were all done runs none above)
    _fill(result, state, config)
    this_run = time.perf_counter() - started
    result.seconds = seconds_before + this_run
    result.samples_per_second = samples_seen * dist.world_size() / max(this_run, 1e-9)
    yield Event("done", epoch=state["epoch"], step=state["step"], total_steps=total_steps,
                metric=state["best_metric"])
    return result


def _diverged(state: dict[str, Any], what: str, lr: float, saved_step: int | None) -> DivergedError:
    """The one line for a run whose loss or weights stopped being finite: where, what to try, what is kept."""
    kept = f"; add --resume to continue from its last checkpoint (step {saved_step:,})" if saved_step else ""
    return DivergedError(f"training diverged at epoch {state['epoch'] + 1}, step {state['step']:,} ({what}), so "
                         f"nothing was written; rerun with a lower --lr than {lr:g} (e.g. {lr / 10:g}){kept}")


RECORD_KEYS = ("epoch", "step", "loss", "lr")  # a history entry's training record; the rest: validation metrics


def _fresh_records() -> dict[str, Any]:
    """The loop state's training records: step records, and the loss sums they and the epoch's entry average."""
    return {"steps_log": [], "window_loss": 0.0, "window_steps": 0, "epoch_loss": 0.0, "epoch_steps": 0,
            "epoch_lr": None}


def _significant(x: float) -> float:
    return float(f"{x:.6g}")


def _record_step(state: dict[str, Any], epoch: int, loss: float, lr: float, log_every: int) -> None:
    """Add a step's loss to the sums; every `log_every` steps a step record (mean loss since the last one).

    NOTE: under torchrun the loss is this rank's (the writing rank 0's), not an average over the ranks.
    """
    state["window_loss"] += loss
    state["window_steps"] += 1
    state["epoch_loss"] += loss
    state["epoch_steps"] += 1
    state["epoch_lr"] = lr
    if state["step"] % log_every == 0:
        state["steps_log"].append({"step": state["step"], "epoch": epoch,
                                   "loss": _significant(state["window_loss"] / state["window_steps"]),
                                   "lr": _significant(lr)})
        state["window_loss"], state["window_steps"] = 0.0, 0


def _epoch_record(state: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The epoch's history entry without its validation metrics; resets the epoch's sums."""
    n = state["epoch_steps"]
    record = {"epoch": epoch, "step": state["step"],
              "loss": _significant(state["epoch_loss"] / n) if n else None,
              "lr": _significant(state["epoch_lr"]) if state["epoch_lr"] is not None else None}
    state["epoch_loss"], state["epoch_steps"], state["epoch_lr"] = 0.0, 0, None
    return record


def _fill(result: LoopResult, state: dict[str, Any], config: LoopConfig) -> None:
    result.epochs_run, result.steps = state["epoch"], state["step"]
    result.best_metric, result.best_epoch = state["best_metric"], state["best_epoch"]
    result.history = list(state["history"])
    result.step_log = list(state["steps_log"])
    result.log_every = config.log_every


def with_model(events: Generator[Event, None, LoopResult], model: torch.nn.Module):
    """The loop's events, returning (model, LoopResult): what every fit hands back."""
    result = yield from events
    return model, result


def warmup_steps(total_steps: int, config: LoopConfig) -> int:
    """The warm-up: `warmup_steps`, or `warmup_fraction` of all steps (at least 1, at most `warmup_max_steps`)."""
    if config.warmup_steps is not None:
        return min(config.warmup_steps, total_steps)
    auto = max(1, int(total_steps * config.warmup_fraction))
    return auto if config.warmup_max_steps is None else min(auto, config.warmup_max_steps)


def schedule_warnings(total_steps: int, warmup: int, config: LoopConfig) -> list[str]:
    """What keeps a run's budget from completing its schedule: a warm-up over half the run (the learning rate
    hardly decays, and early stopping waits for the warm-up to end), or too few steps in all to train."""
    warnings, steps_per_epoch = [], total_steps // config.epochs
    if warmup > total_steps // 2:
        warnings.append(f"the warm-up ({warmup:,} steps) is {warmup / total_steps:.0%} of the run's {total_steps:,} "
                        "steps: the learning rate barely decays and early stopping waits for it; --warmup-steps auto "
                        "scales it to the run")
    if total_steps < MIN_RUN_STEPS:
        warnings.append(f"the run has {total_steps:,} optimizer steps in all ({config.epochs:,} epochs of "
                        f"{steps_per_epoch:,}), under {MIN_RUN_STEPS}: too few to train well; raise --epochs or lower "
                        "--batch-size")
    return warnings


def _warmup_cosine(total_steps: int, warmup: int, config: LoopConfig) -> Callable[[int], float]:
    """Linear warm-up over `warmup` steps, then cosine decay to `min_lr_ratio` at the end of the budget.

    NOTE: transformers' `get_cosine_with_min_lr_schedule_with_warmup` is this schedule shifted by one step
    (its first step has learning rate 0); taking it would change every trained model, so it waits for a
    change that moves results anyway (the training-regime work).
    """
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _set_peak_lr(optimizer, scheduler, lr: float) -> None:
    """A resumed run's peak learning rate, where --lr differs from the checkpoint's: the schedule goes on from
    the same step at the new scale (a run that diverged continues with a lower rate)."""
    if all(base == lr for base in scheduler.base_lrs):
        return
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _save_checkpoint(path: Path, model, optimizer, scheduler, state, best_state, fingerprint) -> None:
    if not dist.is_main():
        return
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": json.dumps(state),
        "best_state": best_state if best_state is not None else {},
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


_CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "state", "best_state", "rng", "cuda_rng", "fingerprint"}


def _load_checkpoint(path, model, optimizer, scheduler, state, fingerprint, device):
    try:  # weights_only: tensors and plain containers only, a crafted file cannot run code
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same user problem
        raise DataError(f"{path} is not a readable mscg checkpoint ({type(e).__name__}); drop --resume "
                        "(or delete it) to start afresh") from None
    if not isinstance(payload, dict) or not _CHECKPOINT_KEYS <= set(payload):
        raise DataError(f"{path} is not an mscg checkpoint; drop --resume (or delete it) to start afresh")
    try:
        recorded = json.loads(payload["fingerprint"])
    except (TypeError, ValueError):
        raise DataError(f"{path} is not an mscg checkpoint; drop --resume (or delete it) to start afresh") from None
    if isinstance(recorded, dict) and isinstance(recorded.get("loop"), dict):
        recorded["loop"].pop("lr", None)  # a run-time knob now; earlier checkpoints recorded it with the others
    if json.dumps(recorded, sort_keys=True) != json.dumps(fingerprint, sort_keys=True):
        raise UsageError(f"{path} was written by a run with other settings or inputs; rerun the same command "
                         "to resume it, or drop --resume to start afresh")
    model.load_state_dict(payload["model"])
    model.to(device)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    state.update(json.loads(payload["state"]))
    torch.set_rng_state(payload["rng"])
    if torch.cuda.is_available() and payload["cuda_rng"]:
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    if dist.rank() != 0:
        torch.manual_seed(int(json.loads(payload["fingerprint"])["loop"]["seed"]) + dist.rank() + state["step"])
    return payload["best_state"] or None
