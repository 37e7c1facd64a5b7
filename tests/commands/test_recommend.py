"""`mscg recommend` as a user drives it: self-contained model folders (moved, copied, old ones), a batch with bad
lines (`--on-error skip`, and every line checked before the model is loaded), lines without a user id, ids given as
JSON numbers, `--fallback popular`, and what each line's scores are (`score_kind`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mscg.artifacts.meta import input_record
from mscg.data.split import load_dataset
from mscg.popularity import train_counts
from tests.conftest import synthetic_dataset
from tests.helpers import (
    TINY_SASREC,
    Pipeline,
    assert_refused,
    build_tiny_pipeline,
    copy_artifact,
    edit_json,
    invoke,
    ok,
    one_thread,  # noqa: F401 (fixture: tiny models on one thread)
)

LINES = [{"user_id": f"x{k}", "history": [f"i{k}", f"i{k + 4}"]} for k in range(4)]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("recommend"))


def jsonl(path: Path, lines: list) -> Path:
    """A JSONL file of these objects (a string is written as it is: a bad line)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def recommend(model: Path, histories: Path, out: Path, *args) -> list[dict]:
    ok("recommend", model, "-i", histories, "-o", out, "-k", "5", "--device", "cpu", *args)
    return [json.loads(line) for line in out.read_text().splitlines()]


def evaluate(model: Path, data: Path, out: Path, *args) -> dict:
    ok("evaluate", model, "-d", data, "-o", out, "--device", "cpu", *args)
    metrics = json.loads(out.read_text())
    return {k: v for k, v in metrics.items() if k.startswith(("recall@", "ndcg@", "users"))}


# ---- self-contained model folders ------------------------------------------------------------------------

def test_the_model_folder_holds_its_codes_and_popularity(pipe):
    meta = json.loads((pipe.generator / "meta.json").read_text())
    assert meta["codes"] == "codes"  # relative: the folder can move
    assert input_record(pipe.generator / "codes")["sha256"] == input_record(pipe.codes)["sha256"]
    ds = load_dataset(pipe.data)
    for model in (pipe.generator, pipe.sasrec):
        counts = json.loads((model / "meta.json").read_text())["train_item_counts"]
        assert counts == train_counts(ds.split, len(ds.catalogue)).tolist()


def test_a_moved_model_folder_recommends_and_evaluates(pipe, tmp_path):
    """Copy the model, move the copy, take the original codes away: recommend and evaluate work from the
    folder alone and give what the original gave."""
    histories = jsonl(tmp_path / "h.jsonl", LINES)
    before = recommend(pipe.generator, histories, tmp_path / "before.jsonl")
    metrics = evaluate(pipe.generator, pipe.data, tmp_path / "before.json")
    copy_artifact(pipe.generator, tmp_path / "model")
    (tmp_path / "model").rename(tmp_path / "model2")
    hidden = tmp_path / "codes-elsewhere"
    shutil.move(pipe.codes, hidden)  # as good as deleted for the model; put back for the other tests
    try:
        assert recommend(tmp_path / "model2", histories, tmp_path / "after.jsonl") == before
        assert evaluate(tmp_path / "model2", pipe.data, tmp_path / "after.json") == metrics
        shutil.rmtree(tmp_path / "model2" / "codes")  # an incomplete folder says so, and --codes still works
        result = invoke("recommend", tmp_path / "model2", "-i", histories, "-o", tmp_path / "r.jsonl")
        assert_refused(result, 1, f"{tmp_path / 'model2' / 'codes'} is missing", "copy the whole directory",
                       "--codes", output=tmp_path / "r.jsonl")
        assert recommend(tmp_path / "model2", histories, tmp_path / "override.jsonl", "--codes", hidden) == before
    finally:
        shutil.move(hidden, pipe.codes)


def test_an_old_model_folder_loads_with_its_codes_passed(pipe, tmp_path):
    """A folder from before models carried their codes: meta.json names them by absolute path, no codes/
    inside, no training counts (so --fallback popular is refused). A folder's codes are read only inside it, so
    it is refused until --codes names them; then it recommends as before."""
    histories = jsonl(tmp_path / "h.jsonl", LINES)
    old = copy_artifact(pipe.generator, tmp_path / "old")
    shutil.rmtree(old / "codes")
    recorded = str(pipe.codes.resolve())

    def as_old(meta):
        meta["codes"] = recorded
        del meta["train_item_counts"]

    edit_json(old / "meta.json", as_old)
    result = invoke("recommend", old, "-i", histories, "-o", tmp_path / "r.jsonl")
    assert_refused(result, 1, f"meta.json names the codes {recorded!r}, which is an absolute path", "pass --codes",
                   output=tmp_path / "r.jsonl")
    assert recommend(old, histories, tmp_path / "old.jsonl", "--codes", pipe.codes) == \
        recommend(pipe.generator, histories, tmp_path / "new.jsonl")
    result = invoke("recommend", old, "-i", histories, "-o", tmp_path / "r.jsonl", "--codes", pipe.codes,
                    "--fallback", "popular")
    assert_refused(result, 2, "--fallback popular needs the model's training popularity", "records none",
                   output=tmp_path / "r.jsonl")


