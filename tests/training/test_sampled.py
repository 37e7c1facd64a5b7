"""Large catalogues in `mscg collab`: sampled softmax with negatives shared by a batch, and packed windows
(no compute on padding)."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from mscg.artifacts.atomic import partial_path
from mscg.data.samples import SASRecWindows, first_fit_decreasing
from mscg.data.split import load_dataset
from mscg.models.sasrec import SASRec, SASRecConfig
from mscg.training.sasrec import NegativeSamples, sasrec_batches
from tests.conftest import synthetic_dataset
from tests.helpers import TINY_SASREC, assert_refused, invoke, ok, one_thread  # noqa: F401 (one_thread: a fixture)
from tests.training.test_resume import COLLAB, interrupted_run, training_history


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_dataset(tmp_path_factory.mktemp("sampled"))


@pytest.fixture(scope="module")
def split(data):
    return load_dataset(data).split


def tiny_model(max_history: int, dropout: float = 0.0) -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items=40, max_history=max_history, d_model=16, n_layers=2, n_heads=2,
                               dropout=dropout))


def test_first_fit_decreasing_packs_without_overlap():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 11, size=50)
    row, start = first_fit_decreasing(lengths, 10)
    taken = np.zeros((row.max() + 1, 10), dtype=int)
    for r, s, n in zip(row, start, lengths):
        taken[r, s:s + n] += 1
    assert taken.max() == 1 and taken.sum() == lengths.sum()  # every item once, within its row
    assert row.max() + 1 <= int(np.ceil(lengths.sum() / 10 * 11 / 9)) + 1  # FFD: within 11/9 of the optimum + 1


@pytest.mark.parametrize("max_history,stride", [(10, None), (4, None), (6, 2)])
def test_packed_batches_give_the_padded_loss(split, max_history, stride):
    padded = SASRecWindows(split, max_history, stride=stride)
    packed = SASRecWindows(split, max_history, stride=stride, pack=True)
    model = tiny_model(max_history).eval()
    order = torch.randperm(len(padded), generator=torch.Generator().manual_seed(0))
    for indices in order.split(16):
        a, b = padded.batch(indices), packed.batch(indices)
        assert b["history"].shape[0] <= a["history"].shape[0]
        targets_a, targets_b = a["targets"][a["targets"] >= 0], b["targets"][b["targets"] >= 0]
        assert torch.equal(targets_a.sort().values, targets_b.sort().values)
        assert torch.allclose(model(**a), model(**b), atol=1e-5)
        negatives = torch.arange(40)
        assert torch.allclose(model(**a, negatives=negatives), model(**b, negatives=negatives), atol=1e-5)
    every = packed.batch(torch.arange(len(packed)))
    real = int(padded.lengths.sum())
    assert int((every["history"] > 0).sum()) == real
    assert every["history"].shape[0] < len(padded)  # short windows share rows: little padding is left
    assert every["history"].numel() <= real * 11 / 9 + max_history


def test_negatives_are_seeded_and_shared_by_the_batch(split):
    config = SASRecConfig(n_items=40, max_history=10, d_model=16, n_layers=1, n_heads=2, negatives=8).resolved(40)
    source = sasrec_batches(config, split, torch.device("cpu"))
    assert isinstance(source, NegativeSamples) and source.windows.pack
    model = tiny_model(10, dropout=0.2).train()
    indices = torch.arange(12)

    def drawn(seed):
        torch.manual_seed(seed)
        batch = source.batch(indices)
        return batch["negatives"], model(**batch)

    (n1, loss1), (n2, loss2), (n3, _) = drawn(3), drawn(3), drawn(4)
    assert n1.shape == (8,) and n1.dtype == torch.long and 0 <= int(n1.min()) and int(n1.max()) < 40
    assert torch.equal(n1, n2) and torch.equal(loss1, loss2)  # same seed, same bytes
    assert not torch.equal(n1, n3)


def test_popularity_negatives_follow_training_targets_with_their_log_q(split):
    windows = SASRecWindows(split, 10, pack=True)
    source = NegativeSamples(windows, 40, 4000, "popularity")
    counts = torch.bincount(windows.targets[windows.targets >= 0], minlength=40)
    torch.manual_seed(0)
    batch = source.batch(torch.arange(8))
    drawn = torch.bincount(batch["negatives"], minlength=40)
    assert int(drawn[counts == 0].sum()) == 0  # never a target, never drawn
    assert torch.allclose(drawn / 4000, counts / counts.sum(), atol=0.03)
    assert torch.allclose(batch["log_q"][counts > 0].exp(), (counts / counts.sum())[counts > 0].float())
    assert torch.isfinite(tiny_model(10)(**batch))
    with pytest.raises(ValueError, match="unknown negative sampler"):
        NegativeSamples(windows, 40, 4, "in-batch")


def config_of(model_dir):
    return json.loads((model_dir / "config.json").read_text())


def test_collab_records_the_loss_it_chose(data, tmp_path):
    out = ok("collab", "-d", data, "-o", tmp_path / "e0", "--model-out", tmp_path / "m0", *TINY_SASREC)
    assert "loss: full softmax over all 40 items; windows padded" in out
    c = config_of(tmp_path / "m0")
    assert (c["negatives"], c["pack"]) == (0, False)  # the tiny catalogue: full softmax, as before
    for name, flags in (("a", ()), ("b", ()), ("p", ("--negative-sampler", "popularity", "--no-pack"))):
        out = ok("collab", "-d", data, "-o", tmp_path / f"e{name}", "--model-out", tmp_path / f"m{name}",
                 *TINY_SASREC, "--negatives", "8", *flags)
        sampler = "popularity" if flags else "uniform"
        assert f"loss: sampled softmax, 8 {sampler} negatives per batch of the 40 items" in out
        c = config_of(tmp_path / f"m{name}")
        assert (c["negatives"], c["negative_sampler"], c["pack"]) == (8, sampler, not flags)
    weights = [(tmp_path / f"m{name}" / "model.safetensors").read_bytes() for name in "ab0"]
    assert weights[0] == weights[1] != weights[2]  # same seed, same bytes; another loss, other weights
    ok("evaluate", tmp_path / "ma", "-d", data, "-o", tmp_path / "eval.json", "--device", "cpu")


@pytest.mark.parametrize("flags,needle", [(("--negatives", "-1"), "--negatives"),
                                          (("--negative-sampler", "in-batch"), "'uniform', 'popularity'")])
def test_collab_refuses_bad_loss_flags(data, tmp_path, flags, needle):
    assert_refused(invoke("collab", "-d", data, "-o", tmp_path / "e", *TINY_SASREC, *flags), 2, needle,
                   output=tmp_path / "e")


def test_sampled_collab_resumes_after_kill(data, tmp_path):
    flags = [*COLLAB, "--negatives", "8", "--negative-sampler", "popularity"]
    out, model, ref, ref_model = tmp_path / "emb", tmp_path / "sasrec", tmp_path / "ref", tmp_path / "ref_sasrec"
    args = ["collab", "-d", data, "-o", out, "--model-out", model, *flags]

    def reference():
        ok("collab", "-d", data, "-o", ref, "--model-out", ref_model, *flags)

    code, state = interrupted_run(args, out, tmp_path / "log", signal.SIGKILL, reference)
    assert code == -signal.SIGKILL and state["step"] > 0
    result = invoke(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert f"resumed from step {state['step']:,}" in result.stderr
    assert not partial_path(out).exists()
    assert (model / "model.safetensors").read_bytes() == (ref_model / "model.safetensors").read_bytes()
    assert training_history(model) == training_history(ref_model)
