"""New and rare items end to end: a cold-start split (`prepare --withhold-items`), collab embeddings predicted
from content (`predict-collab`), their codes decoded and recommended, the cold-start report of `evaluate`, and
the fused ranking (`fuse`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mscg
from mscg.data.coldstart import WITHHELD_FILE
from mscg.data.split import load_dataset
from mscg.recommenders import load as load_recommender
from mscg.recommenders.fused import WEIGHTS, FusedRecommender
from tests.conftest import synthetic_dataset
from tests.helpers import TINY_GENERATOR, TINY_SASREC, assert_refused, invoke, ok, one_thread, structured_vectors

__all__ = ["one_thread"]


def import_text(data: Path, work: Path, name: str) -> Path:
    """Text embeddings for every item of DATA (structured vectors: items of a genre lie close together)."""
    ids = [json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()]
    (work / f"{name}.txt").write_text("\n".join(ids) + "\n")
    vectors = structured_vectors(len(ids), 8, 0)
    np.save(work / f"{name}.npy", vectors)
    ok("import-embeddings", "-d", data, "--vectors", work / f"{name}.npy", "--ids", work / f"{name}.txt",
       "--modality", "text", "-o", work / name)
    return work / name


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A cold-start split of the synthetic data and every stage on it, as a user runs them."""
    root = tmp_path_factory.mktemp("cold")
    source = synthetic_dataset(root)
    data, work = root / "cold", root / "work"
    ok("prepare", source, "-o", data, "--withhold-items", "0.2", "--seed", "3")
    work.mkdir()
    emb_text = import_text(data, work, "emb_text")
    ok("collab", "-d", data, "-o", work / "emb_collab", "--model-out", work / "sasrec", *TINY_SASREC)
    ok("predict-collab", "-d", data, "--collab", work / "emb_collab", "--content", emb_text, "-o", work / "emb_full")
    for modality, emb in (("text", emb_text), ("collab", work / "emb_full")):
        ok("quantize", "--modality", modality, "--embeddings", emb, "-o", work / f"q_{modality}", "--n-levels", "2",
           "--device", "cpu")
    ok("assign-codes", "-d", data, "-q", work / "q_text", "-q", work / "q_collab", "-o", work / "codes",
       "--device", "cpu")
    ok("train", "-d", data, "--codes", work / "codes", "-o", work / "generator", *TINY_GENERATOR)
    withheld = json.loads((data / WITHHELD_FILE).read_text())["item_ids"]
    return data, work, withheld


def test_withheld_items_meet_no_training_stage(cold):
    data, work, withheld = cold
    ds = load_dataset(data)
    cold_rows = {ds.catalogue.index[i] for i in withheld}
    assert len(withheld) == round(0.2 * 40) and len(ds.catalogue) == 40  # kept in the catalogue
    for u in range(len(ds.split)):  # neither a training item nor a validation target, anywhere
        assert not cold_rows & set(ds.split.train_sequence(u).tolist())
        assert ds.split.target(u, "valid") not in cold_rows
        assert not cold_rows & set(ds.split.history(u, "valid").tolist())
    assert any(ds.split.target(u, "test") in cold_rows for u in range(len(ds.split)))  # only test targets
    # SASRec never trained their rows: collab says so, and predict-collab replaced every one from content
    collab_meta = json.loads((work / "emb_collab" / "meta.json").read_text())
    assert set(withheld) <= set(collab_meta["source"]["untrained_item_ids"])
    full_meta = json.loads((work / "emb_full" / "meta.json").read_text())
    assert set(withheld) <= set(full_meta["source"]["predicted_item_ids"])
    generator_meta = json.loads((work / "generator" / "meta.json").read_text())
    assert all(generator_meta["train_item_counts"][r] == 0 for r in cold_rows)