# ---- the history's items: left out by default, kept with --include-history ----------------------------------

@pytest.mark.parametrize("model", ["generator", "sasrec"])
def test_history_items_are_left_out_unless_included(pipe, tmp_path, model):
    """The whole catalogue asked for: by default every item but the history's (as `--exclude-history`
    says explicitly), with --include-history every item."""
    path, everything = getattr(pipe, model), "40"  # the synthetic catalogue's size
    histories = jsonl(tmp_path / "h.jsonl", LINES)
    default = recommend(path, histories, tmp_path / "default.jsonl", "-k", everything)
    assert recommend(path, histories, tmp_path / "explicit.jsonl", "-k", everything, "--exclude-history") == default
    kept = recommend(path, histories, tmp_path / "kept.jsonl", "-k", everything, "--include-history")
    for line, unseen, every in zip(LINES, default, kept):
        assert len(every["items"]) == 40 and set(line["history"]) <= set(every["items"])
        assert sorted(unseen["items"]) == sorted(set(every["items"]) - set(line["history"]))


def test_evaluate_says_which_protocol_it_used(pipe, tmp_path):
    for flag, words, excluded in (([], "history items kept in the ranking (paper protocol", False),
                                  (["--exclude-history"], "history items excluded from the ranking", True)):
        result = invoke("evaluate", pipe.sasrec, "-d", pipe.data, "-o", tmp_path / f"{excluded}.json", "--device",
                        "cpu", *flag)
        assert result.exit_code == 0, result.output
        assert words in result.stderr
        assert json.loads((tmp_path / f"{excluded}.json").read_text())["exclude_history"] is excluded


# ---- batches: bad lines, ids as numbers, users without a known item -----------------------------------------

BATCH = [
    LINES[0],
    {"user_id": 7.5, "history": ["i1"]},  # 2: a user_id that is no id
    "{not json",  # 3
    LINES[1],
    {"user_id": "x", "history": ["i0", "zz"]},  # 5: unknown item
    {"user_id": "y", "history": []},  # 6: no history item
    {"user_id": "z"},  # 7: no history
    LINES[2],
]


def test_bad_lines_fail_the_batch_by_default(pipe, tmp_path):
    histories = jsonl(tmp_path / "h.jsonl", BATCH)
    result = invoke("recommend", pipe.sasrec, "-i", histories, "-o", tmp_path / "r.jsonl")
    assert_refused(result, 1, "h.jsonl line 2", '"user_id" must be a string', output=tmp_path / "r.jsonl")


@pytest.mark.parametrize("model", ["generator", "sasrec"])
def test_on_error_skip_answers_the_good_lines(pipe, tmp_path, model):
    histories = jsonl(tmp_path / "h.jsonl", BATCH)
    expected = recommend(getattr(pipe, model), jsonl(tmp_path / "good.jsonl", LINES[:3]), tmp_path / "good.out")
    result = invoke("recommend", getattr(pipe, model), "-i", histories, "-o", tmp_path / "r.jsonl", "-k", "5",
                    "--device", "cpu", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()] == expected
    assert "skipped 5 of 8 input lines (lines 2, 3, 5, 6, 7)" in result.stderr
    assert 'the first: ' in result.stderr and 'h.jsonl line 2: "user_id" must be a string' in result.stderr


