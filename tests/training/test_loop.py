"""The shared training loop's schedule: validation every N epochs, patience counted in validations and never
spent before the warm-up ends, warm-up in steps, and a finished run resumed with a larger budget."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from mscg.console import render
from mscg.errors import DivergedError
from mscg.training.loop import LoopConfig, _warmup_cosine, train_loop, warmup_steps
from tests.helpers import build_tiny_pipeline, invoke, one_thread  # noqa: F401 (one_thread: a fixture)

CPU = torch.device("cpu")


class Points:
    """A BatchSource of 32 random points; the model's loss is the mean squared output."""

    def __len__(self) -> int:
        return 32

    def batch(self, indices):
        return {"x": torch.randn(len(indices), 4, generator=torch.Generator().manual_seed(int(indices[0])))}


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.layer(x).pow(2).mean()


def run(config: LoopConfig, metrics: list[float]):
    """Train with a validation that reports `metrics` in turn; returns (epochs validated, the loop's result)."""
    validated = []

    def validate(core):
        validated.append(len(validated))
        return {"ndcg@10": metrics[len(validated) - 1], "count": 1.0}

    torch.manual_seed(0)
    result = render(train_loop(Linear(), Points(), config, device=CPU, validate=validate), "test", quiet=True)
    return [h["epoch"] for h in result.history if "ndcg@10" in h], result  # every epoch has an entry


def test_validation_every_n_epochs_and_after_the_last():
    epochs, result = run(LoopConfig(epochs=7, batch_size=8, lr=0.01, validate_every=3, patience=10),
                         [0.1, 0.2, 0.3])
    assert epochs == [3, 6, 7] and result.epochs_run == 7 and result.best_epoch == 7


def test_patience_counts_validations():
    epochs, result = run(LoopConfig(epochs=20, batch_size=8, lr=0.01, validate_every=2, patience=2),
                         [0.5, 0.4, 0.3] + [0.0] * 10)
    assert epochs == [2, 4, 6] and result.epochs_run == 6 and result.best_epoch == 2


def test_no_early_stop_before_the_warm_up_ends():
    # 4 steps an epoch; warm-up 20 steps = 5 epochs: a patience of 1 cannot stop the run before epoch 5
    epochs, result = run(LoopConfig(epochs=20, batch_size=8, lr=0.01, warmup_steps=20, patience=1),
                         [0.5] + [0.1] * 19)
    assert epochs == [1, 2, 3, 4, 5] and result.best_epoch == 1


