"""Training records: every trained stage writes its loss and learning rate per epoch (meta.json
training.history) and every --log-every steps (training.steps), and the same rows to training_log.csv;
a resumed run continues them exactly, without a step twice."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest
import torch

from mscg.console import render
from mscg.training.loop import LoopConfig, train_loop
from tests.helpers import (
    TINY_GENERATOR,
    TINY_SASREC,
    assert_refused,
    build_tiny_pipeline,
    invoke,
    ok,
    one_thread,  # noqa: F401 (a fixture)
)
from tests.training import test_loop as loop_tests

COLLAB = [*TINY_SASREC, "--epochs", "3", "--batch-size", "8", "--log-every", "2"]  # 8 steps an epoch


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("records"), generator=False, sasrec=False)


def training(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())["training"]


def csv_rows(folder: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(folder / "training_log.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def assert_csv_matches_meta(folder: Path) -> None:
    """Each record of meta.json is one row of training_log.csv, with the same values (empty = absent)."""
    columns, rows = csv_rows(folder)
    t = training(folder)
    assert columns[:5] == ["kind", "step", "epoch", "loss", "lr"]
    expected = [("step", s) for s in t["steps"]] + [("epoch", h) for h in t["history"]]
    assert sorted((r["kind"], int(r["step"])) for r in rows) == sorted((k, rec["step"]) for k, rec in expected)
    by_key = {(r["kind"], int(r["step"])): r for r in rows}
    for kind, record in expected:
        row = by_key[(kind, record["step"])]
        for column in columns[1:]:
            assert number(row[column]) == record.get(column), (kind, record, column, row[column])
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)  # in step order


def test_collab_records_every_n_steps_and_every_epoch(pipe, tmp_path):
    out, model = tmp_path / "emb", tmp_path / "sasrec"
    wrote = [line for line in ok("collab", "-d", pipe.data, "-o", out, "--model-out", model, *COLLAB).splitlines()
             if line.startswith("wrote ")]
    assert len(wrote) == 1 and "ndcg@10" in wrote[0] and "loss" not in wrote[0]  # the valid scores: metrics alone
    t = training(model)
    assert t["log_every"] == 2
    assert [s["step"] for s in t["steps"]] == list(range(2, 25, 2))
    assert [s["epoch"] for s in t["steps"]] == [1] * 4 + [2] * 4 + [3] * 4
    assert all(math.isfinite(s["loss"]) and s["loss"] > 0 and s["lr"] > 0 for s in t["steps"])
    history = t["history"]
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 8), (2, 16), (3, 24)]
    for h in history:  # the old keys stay, loss and lr join them
        assert {"ndcg@10", "recall@10", "ndcg@10/rare", "loss", "lr"} <= set(h)
        in_epoch = [s["loss"] for s in t["steps"] if s["epoch"] == h["epoch"]]
        assert h["loss"] == pytest.approx(sum(in_epoch) / len(in_epoch), rel=1e-4)  # 4 records of 2 steps each
        assert h["lr"] == next(s["lr"] for s in t["steps"] if s["step"] == h["step"])
    assert history[0]["lr"] > history[-1]["lr"]  # cosine decay
    assert_csv_matches_meta(model)
    assert (out / "training_log.csv").read_text() == (model / "training_log.csv").read_text()  # beside the emb too
    assert t["best_valid_metric"] == pytest.approx(max(h["ndcg@10"] for h in history), abs=1e-6)


def test_generator_and_rq_vae_record_too(pipe, tmp_path):
    gen = tmp_path / "generator"
    ok("train", "-d", pipe.data, "--codes", pipe.codes, "-o", gen, *TINY_GENERATOR, "--epochs", "2",
       "--batch-size", "16", "--log-every", "3", "--validate-every", "1")
    t = training(gen)
    assert t["steps"] and all(s["step"] % 3 == 0 for s in t["steps"])
    assert [h["epoch"] for h in t["history"]] == [1, 2] and all("ndcg@10" in h for h in t["history"])
    assert all(math.isfinite(h["loss"]) for h in t["history"])
    assert_csv_matches_meta(gen)

    q = tmp_path / "q"
    ok("quantize", "--method", "rq-vae", "--modality", "text", "--embeddings", pipe.emb_text, "-o", q, "--n-levels",
       "2", "--codebook-size", "4", "--epochs", "4", "--batch-size", "8", "--log-every", "5", "--device", "cpu")
    t = training(q)
    assert [s["step"] for s in t["steps"]] == list(range(5, t["optimizer_steps"] + 1, 5))
    assert t["history"] and all(set(h) == {"epoch", "step", "loss", "lr"} for h in t["history"])  # no validation
    columns, _ = csv_rows(q)
    assert columns == ["kind", "step", "epoch", "loss", "lr"]
    assert_csv_matches_meta(q)


def test_rq_kmeans_records_its_levels_and_has_no_loss(pipe):
    t = training(pipe.q_text)
    residuals = [level["mean_squared_residual"] for level in t["levels"]]
    assert [level["level"] for level in t["levels"]] == [1, 2] and residuals[0] > residuals[1] > 0
    assert not (pipe.q_text / "training_log.csv").exists()


def test_log_every_is_checked_with_its_flag_named(pipe, tmp_path):
    result = invoke("collab", "-d", pipe.data, "-o", tmp_path / "e", *TINY_SASREC, "--log-every", "0")
    assert_refused(result, 2, "--log-every must be at least 1", output=tmp_path / "e")
    result = invoke("quantize", "--modality", "text", "--embeddings", pipe.emb_text, "-o", tmp_path / "q",
                    "--log-every", "10")
    assert_refused(result, 2, "--log-every", "rq-kmeans", output=tmp_path / "q")


def test_a_finished_run_resumed_continues_its_records(pipe, tmp_path):
    args = ["collab", "-d", pipe.data, "-o", tmp_path / "emb", "--model-out", tmp_path / "m", *TINY_SASREC,
            "--batch-size", "8", "--patience", "100"]
    ok(*args, "--epochs", "2", "--log-every", "3", "--keep-checkpoint")
    before = training(tmp_path / "m")
    ok(*args, "--epochs", "3", "--log-every", "4", "--resume", "--force")  # log-every is no part of the checkpoint
    after = training(tmp_path / "m")
    steps = [s["step"] for s in after["steps"]]
    assert after["steps"][:len(before["steps"])] == before["steps"] and len(steps) == len(set(steps))
    assert steps == [3, 6, 9, 12, 15] + [20, 24]  # every 3 steps before the resume, every 4 after
    assert [h["epoch"] for h in after["history"]] == [1, 2, 3] and after["history"][:2] == before["history"]
    assert_csv_matches_meta(tmp_path / "m")


# ---- the loop itself: an interruption mid-epoch -----------------------------------------------------

class Points(loop_tests.Points):
    def __len__(self) -> int:
        return 40


Linear = loop_tests.Linear


def fit(config: LoopConfig, ckpt: Path | None = None, *, resume: bool = False, stop_after: int | None = None,
        source=None):
    torch.manual_seed(0)
    events = train_loop(Linear(), source or Points(), config, device=torch.device("cpu"), checkpoint_dir=ckpt,
                        resume=resume, validate=lambda core: {"ndcg@10": 0.5, "count": 1.0})
    if stop_after is None:
        return render(events, "test", quiet=True)
    for event in events:  # a run killed after `stop_after` steps (its last checkpoint: the step before)
        if event.kind == "step" and event.step == stop_after:
            events.close()
            return None
    raise AssertionError("the run ended before it was stopped")


def test_a_run_interrupted_mid_epoch_resumes_to_the_records_of_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MSCG_CHECKPOINT_SECONDS", "0")  # a checkpoint after every step
    config = LoopConfig(epochs=3, batch_size=8, lr=0.01, log_every=2)  # 5 steps an epoch
    reference = fit(config)
    fit(config, tmp_path, stop_after=8)
    resumed = fit(config, tmp_path, resume=True)
    assert resumed.step_log == reference.step_log and resumed.history == reference.history
    assert [s["step"] for s in resumed.step_log] == [2, 4, 6, 8, 10, 12, 14]
    assert [h["step"] for h in resumed.history] == [5, 10, 15]


class SlowPoints(Points):
    def batch(self, indices):
        time.sleep(0.02)
        return super().batch(indices)


def test_a_resumed_run_counts_its_training_time_before_the_interruption(tmp_path, monkeypatch):
    monkeypatch.setenv("MSCG_CHECKPOINT_SECONDS", "0")  # a checkpoint after every step
    config = LoopConfig(epochs=3, batch_size=8, lr=0.01)  # 15 steps of >= 0.02 s each

    fit(config, tmp_path, stop_after=8, source=SlowPoints())  # killed at step 8: its checkpoint holds 7 steps
    resumed = fit(config, tmp_path, resume=True, source=SlowPoints())
    assert resumed.steps == 15
    assert resumed.seconds >= 15 * 0.02  # this process alone ran 8 steps
    assert resumed.samples_per_second <= 8 * 8 / (8 * 0.02)  # a rate of this process's steps and time