def test_skipped_lines_are_listed_up_to_five(pipe, tmp_path):
    histories = jsonl(tmp_path / "h.jsonl", [LINES[0]] + [{"user_id": "u"}] * 7)
    result = invoke("recommend", pipe.sasrec, "-i", histories, "-o", "-", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "skipped 7 of 8 input lines (lines 2, 3, 4, 5, 6, ...)" in result.stderr
    assert [json.loads(line)["user_id"] for line in result.stdout.splitlines()] == ["x0"]


def test_ids_as_json_numbers(tmp_path):
    """Numbers are read as their decimal strings: "user_id": 7 is "7", a history [101, 105] is ["101", "105"]."""
    data = synthetic_dataset(tmp_path)
    for name in ("items", "interactions"):
        path = data / f"{name}.jsonl"
        path.write_text(re.sub(r'"i(\d+)"', r'"10\1"', path.read_text()))  # i0 -> "100", i5 -> "105"
    ok("collab", "-d", data, "-o", tmp_path / "emb", "--model-out", tmp_path / "sasrec", *TINY_SASREC)
    numbers = recommend(tmp_path / "sasrec", jsonl(tmp_path / "n.jsonl", [{"user_id": 7, "history": [101, 105]}]),
                        tmp_path / "n.out")
    strings = recommend(tmp_path / "sasrec", jsonl(tmp_path / "s.jsonl", [{"user_id": "7", "history": ["101", "105"]}]),
                        tmp_path / "s.out")
    assert numbers == strings and numbers[0]["user_id"] == "7"


@pytest.mark.parametrize("model", ["generator", "sasrec"])
def test_fallback_popular(pipe, tmp_path, model):
    """A user with no known history item gets the training data's most popular items, marked as such."""
    ds = load_dataset(pipe.data)
    counts = train_counts(ds.split, len(ds.catalogue))
    order = sorted(range(len(counts)), key=lambda i: -counts[i])[:5]  # stable: ties in catalogue order
    histories = jsonl(tmp_path / "h.jsonl", [{"user_id": "new", "history": []}, {"user_id": "odd", "history": ["zz"]},
                                             LINES[0]])
    lines = recommend(getattr(pipe, model), histories, tmp_path / "r.jsonl", "--fallback", "popular",
                      "--skip-unknown")
    popular = {"items": [ds.catalogue.item_ids[i] for i in order], "scores": [float(counts[i]) for i in order],
               "score_kind": "popularity", "fallback": "popular"}
    assert lines[0] == {"user_id": "new", **popular} and lines[1] == {"user_id": "odd", **popular}
    assert "fallback" not in lines[2] and len(lines[2]["items"]) == 5
    assert lines[2]["score_kind"] == ("log-probability" if model == "generator" else "inner-product")


# ---- lines without a user id; the input checked before the model is loaded; what the scores are -------------

@pytest.mark.parametrize("model", ["generator", "sasrec"])
def test_user_id_is_optional(pipe, tmp_path, model):
    """A line without "user_id" is answered like one with it; its answer names its input line ("line": N, counted
    as the file's lines, blank ones too) where the user id would be."""
    named = recommend(getattr(pipe, model), jsonl(tmp_path / "named.jsonl", LINES[:3]), tmp_path / "named.out")
    bare = [{"history": line["history"]} for line in LINES[:3]]
    path = tmp_path / "bare.jsonl"
    path.write_text(json.dumps(bare[0]) + "\n\n" + json.dumps(LINES[1]) + "\n" + json.dumps(bare[2]) + "\n")
    lines = recommend(getattr(pipe, model), path, tmp_path / "bare.out")
    assert [line.get("user_id") for line in lines] == [None, "x1", None]
    assert [line.get("line") for line in lines] == [1, None, 4]
    assert [(line["items"], line["scores"]) for line in lines] == [(line["items"], line["scores"]) for line in named]


def no_model(monkeypatch):
    import mscg.commands.recommend

    monkeypatch.setattr(mscg.commands.recommend, "load", lambda *a, **k: pytest.fail("the model was loaded"))


@pytest.mark.parametrize("bad, needles", [
    ('{"history": ["i1"], "user_id": [1]}', ["h.jsonl line 9", '"user_id" must be a string']),  # a type
    ('{"history": ["i1", "zz"]}', ["h.jsonl line 9", "'zz' is not in the model's catalogue", "--skip-unknown"]),
])
def test_every_line_is_checked_before_the_model_is_loaded(pipe, tmp_path, monkeypatch, bad, needles):
    """A bad line far down the file fails at once: its fields and types, then its ids against the catalogue
    that the model folder's meta.json lists; the model (seconds to load) is never loaded."""
    no_model(monkeypatch)
    histories = jsonl(tmp_path / "h.jsonl", LINES * 2 + [bad])
    result = invoke("recommend", pipe.generator, "-i", histories, "-o", tmp_path / "r.jsonl")
    assert_refused(result, 1, *needles, output=tmp_path / "r.jsonl")


def test_fields_are_checked_on_every_line_before_ids(pipe, tmp_path, monkeypatch):
    """A line of the wrong shape is named before an unknown id on an earlier line: the file's syntax first."""
    no_model(monkeypatch)
    histories = jsonl(tmp_path / "h.jsonl", [{"history": ["zz"]}, LINES[0], {"history": "i1"}])
    result = invoke("recommend", pipe.sasrec, "-i", histories, "-o", tmp_path / "r.jsonl")
    assert_refused(result, 1, "h.jsonl line 3", '"history" must be a list', output=tmp_path / "r.jsonl")


def test_unknown_items_skipped_are_counted_in_english(pipe, tmp_path):
    for unknown, words in ((["zz"], "skipped 1 history item unknown"), (["zz", "yy"], "skipped 2 history items")):
        histories = jsonl(tmp_path / "h.jsonl", [{"user_id": "u", "history": ["i0", *unknown]}])
        result = invoke("recommend", pipe.sasrec, "-i", histories, "-o", "-", "--skip-unknown", "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert words in result.stderr