def test_warm_up_in_steps_then_cosine_decay_over_the_whole_budget():
    config = LoopConfig(epochs=1, batch_size=1, lr=1.0, warmup_steps=10, min_lr_ratio=0.0)
    factor = _warmup_cosine(100, warmup_steps(100, config), config)
    assert [round(factor(s), 3) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert factor(10) == 1.0 and abs(factor(55) - 0.5) < 1e-9 and factor(100) == 0.0
    default = LoopConfig(epochs=1, batch_size=1, lr=1.0)
    assert warmup_steps(1000, default) == 20  # 2% of the steps


def test_trains_warm_up_is_in_proportion_to_the_run_up_to_its_cap():
    from mscg.training.defaults import GENERATOR_LOOP

    # a one-step-an-epoch dataset's 30 epochs: 1 step of warm-up, not all 30; a large catalogue keeps 400
    assert [warmup_steps(n, GENERATOR_LOOP) for n in (30, 1_000, 8_000, 12_780, 42_600)] == [1, 50, 400, 400, 400]
    assert warmup_steps(30, replace(GENERATOR_LOOP, warmup_steps=400)) == 30  # given: as given, within the run


def test_a_budget_that_cannot_complete_its_schedule_is_warned():
    from mscg.training.defaults import GENERATOR_LOOP
    from mscg.training.loop import schedule_warnings

    def warnings(total, config):
        return schedule_warnings(total, warmup_steps(total, config), config)

    fixed = replace(GENERATOR_LOOP, epochs=30, warmup_steps=400)
    assert warnings(12_780, fixed) == [] and warnings(12_780, replace(fixed, warmup_steps=None)) == []
    half = warnings(600, fixed)  # 400 of 600 steps are warm-up
    assert len(half) == 1 and half[0].startswith("the warm-up (400 steps) is 67% of the run's 600 steps")
    short = warnings(30, fixed)  # the newcomer's run: 30 epochs of one step, all of them warm-up
    assert len(short) == 2 and "100%" in short[0] and short[1].startswith("the run has 30 optimizer steps in all "
                                                                          "(30 epochs of 1), under 100")
    assert len(warnings(30, replace(fixed, warmup_steps=None))) == 1  # auto: only too short


def test_the_warnings_reach_the_events_and_the_result():
    config = LoopConfig(epochs=2, batch_size=8, lr=0.01, warmup_steps=20)
    events = list(train_loop(Linear(), Points(), config, device=CPU))  # 4 steps an epoch: 8 in all, all warm-up
    warned = [e.info["message"] for e in events if e.kind == "warning"]
    assert len(warned) == 2 and warned[0].startswith("the warm-up (8 steps) is 100% of the run's 8 steps")
    assert [e.kind for e in events[:3]] == ["warning", "warning", "start"]  # said before the run starts
    result = render(train_loop(Linear(), Points(), config, device=CPU), "test", quiet=True)
    assert result.summary()["warnings"] == warned  # and recorded in the model's meta.json


def test_a_finished_run_continues_with_a_larger_budget(tmp_path):
    pipe = build_tiny_pipeline(tmp_path, generator=False, sasrec=False)
    args = ["collab", "-d", pipe.data, "-o", pipe.work / "emb", "--model-out", pipe.work / "m", "--d-model", "8",
            "--n-heads", "2", "--n-layers", "1", "--max-history", "5", "--device", "cpu", "--patience", "100"]
    first = invoke(*args, "--epochs", "2", "--keep-checkpoint")
    assert first.exit_code == 0, first.output
    assert (pipe.work / "emb" / "resume.pt").exists()
    before = json.loads((pipe.work / "m" / "meta.json").read_text())["training"]["history"]
    more = invoke(*args, "--epochs", "4", "--resume", "--force")
    assert more.exit_code == 0, more.output
    assert "resumed from step" in more.stderr
    history = json.loads((pipe.work / "m" / "meta.json").read_text())["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and history[:2] == before  # continued, not redone
    assert not (pipe.work / "emb" / "resume.pt").exists()  # not kept this time


class Breaking(Linear):
    """Linear whose loss turns NaN from its `at`-th call on (a run that diverges)."""

    def __init__(self, at: int):
        super().__init__()
        self.calls, self.at = 0, at

    def forward(self, x):
        self.calls += 1
        loss = super().forward(x)
        return loss * float("nan") if self.calls >= self.at else loss


def test_a_non_finite_loss_stops_training_before_the_step(tmp_path):
    """The step whose loss is NaN is never taken; the error names epoch and step and a lower --lr, and the
    checkpoint of the last epoch (finite weights) stays for --resume. Validation never sees the broken model."""
    validated = []
    model = Breaking(at=6)  # 4 steps an epoch: step 6 is in epoch 2
    config = LoopConfig(epochs=3, batch_size=8, lr=0.01, checkpoint_seconds=float("inf"))
    events = train_loop(model, Points(), config, device=CPU, checkpoint_dir=tmp_path,
                        validate=lambda core: validated.append(1) or {"ndcg@10": 0.5, "count": 1.0})
    with pytest.raises(DivergedError, match=r"epoch 2, step 6 \(the loss is nan\).*lower --lr than 0.01 \(e.g. "
                                            r"0.001\); add --resume to continue from its last checkpoint \(step 4\)"):
        render(events, "test", quiet=True)
    assert validated == [1] and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    state = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert json.loads(state["state"])["step"] == 4


def test_weights_that_overflow_are_caught_before_validation():
    """A step that leaves non-finite weights (its loss was finite) stops the run at the epoch's end, before
    validation could rank NaN scores."""
    def spoil(core, step, total):
        if step == 4:  # the epoch's last step
            core.layer.weight.data[0, 0] = float("inf")

    events = train_loop(Linear(), Points(), LoopConfig(epochs=2, batch_size=8, lr=0.01), device=CPU,
                        validate=lambda core: pytest.fail("validated a broken model"), after_step=spoil)
    with pytest.raises(DivergedError, match=r"epoch 1, step 4 \(the weights are no longer finite\)"):
        render(events, "test", quiet=True)


def test_resume_with_a_lower_peak_learning_rate(tmp_path):
    """--lr may change on resume (a run that diverged continues with a lower one): the schedule goes on from
    the same step at the new scale."""
    config = LoopConfig(epochs=2, batch_size=8, lr=0.01)
    render(train_loop(Linear(), Points(), config, device=CPU, checkpoint_dir=tmp_path), "test", quiet=True)
    shutil.copy(tmp_path / "resume.pt", tmp_path / "after-2-epochs.pt")
    last = {}
    for lr in (0.01, 0.001):
        shutil.copy(tmp_path / "after-2-epochs.pt", tmp_path / "resume.pt")
        more = replace(config, epochs=3, lr=lr)
        result = render(train_loop(Linear(), Points(), more, device=CPU, checkpoint_dir=tmp_path, resume=True),
                        "test", quiet=True)
        assert [h["epoch"] for h in result.history] == [1, 2, 3]
        last[lr] = result.history[-1]["lr"]
    assert last[0.01] == pytest.approx(10 * last[0.001])
