"""`mscg plot`: a model folder, a codes folder or evaluation files each become a PNG that shows something;
anything else, a model without records and a taken output are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import (
    assert_refused,
    build_tiny_pipeline,
    copy_artifact,
    edit_json,
    invoke,
    ok,
    one_thread,  # noqa: F401 (a fixture)
)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    pipe = build_tiny_pipeline(tmp_path_factory.mktemp("plot"))
    for model in ("generator", "sasrec"):
        ok("evaluate", pipe.work / model, "-d", pipe.data, "-o", pipe.work / f"eval_{model}.json", "--device", "cpu")
    return pipe


def assert_picture(path: Path, min_colours: int = 3) -> tuple[int, int]:
    """A PNG PIL opens, of some size, not blank: several colours, and ink covering part of it."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= min_colours
    assert 0.01 < (pixels.min(axis=2) < 200).mean() < 0.9  # lines and bars on a white page
    return pixels.shape[:2]


def test_a_model_folder_gives_its_training_curves(pipe, tmp_path):
    out = tmp_path / "curves.png"
    output = ok("plot", pipe.work / "sasrec", "-o", out)
    assert "training curves" in output
    height, _ = assert_picture(out)
    ok("plot", pipe.work / "generator", "-o", out, "--force")  # a generator too; --force replaces
    assert assert_picture(out)[0] == height  # loss, validation and per-third panels alike


def test_a_codes_folder_gives_codebook_usage(pipe, tmp_path):
    out = tmp_path / "codes.png"
    assert "codebook usage" in ok("plot", pipe.codes, "-o", out)
    assert_picture(out)


def test_evaluation_files_give_grouped_bars(pipe, tmp_path):
    out = tmp_path / "metrics.png"
    ok("plot", pipe.work / "eval_generator.json", f"sasrec={pipe.work / 'eval_sasrec.json'}", "-o", out)
    one = assert_picture(out)
    compare = tmp_path / "metrics.json"
    ok("compare", f"mscgrec={pipe.work / 'eval_generator.json'}", f"sasrec={pipe.work / 'eval_sasrec.json'}",
       "-o", compare)
    ok("plot", compare, "-o", tmp_path / "compare.png")
    assert assert_picture(tmp_path / "compare.png") == one


def test_evaluation_files_are_named_as_compare_names_them(pipe, tmp_path):
    """One reader for both commands: files of the same name in two folders are two runs (eval_sasrec and
    eval_sasrec-2), where plot used to refuse them; compare lists the runs under the same names."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "eval_sasrec.json").write_bytes((pipe.work / "eval_sasrec.json").read_bytes())
    files = [pipe.work / "eval_sasrec.json", other / "eval_sasrec.json"]
    ok("plot", *files, "-o", tmp_path / "two.png")
    assert_picture(tmp_path / "two.png")
    result = invoke("compare", *files, "-o", "-")
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)) == ["eval_sasrec", "eval_sasrec-2"]


def test_a_model_trained_before_records_is_refused(pipe, tmp_path):
    old = copy_artifact(pipe.work / "sasrec", tmp_path / "old")
    (old / "training_log.csv").unlink()

    def forget(meta):
        meta["training"]["history"] = [{k: v for k, v in h.items() if k not in ("loss", "lr", "step")}
                                       for h in meta["training"]["history"]]
        del meta["training"]["steps"]
    edit_json(old / "meta.json", forget)
    out = tmp_path / "x.png"
    assert_refused(invoke("plot", old, "-o", out), 1, str(old), "before mscg recorded losses", "retrain",
                   "evaluation file", output=out)


@pytest.mark.parametrize("case", ["jsonl", "folder", "missing", "rq-kmeans", "not-metrics", "two-folders"])
def test_inputs_that_are_none_of_these_are_refused_in_one_line(pipe, tmp_path, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    given, needles = {
        "jsonl": ([pipe.data / "items.jsonl"], ["items.jsonl", "evaluation"]),
        "folder": ([tmp_path / "empty"], ["empty", "no meta.json", "codes folder"]),
        "missing": ([tmp_path / "nope"], ["nope", "does not exist"]),
        "rq-kmeans": ([pipe.q_text], ["q_text", "k-means", "codes"]),
        "not-metrics": ([tmp_path / "other.json"], ["other.json", "mscg evaluate -o"]),
        "two-folders": ([pipe.codes, pipe.work / "sasrec"], ["one model or codes folder"]),
    }[case]
    out = tmp_path / "x.png"
    result = invoke("plot", *given, "-o", out)
    assert result.exit_code != 0
    assert_refused(result, result.exit_code, *needles, output=out)


def test_the_output_is_checked_as_every_commands_is(pipe, tmp_path):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"mine")
    assert_refused(invoke("plot", pipe.codes, "-o", taken), 2, "already exists", "--force")
    assert taken.read_bytes() == b"mine"
    assert_refused(invoke("plot", pipe.codes, "-o", tmp_path / "x.txt"), 2, "PNG", output=tmp_path / "x.txt")
    inside = pipe.codes / "inside.png"
    assert_refused(invoke("plot", pipe.codes, "-o", inside), 2, "inside the input", output=inside)
