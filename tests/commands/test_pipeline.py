"""The whole pipeline through the CLI on a tiny synthetic catalogue (seconds), as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mscg.cli import app
from tests.conftest import synthetic_dataset

runner = CliRunner()

TINY_SASREC = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--epochs", "3", "--max-history", "10"]
TINY_GENERATOR = ["--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--d-ff", "64", "--epochs", "2",
                  "--batch-size", "64", "--max-history", "5"]


def mscg(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pipeline(data_dir: Path, tiny_text_model: Path, tmp_path_factory) -> Path:
    tiny_data = data_dir
    w = tmp_path_factory.mktemp("work")
    mscg("embed", "--modality", "text", "-d", tiny_data, "-o", w / "emb_text", "--model", tiny_text_model)
    mscg("collab", "-d", tiny_data, "-o", w / "emb_collab", "--model-out", w / "sasrec", *TINY_SASREC)
    mscg("quantize", "--modality", "text", "--embeddings", w / "emb_text", "-o", w / "q_text")
    mscg("quantize", "--modality", "collab", "--embeddings", w / "emb_collab", "-o", w / "q_collab")
    mscg("assign-codes", "-d", tiny_data, "-q", w / "q_text", "-q", w / "q_collab", "-o", w / "codes")
    mscg("train", "-d", tiny_data, "--codes", w / "codes", "-o", w / "generator", *TINY_GENERATOR)
    return w


def test_whole_pipeline(pipeline: Path, data_dir: Path):
    tiny_data = data_dir
    w = pipeline
    meta = json.loads((w / "codes" / "meta.json").read_text())
    assert [m["name"] for m in meta["modalities"]] == ["text", "collab"]
    assert meta["vocabulary"]["slots"][0]["offset"] == 4
    assert all(m["collision_size"] >= 1 for m in meta["modalities"])

    for name in ("sasrec", "generator"):
        out = mscg("evaluate", w / name, "-d", tiny_data, "-o", w / f"eval_{name}.json")
        assert "R@10" in out
        metrics = json.loads((w / f"eval_{name}.json").read_text())
        assert metrics["users"] == 60 and metrics["split"] == "test"
        assert 0 <= metrics["ndcg@10"] <= metrics["recall@10"] <= 1
        assert metrics["eval_seconds"] > 0
        assert "item memory" in out
    n_slots = len(meta["vocabulary"]["slots"])  # one byte per code token
    assert json.loads((w / "eval_generator.json").read_text())["bytes_per_item"] == n_slots
    assert json.loads((w / "eval_sasrec.json").read_text())["bytes_per_item"] == 16 * 4  # --d-model 16, float32
    table = mscg("compare", f"sasrec={w / 'eval_sasrec.json'}", f"mscgrec={w / 'eval_generator.json'}",
                 "-o", w / "metrics.json")
    assert "sasrec" in table and "mscgrec" in table
    combined = json.loads((w / "metrics.json").read_text())
    assert set(combined) == {"sasrec", "mscgrec"}
    assert {"recall@5", "recall@10", "ndcg@5", "ndcg@10", "users", "eval_seconds"} <= set(combined["sasrec"])


def test_recommend_pipes_jsonl(pipeline: Path, data_dir: Path):
    tiny_data = data_dir
    histories = "".join(json.dumps({"user_id": f"x{k}", "history": ["i0", "i4", "i8"]}) + "\n" for k in range(3))
    items = {json.loads(l)["item_id"] for l in (tiny_data / "items.jsonl").read_text().splitlines()}
    for model in ("generator", "sasrec"):
        result = runner.invoke(app, ["recommend", str(pipeline / model), "-k", "5"], input=histories)
        assert result.exit_code == 0, result.output
        lines = [json.loads(l) for l in result.stdout.splitlines()]
        assert [r["user_id"] for r in lines] == ["x0", "x1", "x2"]
        for r in lines:
            assert len(r["items"]) == 5 and set(r["items"]) <= items and len(set(r["items"])) == 5
            assert r["scores"] == sorted(r["scores"], reverse=True)


def test_recommend_can_leave_out_the_history(pipeline: Path):
    history = ["i0", "i4", "i8", "i12", "i16", "i20"]
    line = json.dumps({"user_id": "u", "history": history}) + "\n"
    for model, beam in (("generator", ["--beam-size", "30"]), ("sasrec", [])):  # same beam: same search
        everything = runner.invoke(app, ["recommend", str(pipeline / model), "-k", "30", *beam], input=line)
        result = runner.invoke(app, ["recommend", str(pipeline / model), "-k", "5", "--exclude-history", *beam],
                               input=line)
        assert result.exit_code == 0 == everything.exit_code, result.output
        ranked = json.loads(everything.stdout)
        fresh = json.loads(result.stdout)
        assert len(fresh["items"]) == 5 and not set(fresh["items"]) & set(history)
        # the same ranking with the history items taken out
        assert fresh["items"] == [i for i in ranked["items"] if i not in history][:5]


def test_outputs_are_refused_without_force_and_replaced_with_it(pipeline: Path):
    out = mscg("quantize", "--modality", "text", "--embeddings", pipeline / "emb_text", "-o", pipeline / "q_text2")
    before = (pipeline / "q_text2" / "model.safetensors").read_bytes()
    out = mscg("quantize", "--modality", "text", "--embeddings", pipeline / "emb_text", "-o", pipeline / "q_text2",
               code=2)
    assert "already exists" in out and "--force" in out
    assert (pipeline / "q_text2" / "model.safetensors").read_bytes() == before
    mscg("quantize", "--modality", "text", "--embeddings", pipeline / "emb_text", "-o", pipeline / "q_text2",
         "--force", "--seed", "1")
    assert not any(p.name.startswith(".") for p in pipeline.iterdir())


def test_same_seed_gives_byte_identical_codes(pipeline: Path, data_dir: Path):
    w, tiny_data = pipeline, data_dir
    mscg("assign-codes", "-d", tiny_data, "-q", w / "q_text", "-q", w / "q_collab", "-o", w / "codes2")
    for name in ("codes.safetensors", "meta.json"):
        a, b = (w / "codes" / name).read_bytes(), (w / "codes2" / name).read_bytes()
        if name == "meta.json":  # the command line names the output directory
            a, b = a.replace(b"codes2", b"codes"), b.replace(b"codes2", b"codes")
        assert a == b


def test_help_is_honest():
    out = mscg("--help")
    for command in ("prepare", "embed", "import-embeddings", "collab", "quantize", "assign-codes", "train",
                    "evaluate", "recommend", "compare"):
        assert command in out
    for command in ("embed", "collab", "quantize", "assign-codes", "train", "evaluate", "recommend"):
        assert "Example" in mscg(command, "--help")


def test_evaluate_by_popularity_keeps_the_metrics_and_splits_them(pipeline: Path, data_dir: Path, tmp_path: Path):
    for name in ("sasrec", "generator"):
        mscg("evaluate", pipeline / name, "-d", data_dir, "-o", tmp_path / f"{name}.json")
        out = mscg("evaluate", pipeline / name, "-d", data_dir, "--by-popularity", "-o", tmp_path / f"{name}_pop.json")
        assert "by target popularity" in out and "already in the user's history" in out
        plain = json.loads((tmp_path / f"{name}.json").read_text())
        split = json.loads((tmp_path / f"{name}_pop.json").read_text())
        for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
            assert split[k] == plain[k]  # the breakdown does not change how the model is scored
        groups = split["by_target_popularity"]
        assert [g["group"] for g in groups] == ["popular", "middle", "rare"]
        assert sum(g["users"] for g in groups) == split["users"] == 60
        # the groups partition the users: their weighted recall is the overall recall
        assert abs(sum(g["recall@10"] * g["users"] for g in groups) / 60 - split["recall@10"]) < 1e-5
        assert groups[0]["target_train_count"][0] >= groups[1]["target_train_count"][1]
        assert 0 <= split["history_share@10"] <= 1 and split["recommended_train_count@10"] > 0


def test_evaluate_can_leave_out_the_history(pipeline: Path, data_dir: Path, tmp_path: Path):
    for name in ("sasrec", "generator"):
        mscg("evaluate", pipeline / name, "-d", data_dir, "--by-popularity", "-o", tmp_path / f"{name}.json")
        out = mscg("evaluate", pipeline / name, "-d", data_dir, "--by-popularity", "--exclude-history",
                   "-o", tmp_path / f"{name}_fresh.json")
        assert "history items excluded" in out
        plain = json.loads((tmp_path / f"{name}.json").read_text())
        fresh = json.loads((tmp_path / f"{name}_fresh.json").read_text())
        assert fresh["exclude_history"] is True and plain["exclude_history"] is False
        # only a target that repeats a history item can still be in the list: at most one per user
        assert fresh["history_share@10"] < plain["history_share@10"]
        # leaving items out can only move a target up
        for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
            assert fresh[k] >= plain[k]


def test_collab_starts_from_another_modality(data_dir: Path, pipeline: Path, tmp_path: Path):
    """--init-embeddings: after a short run the item table still carries the text geometry; without it, not."""
    import torch
    from safetensors.torch import load_file

    from mscg.artifacts.embeddings import load_embeddings
    from mscg.training.sasrec import content_start

    short = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--epochs", "1", "--max-history", "10"]
    mscg("collab", "-d", data_dir, "-o", tmp_path / "init", "--init-embeddings", pipeline / "emb_text", *short)
    mscg("collab", "-d", data_dir, "-o", tmp_path / "plain", *short)
    meta = json.loads((tmp_path / "init" / "meta.json").read_text())
    assert meta["source"]["init"] == "text" and meta["provenance"]["inputs"]["init_embeddings"]["sha256"]
    assert json.loads((tmp_path / "plain" / "meta.json").read_text())["source"]["init"] == "random"

    text = load_embeddings(pipeline / "emb_text")
    start, known = content_start(text, meta["item_ids"], 16, 0)
    assert bool(known.all())

    def agreement(name: str) -> float:  # mean cosine between each trained row and its text start
        table = load_file(str(tmp_path / name / "embeddings.safetensors"))["embeddings"]
        return torch.nn.functional.cosine_similarity(table, start).mean().item()

    assert agreement("init") > 0.8
    assert abs(agreement("plain")) < 0.3
