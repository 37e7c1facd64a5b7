"""The shared training loop's schedule: validation every N epochs, patience counted in validations and never
spent before the warm-up ends, warm-up in steps, and a finished run resumed with a larger budget."""

from __future__ import annotations

import json

import torch

from mscg.console import render
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
