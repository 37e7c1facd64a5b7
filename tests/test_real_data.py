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
    mscg("collab", "-d", data, "-o", w / "emb_collab", "--model-out", w / "sasrec", "--epochs", "5")
    mscg("quantize", "--modality", "text", "--embeddings", w / "emb_text", "-o", w / "q_text")
    mscg("quantize", "--modality", "collab", "--embeddings", w / "emb_collab", "-o", w / "q_collab")
    mscg("assign-codes", "-d", data, "-q", w / "q_text", "-q", w / "q_collab", "-o", w / "codes")
    mscg("train", "-d", data, "--codes", w / "codes", "-o", w / "gen", "--epochs", "1", "--valid-users", "300",
         "--max-history", "10", "--d-model", "64", "--d-ff", "256", "--batch-size", "512", "--lr", "4e-3")
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


@pytest.mark.skipif(not recbole_installed(), reason="recbole is not installed (pip install --no-deps recbole==1.2.1)")
def test_pipeline_sh_on_real_posters_with_some_missing(shared_data: Path, tmp_path: Path):
    """examples/pipeline.sh on a 200-item slice of MovieLens-100K + posters: text, RQ-DINO image codes (items without
    a poster get the image mask token), collab; metrics.json gains the image_only entry."""
    import os
    import shutil
    import subprocess
    import sys

    full, data, w = tmp_path / "full", tmp_path / "slice", tmp_path / "work"
    mscg("prepare", "recbole:ml-100k", "-o", full, "--images", shared_data / "ml-100k-posters" / "posters")
    items = [json.loads(line) for line in (full / "items.jsonl").read_text().splitlines()][:200]
    keep = {item["item_id"] for item in items}
    (data / "images").mkdir(parents=True)
    for item in items:  # the slice holds its own images (hard links where possible): images are read only inside
        if "image" in item:
            name = Path(item["image"]).name
            try:
                os.link(full / item["image"], data / "images" / name)
            except OSError:
                shutil.copyfile(full / item["image"], data / "images" / name)
            item["image"] = f"images/{name}"
    (data / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    lines = [line for line in (full / "interactions.jsonl").read_text().splitlines()
             if json.loads(line)["item_id"] in keep]
    (data / "interactions.jsonl").write_text("\n".join(lines) + "\n")
    without_poster = sum("image" not in item for item in items)
    assert 0 < without_poster < len(items)

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MSCG": f"{sys.executable} -m mscg", "SASREC_EPOCHS": "2",
           "GEN_EPOCHS": "1", "IMAGE_ARGS": "--epochs 1 --image-size 64",
           "TRAIN_ARGS": "--valid-users 100 --max-history 10 --d-model 64 --d-ff 256"}
    subprocess.run(["bash", str(repo / "examples" / "pipeline.sh"), str(data), str(w)], check=True, env=env,
                   capture_output=True)
    metrics = json.loads((w / "metrics.json").read_text())
    assert set(metrics) == {"sasrec", "sasrec_text_started", "mscgrec", "image_only", "fused", "fused_text_started"}
    assert json.loads((w / "preferred.json").read_text())["recommender"] in metrics
    codes = json.loads((w / "codes" / "meta.json").read_text())
    image = next(m for m in codes["modalities"] if m["name"] == "image")
    assert image["items_without_modality"] == without_poster
    assert min(image["stats"]["codebook_usage"]) > 0.25  # no collapsed codebook on real posters
    assert json.loads((w / "q_image" / "meta.json").read_text())["method"] == "rq-dino"
    seconds, peaks = (json.loads((w / name).read_text()) for name in ("stage_seconds.json", "stage_peak_mib.json"))
    assert set(seconds) == set(peaks) and {"embed-text", "collab", "train", "evaluate-fused"} <= set(peaks)
    assert all(v > 0 for v in seconds.values()) and all(100 < v < 8192 for v in peaks.values())  # a torch process
    for name, m in metrics.items():
        assert m["users"] > 100 and 0 <= m["ndcg@10"] <= m["recall@10"] <= 1, (name, m)
