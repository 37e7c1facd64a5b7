"""The Python API: `mscg.load(MODEL)` recommends on item ids, as `mscg recommend` does, for both model kinds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mscg
from mscg.errors import DataError, MscgError, UnknownItemError, UsageError
from tests.helpers import Pipeline, build_tiny_pipeline, ok, one_thread  # noqa: F401 (fixture)

HISTORY = ["i0", "i4", "i8"]
MODELS = ["generator", "sasrec"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def models(pipe) -> dict:
    return {name: mscg.load(getattr(pipe, name)) for name in MODELS}


def test_import_mscg_is_light():
    """`import mscg` loads neither torch nor numpy: they come with `mscg.load`."""
    code = "import sys, mscg; print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", MODELS)
def test_recommend_matches_the_cli(pipe, models, tmp_path, name):
    """Item ids in, (item_id, score) out, best first, the history left out: what `mscg recommend` writes
    for the same history by default."""
    model = models[name]
    assert model.kind == ("mscg-generator" if name == "generator" else "sasrec")
    recs = model.recommend(HISTORY, k=5)
    assert len(recs) == 5 and all(isinstance(i, str) and isinstance(s, float) for i, s in recs)
    assert not set(i for i, _ in recs) & set(HISTORY)
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    (tmp_path / "h.jsonl").write_text(json.dumps({"user_id": "u", "history": HISTORY}) + "\n")
    ok("recommend", getattr(pipe, name), "-i", tmp_path / "h.jsonl", "-o", tmp_path / "r.jsonl", "-k", "5",
       "--device", "cpu")
    line = json.loads((tmp_path / "r.jsonl").read_text())
    assert line["items"] == [i for i, _ in recs]
    assert line["scores"] == pytest.approx([s for _, s in recs], abs=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_batch_equals_one_at_a_time(models, name):
    model = models[name]
    histories = [HISTORY, ["i1"], ["i2", "i6", "i10", "i14"]]
    batched = model.recommend_batch(histories, k=4, batch_size=2)
    assert len(batched) == 3
    for history, recs in zip(histories, batched):
        single = model.recommend(history, k=4)
        assert [i for i, _ in recs] == [i for i, _ in single]
        assert [s for _, s in recs] == pytest.approx([s for _, s in single], abs=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_history_kept_on_request(pipe, models, tmp_path, name):
    """exclude_history=False ranks every item, as `mscg recommend --include-history` does."""
    model = models[name]
    everything = model.recommend(HISTORY, k=len(model.item_ids), exclude_history=False)
    assert {i for i, _ in everything} == set(model.item_ids)
    unseen = model.recommend(HISTORY, k=5)
    if name == "sasrec":  # scores every item: the unseen list is the full ranking less the history
        assert [i for i, _ in unseen] == [i for i, _ in everything if i not in HISTORY][:5]
    (tmp_path / "h.jsonl").write_text(json.dumps({"user_id": "u", "history": HISTORY}) + "\n")
    ok("recommend", getattr(pipe, name), "-i", tmp_path / "h.jsonl", "-o", tmp_path / "r.jsonl", "-k", "6",
       "--include-history", "--device", "cpu")
    line = json.loads((tmp_path / "r.jsonl").read_text())
    assert line["items"] == [i for i, _ in model.recommend(HISTORY, k=6, exclude_history=False)]


@pytest.mark.parametrize("name", MODELS)
def test_unknown_ids(models, name):
    model = models[name]
    with pytest.raises(UnknownItemError, match="'zz' is not in the catalogue") as caught:
        model.recommend(["i0", "zz"])
    assert caught.value.item_id == "zz" and isinstance(caught.value, MscgError)
    with pytest.raises(UnknownItemError):
        model.recommend([7])  # an integer is the id "7", which this catalogue lacks
    assert model.recommend(["i0", "zz"], k=3, skip_unknown=True) == model.recommend(["i0"], k=3)
    with pytest.raises(DataError, match='no item the model knows.*fallback="popular"'):
        model.recommend(["zz"], skip_unknown=True)


@pytest.mark.parametrize("name", MODELS)
def test_popular_fallback(pipe, models, name):
    """A history with no known item gets the items most often in training, scored by their counts."""
    from mscg.data.split import load_dataset
    from mscg.popularity import train_counts

    model = models[name]
    ds = load_dataset(pipe.data)
    counts = train_counts(ds.split, len(ds.catalogue))
    popular = model.popular(5)
    assert [s for _, s in popular] == sorted(counts.tolist(), reverse=True)[:5]
    assert all(counts[ds.catalogue.item_ids.index(i)] == s for i, s in popular)
    batched = model.recommend_batch([[], ["zz"], HISTORY], k=5, skip_unknown=True, fallback="popular")
    assert batched[0] == batched[1] == popular
    assert batched[2] == model.recommend(HISTORY, k=5)


def test_refusals(models):
    model = models["generator"]
    assert "i0" in model and "zz" not in model and len(model.item_ids) == 40
    with pytest.raises(UsageError, match="k must be an integer of at least 1"):
        model.recommend(HISTORY, k=0)
    with pytest.raises(UsageError, match="a history must be a list of item ids"):
        model.recommend("i0")
    with pytest.raises(UsageError, match="fallback 'random' must be one of: none, popular"):
        model.recommend(HISTORY, fallback="random")
    with pytest.raises(DataError, match="history 1: 1.5 is not an item id"):
        model.recommend_batch([HISTORY, ["i0", 1.5]])


def test_load_refuses_what_the_cli_refuses(pipe, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        mscg.load(tmp_path / "nope")
    with pytest.raises(DataError, match="is a codes directory, but a model directory is expected"):
        mscg.load(pipe.codes)


def test_load_defaults_to_the_cli_device(pipe):
    """`mscg.load(MODEL)` picks the device as the CLI's --device does by default: auto (the GPU when present)."""
    import inspect

    import mscg.api
    from mscg.devices import resolve_device

    for load in (mscg.load, mscg.api.load):
        assert inspect.signature(load).parameters["device"].default == "auto"
    assert mscg.load(pipe.sasrec).recommender.device == resolve_device("auto")


@pytest.mark.parametrize("name", MODELS)
def test_score_kind_names_what_the_scores_are(models, name):
    """As each line of `mscg recommend` and each answer of `mscg serve` says it ("score_kind")."""
    assert models[name].score_kind == {"generator": "log-probability", "sasrec": "inner-product"}[name]