def test_predicted_items_get_codes_and_are_recommended(cold, tmp_path):
    data, work, withheld = cold
    codes_meta = json.loads((work / "codes" / "meta.json").read_text())
    collab = next(m for m in codes_meta["modalities"] if m["name"] == "collab")
    assert collab["items_with_modality"] == 40 and collab["predicted_items"] >= len(withheld)
    model = mscg.load(work / "generator")
    # a beam as wide as the catalogue reaches every item with a code: the predicted ones are decodable
    everything = [item for item, _ in model.recommend(["i0", "i4"], k=40, exclude_history=False)]
    assert set(withheld) <= set(everything)
    histories = tmp_path / "h.jsonl"
    histories.write_text(json.dumps({"user_id": "u", "history": ["i1", "i5"]}) + "\n")
    ok("recommend", work / "generator", "-i", histories, "-o", tmp_path / "r.jsonl", "-k", "40", "--device", "cpu")
    listed = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])["items"]
    assert set(withheld) - {"i1", "i5"} <= set(listed)  # the history is left out by default


def test_evaluate_reports_cold_start_users_apart(cold):
    data, work, withheld = cold
    out = work / "eval.json"
    ok("evaluate", work / "generator", "-d", data, "-o", out, "--device", "cpu")
    metrics = json.loads(out.read_text())
    assert metrics["withheld_items"] == len(withheld)
    assert metrics["cold_start"]["users"] + metrics["warm"]["users"] == metrics["users"]
    assert metrics["cold_start"]["users"] > 0
    ds = load_dataset(data)
    cold_rows = {ds.catalogue.index[i] for i in withheld}
    expected = sum(ds.split.target(u, "test") in cold_rows for u in range(len(ds.split)))
    assert metrics["cold_start"]["users"] == expected
    mixed = (metrics["cold_start"]["ndcg@10"] * metrics["cold_start"]["users"]
             + metrics["warm"]["ndcg@10"] * metrics["warm"]["users"]) / metrics["users"]
    assert mixed == pytest.approx(metrics["ndcg@10"], abs=1e-5)


def test_fusion_at_weight_one_or_zero_is_each_model(cold):
    data, work, _ = cold
    generator = load_recommender(work / "generator", torch.device("cpu"))
    dense = load_recommender(work / "sasrec", torch.device("cpu"))
    ds = load_dataset(data)
    histories = [ds.split.history(u, "test") for u in range(len(ds.split))]
    for exclude in (False, True):
        want_gen, _ = generator.top_k(histories, 5, exclude_history=exclude)
        want_dense, _ = dense.top_k(histories, 5, exclude_history=exclude)
        got_gen, _ = FusedRecommender(generator, dense, 1.0, 20).top_k(histories, 5, exclude_history=exclude)
        got_dense, _ = FusedRecommender(generator, dense, 0.0, 20).top_k(histories, 5, exclude_history=exclude)
        assert torch.equal(got_gen, want_gen) and torch.equal(got_dense, want_dense)
    middle, _ = FusedRecommender(generator, dense, 0.5, 20).top_k(histories, 5)
    assert not torch.equal(middle, want_gen) or not torch.equal(middle, want_dense)


def test_fuse_chooses_its_weight_on_validation_and_works_everywhere(cold, tmp_path):
    data, work, _ = cold
    fused = tmp_path / "fused"
    ok("fuse", work / "generator", work / "sasrec", "-d", data, "-o", fused, "--device", "cpu")
    meta = json.loads((fused / "meta.json").read_text())
    config = json.loads((fused / "config.json").read_text())
    assert [row["weight"] for row in meta["validation"]] == list(WEIGHTS)
    best = max(meta["validation"], key=lambda row: row["ndcg@10"])
    assert config["weight"] == best["weight"] and meta["weight_chosen_on"] == "valid"
    moved = tmp_path / "moved"
    shutil.move(fused, moved)  # self-contained: both models are inside
    ok("evaluate", moved, "-d", data, "-o", tmp_path / "eval.json", "--device", "cpu")
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["model_type"] == "fused" and metrics["users"] > 0
    given = tmp_path / "given"
    ok("fuse", work / "generator", work / "sasrec", "-d", data, "-o", given, "--weight", "1", "--device", "cpu")
    ok("evaluate", given, "-d", data, "-o", tmp_path / "eval1.json", "--device", "cpu")
    ok("evaluate", work / "generator", "-d", data, "-o", tmp_path / "eval_gen.json", "--device", "cpu")
    at_one, alone = (json.loads((tmp_path / n).read_text()) for n in ("eval1.json", "eval_gen.json"))
    assert at_one["ndcg@10"] == pytest.approx(alone["ndcg@10"]) and at_one["recall@10"] == alone["recall@10"]


