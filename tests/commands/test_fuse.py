"""`mscg fuse` says plainly what the fused model ranks by: a part with weight 0 is left out, and with one part left
the model ranks as that part alone (stderr says so, meta.json records `ranked_by`); its recommendations are scored
as "fused"."""

from __future__ import annotations

import json

import pytest

import mscg.recommenders.fused
from mscg.commands.fuse import weighting_text
from tests.helpers import Pipeline, build_tiny_pipeline, invoke, ok, one_thread  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("fuse"))


def fuse(pipe: Pipeline, out, *args) -> tuple[str, dict]:
    result = invoke("fuse", pipe.generator, pipe.sasrec, "-d", pipe.data, "-o", out, "--device", "cpu", *args)
    assert result.exit_code == 0, result.output
    return result.stderr, json.loads((out / "meta.json").read_text())


@pytest.mark.parametrize("weight, words, ranked_by", [
    ("0", "weights 0 on the generator, 1 on SASRec (given): the fused model ranks by SASRec alone", ["sasrec"]),
    ("1", "weights 1 on the generator, 0 on SASRec (given): the fused model ranks by the generator alone",
     ["generator"]),
    ("0.4", "weights 0.4 on the generator, 0.6 on SASRec (given)", ["generator", "sasrec"]),
])
def test_the_weights_are_said_plainly_and_recorded(pipe, tmp_path, weight, words, ranked_by):
    stderr, meta = fuse(pipe, tmp_path / "fused", "--weight", weight)
    line = next(line for line in stderr.splitlines() if line.startswith("wrote "))
    assert line.endswith(words), line
    assert meta["ranked_by"] == ranked_by


def test_a_weight_0_chosen_on_validation_says_it_is_no_fusion(pipe, tmp_path, monkeypatch):
    """Where validation picks weight 0 (here the only weight tried), `fuse` does not report it as a fusion."""
    monkeypatch.setattr(mscg.recommenders.fused, "WEIGHTS", (0.0,))
    stderr, meta = fuse(pipe, tmp_path / "fused")
    assert "wrote " in stderr and "weights 0 on the generator, 1 on SASRec (best on validation): the fused model " \
        "ranks by SASRec alone" in stderr
    assert meta["ranked_by"] == ["sasrec"] and meta["weight_chosen_on"] == "valid"


def test_three_parts_name_the_one_left_out():
    parts = ["generator", "sasrec", "head"]
    assert weighting_text(parts, [0, 0.6, 0.4], "best on validation") == (
        "weights 0 on the generator, 0.6 on SASRec, 0.4 on the dense head (best on validation): the generator gets "
        "no weight; the fused model ranks by SASRec and the dense head")
    assert weighting_text(parts, [0, 0, 1], "given").endswith(": the fused model ranks by the dense head alone")
    assert weighting_text(parts, [0.2, 0.4, 0.4], "given") == (
        "weights 0.2 on the generator, 0.4 on SASRec, 0.4 on the dense head (given)")


def test_fused_recommendations_say_what_their_scores_are(pipe, tmp_path):
    fuse(pipe, tmp_path / "fused", "--weight", "0.5")
    (tmp_path / "h.jsonl").write_text(json.dumps({"history": ["i0", "i4"]}) + "\n")
    ok("recommend", tmp_path / "fused", "-i", tmp_path / "h.jsonl", "-o", tmp_path / "r.jsonl", "-k", "3",
       "--device", "cpu")
    line = json.loads((tmp_path / "r.jsonl").read_text())
    assert line["score_kind"] == "fused" and len(line["items"]) == 3 and line["line"] == 1
