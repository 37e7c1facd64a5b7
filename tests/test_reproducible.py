"""Reproducibility: same inputs + same --seed give byte-identical artifacts and identical metrics on
CPU, and every artifact records what it was made from (paths + digests, seed, mscg version, command).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import mscg
from mscg.artifacts import meta as meta_module
from mscg.artifacts.meta import file_digest, input_record
from tests.helpers import TINY_GENERATOR, TINY_SASREC, build_tiny_pipeline, invoke, ok, one_thread  # noqa: F401


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("reproducible"))


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_assign_codes_is_byte_identical(pipe, tmp_path):
    """Run twice into the same path (the second with --force): not one byte differs."""
    out = tmp_path / "codes"
    args = ["assign-codes", "-d", pipe.data, "-q", pipe.q_text, "-q", pipe.q_collab, "-o", out, "--seed", "7"]
    ok(*args)
    first = files(out)
    ok(*args, "--force")
    assert files(out) == first
    assert files(out)["codes.safetensors"] == (pipe.codes / "codes.safetensors").read_bytes()


def test_rq_kmeans_is_byte_identical(pipe, tmp_path):
    for name in ("a", "b"):
        ok("quantize", "--modality", "text", "--embeddings", pipe.emb_text, "-o", tmp_path / name, "--n-levels", "2",
           "--seed", "5")
    assert files(tmp_path / "a") == files(tmp_path / "b")


def test_collab_is_byte_identical(pipe, tmp_path):
    for name in ("a", "b"):
        ok("collab", "-d", pipe.data, "-o", tmp_path / f"emb_{name}", "--model-out", tmp_path / f"sasrec_{name}",
           *TINY_SASREC)
    assert files(tmp_path / "emb_a") == files(tmp_path / "emb_b")
    assert (tmp_path / "sasrec_a" / "model.safetensors").read_bytes() == \
        (tmp_path / "sasrec_b" / "model.safetensors").read_bytes()
    assert (pipe.sasrec / "model.safetensors").read_bytes() == \
        (tmp_path / "sasrec_a" / "model.safetensors").read_bytes()


def test_train_is_byte_identical(pipe, tmp_path):
    ok("train", "-d", pipe.data, "--codes", pipe.codes, "-o", tmp_path / "generator", *TINY_GENERATOR)
    assert (tmp_path / "generator" / "model.safetensors").read_bytes() == \
        (pipe.generator / "model.safetensors").read_bytes()
    history = [json.loads((d / "meta.json").read_text())["training"]["history"] for d in (tmp_path / "generator",
                                                                                          pipe.generator)]
    assert history[0] == history[1]


def test_text_embeddings_are_byte_identical(pipe, tiny_text_model, tmp_path):
    for name in ("a", "b"):
        ok("embed", "--modality", "text", "-d", pipe.data, "-o", tmp_path / name, "--model", tiny_text_model,
           "--device", "cpu")
    assert files(tmp_path / "a") == files(tmp_path / "b")


@pytest.mark.parametrize("model", ["generator", "sasrec"])
def test_evaluate_gives_identical_metrics(pipe, tmp_path, model):
    runs = []
    for name in ("a", "b"):
        ok("evaluate", getattr(pipe, model), "-d", pipe.data, "-o", tmp_path / f"{name}.json", "--device", "cpu")
        metrics = json.loads((tmp_path / f"{name}.json").read_text())
        assert metrics.pop("eval_seconds") > 0
        runs.append(metrics)
    assert runs[0] == runs[1]
    assert {"recall@5", "recall@10", "ndcg@5", "ndcg@10"} <= set(runs[0])


def test_recommend_gives_identical_lists(pipe, tmp_path):
    (tmp_path / "h.jsonl").write_text("".join(json.dumps({"user_id": f"x{k}", "history": [f"i{k}", f"i{k + 4}"]}) + "\n"
                                              for k in range(5)))
    outputs = []
    for name in ("a", "b"):
        ok("recommend", pipe.generator, "-i", tmp_path / "h.jsonl", "-o", tmp_path / f"{name}.jsonl", "-k", "5")
        outputs.append((tmp_path / f"{name}.jsonl").read_bytes())
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") == 5


# ---- what artifacts record ---------------------------------------------------------------------------------

def check_provenance(provenance: dict, inputs: dict[str, Path], seed) -> None:
    assert provenance["mscg_version"] == mscg.__version__
    assert provenance["seed"] == seed
    assert "command" in provenance
    assert set(provenance["inputs"]) == set(inputs)
    for name, path in inputs.items():
        record = provenance["inputs"][name]
        assert record["path"] == str(Path(path).resolve())
        assert record["sha256"] == input_record(path)["sha256"]


def test_artifacts_record_their_inputs(pipe):
    w, items, interactions = pipe.work, pipe.data / "items.jsonl", pipe.data / "interactions.jsonl"
    meta = {name: json.loads((w / name / "meta.json").read_text())
            for name in ("emb_text", "q_text", "codes", "generator", "emb_sasrec", "sasrec")}
    check_provenance(meta["emb_text"]["provenance"], {"items": items, "vectors": w / "text.npy",
                                                      "ids": w / "ids.txt"}, None)
    check_provenance(meta["q_text"]["provenance"], {"embeddings": w / "emb_text"}, 0)
    check_provenance(meta["codes"]["provenance"], {"items": items, "quantizer_text": w / "q_text",
                                                   "quantizer_collab": w / "q_collab"}, 0)
    check_provenance(meta["generator"]["provenance"], {"items": items, "interactions": interactions,
                                                       "codes": w / "codes"}, 0)
    for name in ("emb_sasrec", "sasrec"):
        check_provenance(meta[name]["provenance"], {"items": items, "interactions": interactions}, 0)
    assert meta["codes"]["provenance"]["inputs"]["items"]["sha256"] == file_digest(items)


def test_metrics_record_their_inputs(pipe, tmp_path):
    ok("evaluate", pipe.sasrec, "-d", pipe.data, "-o", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    check_provenance(metrics["provenance"], {"model": pipe.sasrec, "items": pipe.data / "items.jsonl",
                                             "interactions": pipe.data / "interactions.jsonl"}, None)


def test_the_command_line_is_recorded(pipe, tmp_path, monkeypatch, capsys):
    """`mscg ...` (cli.main) writes its own command line into the artifact."""
    from mscg.cli import main

    monkeypatch.setattr(meta_module, "_command_line", None)
    argv = ["quantize", "--modality", "text", "--embeddings", str(pipe.emb_text), "-o", str(tmp_path / "q"),
            "--seed", "4"]
    monkeypatch.setattr(sys, "argv", ["mscg", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    provenance = json.loads((tmp_path / "q" / "meta.json").read_text())["provenance"]
    assert provenance["command"] == ["mscg", *argv]
    assert provenance["seed"] == 4