def test_fuse_refuses_models_in_the_wrong_places(cold, tmp_path):
    data, work, _ = cold
    r = invoke("fuse", work / "sasrec", work / "generator", "-d", data, "-o", tmp_path / "f", "--device", "cpu")
    assert_refused(r, 2, "GENERATOR", "sasrec", output=tmp_path / "f")
    r = invoke("fuse", work / "generator", work / "sasrec", "-d", data, "-o", tmp_path / "f", "--weight", "1.5")
    assert_refused(r, 2, "--weight", output=tmp_path / "f")


def test_items_added_after_collab_get_codes_and_recommendations(cold, tmp_path):
    """The catalogue grows after `collab` ran: the new items' collab embeddings are predicted, the collab
    quantizer codes them, and a generator trained on the grown catalogue recommends them."""
    data, work, _ = cold
    grown = tmp_path / "grown"
    shutil.copytree(data, grown)
    new = [{"item_id": f"new{k}", "text": f"drama episode new {k}"} for k in range(3)]
    with open(grown / "items.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in new)
    emb_text = import_text(grown, tmp_path, "emb_text")
    ok("predict-collab", "-d", grown, "--collab", work / "emb_collab", "--content", emb_text, "-o", tmp_path / "full")
    meta = json.loads((tmp_path / "full" / "meta.json").read_text())
    assert {"new0", "new1", "new2"} <= set(meta["source"]["predicted_item_ids"])
    assert meta["source"]["map"]["holdout_items"] >= 1
    ok("assign-codes", "-d", grown, "-q", work / "q_text", "-q", work / "q_collab", "--embeddings",
       f"text={emb_text}", "--embeddings", f"collab={tmp_path / 'full'}", "-o", tmp_path / "codes", "--device", "cpu")
    ok("train", "-d", grown, "--codes", tmp_path / "codes", "-o", tmp_path / "gen", *TINY_GENERATOR)
    listed = [item for item, _ in mscg.load(tmp_path / "gen").recommend(["i0"], k=43, exclude_history=False)]
    assert {"new0", "new1", "new2"} <= set(listed)


def test_predict_collab_refuses_collab_as_content(cold, tmp_path):
    data, work, _ = cold
    r = invoke("predict-collab", "-d", data, "--collab", work / "emb_collab", "--content", work / "emb_collab", "-o",
               tmp_path / "out")
    assert_refused(r, 1, "--content", "collab embeddings", output=tmp_path / "out")


def test_rare_items_can_take_predicted_embeddings_too(cold, tmp_path):
    data, work, withheld = cold
    ok("predict-collab", "-d", data, "--collab", work / "emb_collab", "--content", work / "emb_text", "-o",
       tmp_path / "rare", "--min-interactions", "3")
    source = json.loads((tmp_path / "rare" / "meta.json").read_text())["source"]
    counts = json.loads((work / "generator" / "meta.json").read_text())["train_item_counts"]
    ids = [json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()]
    assert set(source["predicted_item_ids"]) == {i for i, c in zip(ids, counts) if c < 3} >= set(withheld)
    assert source["min_interactions"] == 3 and source["map"]["fit_items"] == sum(c >= 3 for c in counts)


def test_a_trained_only_trie_keeps_unseen_items_out_of_the_loss(cold, tmp_path):
    """--train-trie trained: the loss's constraint leaves out the withheld items (so training never pushes
    their codes down), and the trained model still decodes every item at inference."""
    data, work, withheld = cold
    ok("train", "-d", data, "--codes", work / "codes", "-o", tmp_path / "gen", "--train-trie", "trained",
       *TINY_GENERATOR)
    config = json.loads((tmp_path / "gen" / "config.json").read_text())
    assert config["train_trie"] == "trained"
    listed = [item for item, _ in mscg.load(tmp_path / "gen").recommend(["i0", "i4"], k=40, exclude_history=False)]
    assert set(withheld) <= set(listed)
    before = (work / "generator" / "model.safetensors").read_bytes()
    assert (tmp_path / "gen" / "model.safetensors").read_bytes() != before  # the loss did change
    r = invoke("train", "-d", data, "--codes", work / "codes", "-o", tmp_path / "bad", "--train-trie", "some")
    assert_refused(r, 2, "--train-trie", output=tmp_path / "bad")


@pytest.fixture(scope="module")
def dense_generator(cold, tmp_path_factory):
    """A generator trained with a dense head over the text embeddings (`train --dense-content`)."""
    data, work, _ = cold
    out = tmp_path_factory.mktemp("dense") / "gen"
    ok("train", "-d", data, "--codes", work / "codes", "-o", out, "--dense-content", work / "emb_text",
       *TINY_GENERATOR)
    return out


def test_a_dense_head_scores_items_by_content_and_fuses_with_its_own_generator(cold, dense_generator, tmp_path):
    """train --dense-content: the head's item keys are a function of the items' content alone (so an item
    training never met is scored like any other), and `fuse GENERATOR` without DENSE re-ranks the beam with
    the head: weight 0 ranks as the head, weight 1 as the generator."""
    from mscg.artifacts.embeddings import load_embeddings
    from mscg.training.content_map import content_features

    data, work, withheld = cold
    shutil.copytree(dense_generator, tmp_path / "gen")
    generator = load_recommender(tmp_path / "gen", torch.device("cpu"))
    features = torch.from_numpy(content_features([load_embeddings(work / "emb_text")], generator.item_ids)).float()
    assert torch.allclose(generator.model.item_keys(features), generator.model.item_key_table, atol=1e-6)
    ds = load_dataset(data)
    histories = [ds.split.history(u, "test") for u in range(len(ds.split))]
    dense = generator.dense_scores(histories)  # (users, items)
    assert dense.shape == (len(histories), len(generator.item_ids)) and bool(torch.isfinite(dense).all())
    for weight in (0, 1):
        ok("fuse", tmp_path / "gen", "-d", data, "-o", tmp_path / f"fused{weight}", "--weight", weight,
           "--device", "cpu")
    config = json.loads((tmp_path / "fused0" / "config.json").read_text())
    assert config["dense"] == "head" and not (tmp_path / "fused0" / "dense").exists()
    at_zero, at_one = (load_recommender(tmp_path / f"fused{w}", torch.device("cpu")) for w in (0, 1))
    got, _ = at_zero.top_k(histories, 5)
    assert torch.equal(got, torch.sort(dense, dim=1, descending=True, stable=True).indices[:, :5])
    got, _ = at_one.top_k(histories, 5, exclude_history=True)
    assert torch.equal(got, generator.top_k(histories, 5, exclude_history=True)[0])
    ok("evaluate", tmp_path / "fused0", "-d", data, "-o", tmp_path / "eval.json", "--device", "cpu")
    assert json.loads((tmp_path / "eval.json").read_text())["cold_start"]["users"] > 0


def test_fuse_without_a_dense_model_needs_a_dense_head(cold, tmp_path):
    data, work, _ = cold
    r = invoke("fuse", work / "generator", "-d", data, "-o", tmp_path / "f", "--device", "cpu")
    assert_refused(r, 2, "dense head", "--dense-content", output=tmp_path / "f")
    r = invoke("train", "-d", data, "--codes", work / "codes", "-o", tmp_path / "g", "--dense-content",
               work / "emb_collab", *TINY_GENERATOR)
    assert_refused(r, 1, "--dense-content", "collab embeddings", output=tmp_path / "g")


def test_weight_grid_covers_the_simplex_once():
    from mscg.recommenders.fused import weight_grid

    assert weight_grid(2) == [(w, round(1 - w, 10)) for w in WEIGHTS]
    three = weight_grid(3)
    assert len(three) == 66 == len(set(three)) and all(abs(sum(ws) - 1) < 1e-9 for ws in three)


def test_three_way_fusion_weights_each_part_and_is_chosen_on_validation(cold, dense_generator, tmp_path):
    """A generator, SASRec and the generator's dense head fused: each corner of the weights ranks as that part
    alone; `fuse GEN SASREC --dense-head` validates all 66 weightings and writes a model evaluate reads."""
    from mscg.recommenders.dense_head import DenseHead

    data, work, _ = cold
    generator = load_recommender(dense_generator, torch.device("cpu"))
    sasrec = load_recommender(work / "sasrec", torch.device("cpu"))
    ds = load_dataset(data)
    histories = [ds.split.history(u, "test") for u in range(len(ds.split))]
    head = DenseHead(generator)
    fused = {ws: FusedRecommender(generator, [sasrec, head], ws, 20) for ws in ((1, 0, 0), (0, 1, 0), (0, 0, 1))}
    assert torch.equal(fused[1, 0, 0].top_k(histories, 5)[0], generator.top_k(histories, 5)[0])
    assert torch.equal(fused[0, 1, 0].top_k(histories, 5)[0], sasrec.top_k(histories, 5)[0])
    by_head = torch.sort(head.scores(histories), dim=1, descending=True, stable=True).indices[:, :5]
    assert torch.equal(fused[0, 0, 1].top_k(histories, 5)[0], by_head)
    ok("fuse", dense_generator, work / "sasrec", "--dense-head", "-d", data, "-o", tmp_path / "all", "--device", "cpu")
    config = json.loads((tmp_path / "all" / "config.json").read_text())
    meta = json.loads((tmp_path / "all" / "meta.json").read_text())
    assert config["dense"] == ["sasrec", "head"] and len(meta["validation"]) == 66
    best = max(meta["validation"], key=lambda row: row["ndcg@10"])
    assert config["weights"] == best["weights"] and abs(sum(config["weights"]) - 1) < 1e-9
    ok("evaluate", tmp_path / "all", "-d", data, "-o", tmp_path / "eval.json", "--device", "cpu")
    assert json.loads((tmp_path / "eval.json").read_text())["model_type"] == "fused"
    r = invoke("fuse", dense_generator, work / "sasrec", "--dense-head", "-d", data, "-o", tmp_path / "bad",
               "--weights", "0.5,0.6,0.1")
    assert_refused(r, 2, "--weights", output=tmp_path / "bad")
    r = invoke("fuse", dense_generator, work / "sasrec", "--dense-head", "-d", data, "-o", tmp_path / "bad",
               "--weight", "0.5")
    assert_refused(r, 2, "--weights", output=tmp_path / "bad")


def test_parts_that_never_met_an_item_abstain_on_it():
    """fused_scores: where a part abstains the others' weights are renormalised; where all weighted parts
    abstain, none does; -inf of an abstaining part does not enter."""
    from mscg.recommenders.fused import fused_scores

    gen, sasrec = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-3.0, float("-inf")]])
    head = torch.tensor([[-5.0, -6.0]])
    unknown = torch.tensor([[False, True]])
    got = fused_scores([gen, sasrec, head], (0.3, 0.4, 0.3), [unknown, unknown, None])
    assert torch.allclose(got, torch.tensor([[0.3 * -1 + 0.4 * -3 + 0.3 * -5, -6.0]]))
    alone = fused_scores([gen, sasrec, head], (0.5, 0.5, 0.0), [unknown, unknown, None])
    assert torch.allclose(alone[:, 0], torch.tensor([-2.0])) and alone[0, 1] == float("-inf")


def test_a_fused_model_with_the_head_scores_withheld_items_by_the_head(cold, dense_generator):
    from mscg.recommenders.dense_head import DenseHead

    data, work, withheld = cold
    generator = load_recommender(dense_generator, torch.device("cpu"))
    sasrec = load_recommender(work / "sasrec", torch.device("cpu"))
    fused = FusedRecommender(generator, [sasrec, DenseHead(generator)], (0.4, 0.3, 0.3), 40)
    ds = load_dataset(data)
    histories = [ds.split.history(u, "test") for u in range(len(ds.split))]
    items, parts = fused.candidates(histories, 10)
    combined = fused.combine(items, parts, fused.weights)
    cold_ids = torch.tensor([ds.catalogue.index[i] for i in withheld])
    is_cold = torch.isin(items, cold_ids)
    assert is_cold.any() and torch.allclose(combined[is_cold], parts[2][is_cold])
    warm = (items >= 0) & ~is_cold
    assert torch.allclose(combined[warm], (0.4 * parts[0] + 0.3 * parts[1] + 0.3 * parts[2])[warm])
