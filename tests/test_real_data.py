"""Real data end to end: MovieLens-100K from the recbole wheel, Amazon Scientific from ../shared/data.

Marked slow (minutes on 2 CPU cores); CI runs them. Short training settings: the assertions check that
each model learned far more than chance, not the benchmark numbers (see BENCHMARKS.md for those).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mscg.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def mscg(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result.output


def recbole_installed() -> bool:
    try:
        import recbole  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not recbole_installed(), reason="recbole is not installed (pip install --no-deps recbole==1.2.1)")
def test_movielens_100k_pipeline(tmp_path: Path):
    data, w = tmp_path / "ml-100k", tmp_path / "work"
    out = mscg("prepare", "recbole:ml-100k", "-o", data)
    assert "1,682 items" in out and "100,000 interactions" in out and "943 users" in out
    mscg("embed", "--modality", "text", "-d", data, "-o", w / "emb_text")
    mscg("collab", "-d", data, "-o", w / "emb_collab", "--model-out", w / "sasrec", "--epochs", "8")
    mscg("quantize", "--modality", "text", "--embeddings", w / "emb_text", "-o", w / "q_text")
    mscg("quantize", "--modality", "collab", "--embeddings", w / "emb_collab", "-o", w / "q_collab")
    mscg("assign-codes", "-d", data, "-q", w / "q_text", "-q", w / "q_collab", "-o", w / "codes")
    mscg("train", "-d", data, "--codes", w / "codes", "-o", w / "gen", "--epochs", "1", "--valid-users", "300")
    chance = 10 / 1682
    for model in ("sasrec", "gen"):
        mscg("evaluate", w / model, "-d", data, "-o", w / f"{model}.json")
        metrics = json.loads((w / f"{model}.json").read_text())
        assert metrics["users"] == 943
        assert metrics["recall@10"] > 5 * chance, (model, metrics)


def test_amazon_scientific_converts_and_imports_image_features(shared_data: Path, tmp_path: Path):
    source = shared_data / "amazon-scientific"
    data = tmp_path / "sci"
    out = mscg("prepare", source, "-o", data)
    assert "1,585 items" in out and "19,712 interactions" in out and "2,928 users" in out
    first = json.loads((data / "items.jsonl").read_text().splitlines()[0])
    assert first["item_id"] == "B00O47ILVA" and "Reacher" in first["text"]
    mscg("import-embeddings", "-d", data, "--modality", "image", "--vectors", source / "Scientific.feat3CLS",
         "--dim", "512", "--ids", source / "Scientific.item2index", "-o", tmp_path / "emb_image")
    meta = json.loads((tmp_path / "emb_image" / "meta.json").read_text())
    assert meta["count"] == 1585 and meta["dim"] == 512 and meta["modality"] == "image"
    mscg("quantize", "--modality", "image", "--embeddings", tmp_path / "emb_image", "-o", tmp_path / "q_image")
