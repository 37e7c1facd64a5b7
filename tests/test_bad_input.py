"""Every bad input gets one clear line on stderr, the right exit code, no traceback and no output.

One test per case: JSONL syntax, required fields and types, duplicate and unknown items, empty text,
bad images, non-finite and mismatched embeddings, codes that do not fit a model, model directories of
the wrong kind or a newer schema, short users, an empty dataset, invalid flags, files that would be
unpickled, and Ctrl-C. Exit codes: 1 for data errors, 2 for usage errors.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mscg.artifacts.atomic import partial_path
from mscg.cli import app
from mscg.commands import _common
from tests.conftest import synthetic_dataset, write_jsonl

runner = CliRunner()

TINY_SASREC = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--epochs", "1", "--max-history", "10",
               "--device", "cpu"]
TINY_GENERATOR = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--epochs", "1",
                  "--batch-size", "64", "--max-history", "5", "--valid-users", "10", "--beam-size", "10",
                  "--device", "cpu"]


# ---- helpers shared with test_reproducible.py and test_resume.py ----------------------------------

def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def ok(*args) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result.output


@dataclass
class Pipeline:
    data: Path
    work: Path

    def __getattr__(self, name: str) -> Path:  # pipe.codes -> work/codes
        return self.work / name


def structured_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Vectors in four clusters (the synthetic genres), so that k-means codes mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim))
    return (centres[np.arange(n) % 4] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def build_tiny_pipeline(root: Path, *, generator: bool = True, sasrec: bool = True) -> Pipeline:
    """A cheap pipeline: imported text/collab vectors -> rq-kmeans -> codes (-> generator, SASRec), ~1 epoch."""
    data = synthetic_dataset(root)
    work = root / "work"
    work.mkdir()
    ids = [json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()]
    (work / "ids.txt").write_text("\n".join(ids) + "\n")
    for seed, modality in enumerate(("text", "collab")):
        np.save(work / f"{modality}.npy", structured_vectors(len(ids), 8, seed))
        ok("import-embeddings", "-d", data, "--vectors", work / f"{modality}.npy", "--ids", work / "ids.txt",
           "--modality", modality, "-o", work / f"emb_{modality}")
        ok("quantize", "--modality", modality, "--embeddings", work / f"emb_{modality}", "-o", work / f"q_{modality}",
           "--n-levels", "2", "--device", "cpu")
    ok("assign-codes", "-d", data, "-q", work / "q_text", "-q", work / "q_collab", "-o", work / "codes",
       "--device", "cpu")
    if generator:
        ok("train", "-d", data, "--codes", work / "codes", "-o", work / "generator", *TINY_GENERATOR)
    if sasrec:
        ok("collab", "-d", data, "-o", work / "emb_sasrec", "--model-out", work / "sasrec", *TINY_SASREC)
    return Pipeline(data, work)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest (and least disturbed by other jobs) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_refused(result, code: int, *needles: str, output: Path | None = None) -> str:
    """Exit `code`, exactly one `error:` line (the last on stderr) holding every needle, no traceback,
    and nothing at `output` (nor its partial sibling)."""
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    if output is not None:
        assert not output.exists(), f"{output} was left behind"
        assert not partial_path(output).exists(), f"{partial_path(output)} was left behind"
    return errors[0]


def set_line(path: Path, line_no: int, text: str | bytes) -> Path:
    """Replace line `line_no` (1-based) of a JSONL file."""
    lines = path.read_bytes().splitlines()
    lines[line_no - 1] = text.encode() if isinstance(text, str) else text
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


class Evil:
    """A pickle that, when loaded, creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("bad-input"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A fresh copy of the synthetic dataset, to break."""
    return synthetic_dataset(tmp_path)


def embed(data: Path, out: Path, *extra):
    return invoke("embed", "--modality", "text", "-d", data, "-o", out, "--device", "cpu", *extra)


def collab(data: Path, out: Path, *extra):
    return invoke("collab", "-d", data, "-o", out, *TINY_SASREC, *extra)


# ---- JSONL syntax (file:line) ---------------------------------------------------------------------

def test_items_malformed_json_names_file_and_line(data, tmp_path):
    set_line(data / "items.jsonl", 3, '{"item_id": "i2", "text": "x"')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 3", "malformed JSON",
                   output=tmp_path / "out")


def test_interactions_malformed_json_names_file_and_line(data, tmp_path):
    set_line(data / "interactions.jsonl", 5, "user_id=u1 item_id=i1")
    assert_refused(collab(data, tmp_path / "out"), 1, "interactions.jsonl line 5", "malformed JSON",
                   output=tmp_path / "out")


def test_jsonl_line_that_is_not_an_object(data, tmp_path):
    set_line(data / "items.jsonl", 2, '["i1", "text"]')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 2", "expected a JSON object, found list",
                   output=tmp_path / "out")


def test_jsonl_not_utf8(data, tmp_path):
    set_line(data / "items.jsonl", 4, b'{"item_id": "i3", "text": "caf\xe9"}')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 4", "not valid UTF-8",
                   output=tmp_path / "out")


def test_jsonl_nan_is_not_json(data, tmp_path):
    set_line(data / "interactions.jsonl", 1, '{"user_id": "u0", "item_id": "i0", "timestamp": NaN}')
    assert_refused(collab(data, tmp_path / "out"), 1, "interactions.jsonl line 1", "NaN is not valid JSON",
                   output=tmp_path / "out")


def test_jsonl_lone_surrogate_escape(data, tmp_path):
    set_line(data / "items.jsonl", 2, '{"item_id": "i1", "text": "bad \\ud800 escape"}')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 2", "surrogate", output=tmp_path / "out")


def test_collab_init_embeddings_of_another_catalogue(data, tmp_path):
    from mscg.artifacts.embeddings import Embeddings, save_embeddings

    other = tmp_path / "emb_other"
    other.mkdir()
    save_embeddings(other, Embeddings("text", ["x0", "x1", "x2"], torch.randn(3, 8)), source={}, provenance={})
    assert_refused(collab(data, tmp_path / "out", "--init-embeddings", other), 1, "emb_other",
                   "cover 0 of the dataset's 40 items", output=tmp_path / "out")


# ---- missing, empty files --------------------------------------------------------------------------

def test_missing_items_file(data, tmp_path):
    (data / "items.jsonl").unlink()
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl does not exist", output=tmp_path / "out")


def test_data_is_not_a_directory(data, tmp_path):
    assert_refused(collab(data / "items.jsonl", tmp_path / "out"), 1, "--data", "is not a directory",
                   "mscg prepare", output=tmp_path / "out")


def test_zero_byte_items_file(data, tmp_path):
    (data / "items.jsonl").write_bytes(b"")
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl holds no items", output=tmp_path / "out")


def test_zero_byte_interactions_file(data, tmp_path):
    (data / "interactions.jsonl").write_bytes(b"")
    assert_refused(collab(data, tmp_path / "out"), 1, "interactions.jsonl holds no interactions",
                   output=tmp_path / "out")


# ---- required fields and their types ------------------------------------------------------------------

def test_item_without_item_id(data, tmp_path):
    set_line(data / "items.jsonl", 2, '{"text": "an item without id"}')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 2", 'missing "item_id"',
                   output=tmp_path / "out")


def test_interaction_without_user_id(data, tmp_path):
    set_line(data / "interactions.jsonl", 7, '{"item_id": "i1", "timestamp": 5}')
    assert_refused(collab(data, tmp_path / "out"), 1, "interactions.jsonl line 7", 'missing "user_id"',
                   output=tmp_path / "out")


def test_item_id_that_is_a_number(data, tmp_path):
    set_line(data / "items.jsonl", 8, '{"item_id": 7, "text": "numeric id"}')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 8", '"item_id" must be a string',
                   "quote it", output=tmp_path / "out")


def test_interaction_item_id_that_is_a_number(data, tmp_path):
    set_line(data / "interactions.jsonl", 3, '{"user_id": "u1", "item_id": 3, "timestamp": 5}')
    assert_refused(collab(data, tmp_path / "out"), 1, "interactions.jsonl line 3", '"item_id" must be a string',
                   output=tmp_path / "out")


def test_text_that_is_not_a_string(data, tmp_path):
    set_line(data / "items.jsonl", 5, '{"item_id": "i4", "text": ["a", "list"]}')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 5", '"text" must be a string',
                   output=tmp_path / "out")


def test_timestamp_that_is_not_a_number(data, tmp_path):
    set_line(data / "interactions.jsonl", 2, '{"user_id": "u1", "item_id": "i1", "timestamp": "yesterday"}')
    assert_refused(collab(data, tmp_path / "out"), 1, "interactions.jsonl line 2",
                   '"timestamp" must be a finite number', output=tmp_path / "out")


def test_timestamp_on_some_lines_only(data, tmp_path):
    set_line(data / "interactions.jsonl", 9, '{"user_id": "u1", "item_id": "i1"}')
    assert_refused(collab(data, tmp_path / "out"), 1, "interactions.jsonl line 9", "timestamp",
                   "every line a timestamp or none", output=tmp_path / "out")


# ---- duplicate and unknown items ------------------------------------------------------------------------

def test_duplicate_item_ids(data, tmp_path):
    set_line(data / "items.jsonl", 6, '{"item_id": "i0", "text": "again"}')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 6", "'i0' already appears on line 1",
                   "unique", output=tmp_path / "out")


def test_interaction_on_unknown_item(data, tmp_path):
    set_line(data / "interactions.jsonl", 4, '{"user_id": "u1", "item_id": "nope", "timestamp": 5}')
    assert_refused(collab(data, tmp_path / "out"), 1, "interactions.jsonl line 4", "'nope' is not in",
                   "items.jsonl", output=tmp_path / "out")


# ---- empty or whitespace-only text -------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "  \t "])
def test_empty_or_whitespace_text(data, tmp_path, text):
    set_line(data / "items.jsonl", 4, json.dumps({"item_id": "i3", "text": text}))
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 4", "\"text\" of item 'i3' is empty",
                   "omit the field", output=tmp_path / "out")


def test_whitespace_item_id(data, tmp_path):
    set_line(data / "items.jsonl", 4, '{"item_id": "   ", "text": "x"}')
    assert_refused(embed(data, tmp_path / "out"), 1, "items.jsonl line 4", '"item_id" is empty',
                   output=tmp_path / "out")


def test_no_item_has_text(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "items.jsonl", [{"item_id": f"i{k}"} for k in range(3)])
    write_jsonl(data / "interactions.jsonl", [{"user_id": "u", "item_id": f"i{k}"} for k in range(3)])
    assert_refused(embed(data, tmp_path / "out"), 1, 'no item has a "text" field', output=tmp_path / "out")


# ---- images (the image encoder is another module; skipped until it imports) ------------------------------

def _image_module():
    return pytest.importorskip("mscg.encoders.image", reason="mscg.encoders.image does not import yet")


def _image_data(tmp_path: Path, bad: str) -> tuple[Path, Path]:
    """Two items: i0 with a bad image of kind `bad`, i1 with a good one. Returns (data dir, bad path)."""
    from PIL import Image

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(data / "img" / "good.png")
    bad_path = data / "img" / "bad.jpg"
    if bad == "corrupt":
        bad_path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    elif bad == "zero-byte":
        bad_path.write_bytes(b"")
    elif bad == "unreadable":
        bad_path.mkdir()  # a directory where a file should be: cannot be opened, even by root
    write_jsonl(data / "items.jsonl", [{"item_id": "i0", "image": "img/bad.jpg"},
                                       {"item_id": "i1", "image": "img/good.png"}])
    write_jsonl(data / "interactions.jsonl", [{"user_id": "u", "item_id": i} for i in ("i0", "i1", "i0")])
    return data, bad_path


@pytest.mark.parametrize("bad", ["missing", "unreadable", "corrupt", "zero-byte"])
def test_bad_image(tmp_path, bad):
    _image_module()
    data, bad_path = _image_data(tmp_path, bad)
    out = tmp_path / "out"
    result = invoke("embed", "--modality", "image", "-d", data, "-o", out, "--device", "cpu")
    assert_refused(result, 1, "'i0'", str(bad_path), "--skip-bad-images", output=out)


def test_bad_image_skipped_on_request(tmp_path):
    _image_module()
    data, _ = _image_data(tmp_path, "corrupt")
    out = tmp_path / "out"
    result = invoke("embed", "--modality", "image", "-d", data, "-o", out, "--device", "cpu", "--skip-bad-images")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["item_ids"] == ["i1"]
    assert "1 unreadable images skipped" in result.stderr


# ---- embeddings: non-finite values, item ids that do not match -------------------------------------------

def test_import_embeddings_with_nan(pipe, tmp_path):
    vectors = structured_vectors(40, 8, 0)
    vectors[2, 3] = np.nan
    np.save(tmp_path / "v.npy", vectors)
    out = tmp_path / "out"
    result = invoke("import-embeddings", "-d", pipe.data, "--vectors", tmp_path / "v.npy", "--ids",
                    pipe.work / "ids.txt", "--modality", "text", "-o", out)
    assert_refused(result, 1, "v.npy", "item 'i2'", "NaN or infinite", output=out)


def test_embeddings_artifact_with_inf(pipe, tmp_path):
    emb = copy_artifact(pipe.emb_text, tmp_path / "emb")
    tensors = load_file(emb / "embeddings.safetensors")
    tensors["embeddings"][5, 0] = float("inf")
    save_file(tensors, emb / "embeddings.safetensors")
    out = tmp_path / "out"
    result = invoke("quantize", "--modality", "text", "--embeddings", emb, "-o", out)
    assert_refused(result, 1, str(emb), "item 'i5'", "NaN or infinite", output=out)


def test_embeddings_meta_lists_fewer_ids_than_rows(pipe, tmp_path):
    emb = copy_artifact(pipe.emb_text, tmp_path / "emb")
    edit_json(emb / "meta.json", lambda m: m["item_ids"].pop())
    out = tmp_path / "out"
    result = invoke("quantize", "--modality", "text", "--embeddings", emb, "-o", out)
    assert_refused(result, 1, str(emb), "meta.json lists 39 item ids", output=out)


def test_embeddings_meta_lists_an_id_twice(pipe, tmp_path):
    emb = copy_artifact(pipe.emb_text, tmp_path / "emb")
    edit_json(emb / "meta.json", lambda m: m["item_ids"].__setitem__(3, "i0"))
    out = tmp_path / "out"
    result = invoke("quantize", "--modality", "text", "--embeddings", emb, "-o", out)
    assert_refused(result, 1, str(emb), "item id 'i0' twice", output=out)


def test_embeddings_items_not_in_catalogue(pipe, tmp_path):
    emb = copy_artifact(pipe.emb_text, tmp_path / "emb")
    edit_json(emb / "meta.json", lambda m: m["item_ids"].__setitem__(0, "zz"))
    out = tmp_path / "out"
    result = invoke("assign-codes", "-d", pipe.data, "-q", pipe.q_text, "--embeddings", f"text={emb}", "-o", out)
    assert_refused(result, 1, str(emb), "'zz'", "items.jsonl", "same items.jsonl", output=out)


def test_embeddings_of_another_dimension(pipe, tmp_path):
    np.save(tmp_path / "v.npy", structured_vectors(40, 4, 0))
    ok("import-embeddings", "-d", pipe.data, "--vectors", tmp_path / "v.npy", "--ids", pipe.work / "ids.txt",
       "--modality", "text", "-o", tmp_path / "emb4")
    out = tmp_path / "out"
    result = invoke("assign-codes", "-d", pipe.data, "-q", pipe.q_text, "--embeddings",
                    f"text={tmp_path / 'emb4'}", "-o", out)
    assert_refused(result, 1, "4-d vectors", "8-d", output=out)


def test_embeddings_of_another_modality(pipe, tmp_path):
    out = tmp_path / "out"
    result = invoke("quantize", "--modality", "collab", "--embeddings", pipe.emb_text, "-o", out)
    assert_refused(result, 2, "holds text embeddings, not collab", "--modality text", output=out)


def test_import_ids_not_in_catalogue(pipe, tmp_path):
    ids = (pipe.work / "ids.txt").read_text().replace("i7\n", "ghost\n")
    (tmp_path / "ids.txt").write_text(ids)
    out = tmp_path / "out"
    result = invoke("import-embeddings", "-d", pipe.data, "--vectors", pipe.work / "text.npy", "--ids",
                    tmp_path / "ids.txt", "--modality", "text", "-o", out)
    assert_refused(result, 1, "ids.txt", "'ghost'", "not in", output=out)


def test_import_ids_fewer_than_rows(pipe, tmp_path):
    (tmp_path / "ids.txt").write_text("\n".join(f"i{k}" for k in range(39)) + "\n")
    out = tmp_path / "out"
    result = invoke("import-embeddings", "-d", pipe.data, "--vectors", pipe.work / "text.npy", "--ids",
                    tmp_path / "ids.txt", "--modality", "text", "-o", out)
    assert_refused(result, 1, "ids.txt", "1 of the 40 vector rows", "row 39", output=out)


# ---- codes that do not match a model (vocabulary, modalities, item set) ------------------------------------

@pytest.fixture(scope="module")
def other_codes(pipe, tmp_path_factory) -> dict[str, Path]:
    """Codes with another vocabulary (codebook size 4), and text-only codes."""
    root = tmp_path_factory.mktemp("other-codes")
    ok("quantize", "--modality", "text", "--embeddings", pipe.emb_text, "-o", root / "q4", "--n-levels", "2",
       "--codebook-size", "4")
    ok("assign-codes", "-d", pipe.data, "-q", root / "q4", "-q", pipe.q_collab, "-o", root / "vocab")
    ok("assign-codes", "-d", pipe.data, "-q", pipe.q_text, "-o", root / "text_only")
    return {"vocab": root / "vocab", "text_only": root / "text_only"}


def test_codes_with_another_vocabulary(pipe, other_codes, tmp_path):
    out = tmp_path / "m.json"
    result = invoke("evaluate", pipe.generator, "-d", pipe.data, "--codes", other_codes["vocab"], "-o", out)
    assert_refused(result, 1, str(other_codes["vocab"]), "another vocabulary layout", "--codes the model was trained",
                   output=out)


def test_codes_with_other_modalities(pipe, other_codes, tmp_path):
    out = tmp_path / "m.json"
    result = invoke("evaluate", pipe.generator, "-d", pipe.data, "--codes", other_codes["text_only"], "-o", out)
    assert_refused(result, 1, str(other_codes["text_only"]), "another vocabulary layout", output=out)


def test_train_decode_modality_not_in_codes(pipe, other_codes, tmp_path):
    out = tmp_path / "gen"
    result = invoke("train", "-d", pipe.data, "--codes", other_codes["text_only"], "-o", out, *TINY_GENERATOR)
    assert_refused(result, 2, "--decode collab", "the codes hold text", output=out)


def test_train_input_modality_not_in_codes(pipe, tmp_path):
    out = tmp_path / "gen"
    result = invoke("train", "-d", pipe.data, "--codes", pipe.codes, "-o", out, "--modalities", "image",
                    *TINY_GENERATOR)
    assert_refused(result, 2, "--modalities 'image'", "text, collab", output=out)


def test_codes_of_another_item_set_for_a_model(pipe, tmp_path):
    codes = copy_artifact(pipe.codes, tmp_path / "codes")
    edit_json(codes / "meta.json", lambda m: m["item_ids"].__setitem__(0, "zz"))
    out = tmp_path / "m.json"
    result = invoke("evaluate", pipe.generator, "-d", pipe.data, "--codes", codes, "-o", out)
    assert_refused(result, 1, str(codes), "cover other items", output=out)


def test_codes_of_another_catalogue_for_train(pipe, tmp_path):
    data = synthetic_dataset(tmp_path, n_items=41)
    out = tmp_path / "gen"
    result = invoke("train", "-d", data, "--codes", pipe.codes, "-o", out, *TINY_GENERATOR)
    assert_refused(result, 1, "cover 40 items", "lists 41", "run assign-codes with this --data", output=out)


def test_corrupt_codes_file(pipe, tmp_path):
    codes = copy_artifact(pipe.codes, tmp_path / "codes")
    (codes / "codes.safetensors").write_bytes(b"\x00" * 7)
    out = tmp_path / "gen"
    result = invoke("train", "-d", pipe.data, "--codes", codes, "-o", out, *TINY_GENERATOR)
    assert_refused(result, 1, "codes.safetensors", "not a valid codes file", "re-run assign-codes", output=out)


def test_codes_outside_their_slot(pipe, tmp_path):
    codes = copy_artifact(pipe.codes, tmp_path / "codes")
    tensor = load_file(codes / "codes.safetensors")["codes"]
    tensor[0, 0] = 999
    save_file({"codes": tensor}, codes / "codes.safetensors")
    out = tmp_path / "gen"
    result = invoke("train", "-d", pipe.data, "--codes", codes, "-o", out, *TINY_GENERATOR)
    assert_refused(result, 1, str(codes), "outside their slot's range", output=out)


# ---- model directories of the wrong kind or a newer schema --------------------------------------------

def test_model_directory_of_the_wrong_kind(pipe, tmp_path):
    out = tmp_path / "m.json"
    result = invoke("evaluate", pipe.codes, "-d", pipe.data, "-o", out)
    assert_refused(result, 1, str(pipe.codes), "is a codes directory, but a model directory is expected", output=out)


def test_quantizer_given_as_codes(pipe, tmp_path):
    out = tmp_path / "gen"
    result = invoke("train", "-d", pipe.data, "--codes", pipe.q_text, "-o", out, *TINY_GENERATOR)
    assert_refused(result, 1, "is a quantizer directory, but a codes directory is expected", "assign-codes",
                   output=out)


def test_plain_directory_given_as_model(pipe, tmp_path):
    out = tmp_path / "m.json"
    result = invoke("evaluate", pipe.data, "-d", pipe.data, "-o", out)
    assert_refused(result, 1, "meta.json is missing", "not an mscg model directory", output=out)


def test_model_of_an_unknown_type(pipe, tmp_path):
    model = copy_artifact(pipe.sasrec, tmp_path / "model")
    edit_json(model / "config.json", lambda c: c.__setitem__("model_type", "gpt"))
    out = tmp_path / "m.json"
    result = invoke("evaluate", model, "-d", pipe.data, "-o", out)
    assert_refused(result, 1, "holds a 'gpt' model", "sasrec", output=out)


@pytest.mark.parametrize("artifact", ["generator", "codes", "q_text", "emb_text"])
def test_artifact_of_a_newer_schema(pipe, tmp_path, artifact):
    copy = copy_artifact(getattr(pipe, artifact), tmp_path / artifact)
    edit_json(copy / "meta.json", lambda m: m.__setitem__("schema_version", 99))
    out = tmp_path / "out"
    if artifact == "generator":
        result = invoke("evaluate", copy, "-d", pipe.data, "-o", out)
    elif artifact == "codes":
        result = invoke("train", "-d", pipe.data, "--codes", copy, "-o", out, *TINY_GENERATOR)
    elif artifact == "q_text":
        result = invoke("assign-codes", "-d", pipe.data, "-q", copy, "-o", out)
    else:
        result = invoke("quantize", "--modality", "text", "--embeddings", copy, "-o", out)
    assert_refused(result, 1, str(copy), "newer mscg (schema 99", "upgrade mscg", output=out)


def test_meta_json_that_is_not_json(pipe, tmp_path):
    model = copy_artifact(pipe.sasrec, tmp_path / "model")
    (model / "meta.json").write_text('{"kind": "model", ')
    out = tmp_path / "m.json"
    assert_refused(invoke("evaluate", model, "-d", pipe.data, "-o", out), 1, "meta.json is not valid JSON",
                   output=out)


def test_weights_that_do_not_match_the_config(pipe, tmp_path):
    model = copy_artifact(pipe.sasrec, tmp_path / "model")
    edit_json(model / "config.json", lambda c: c.__setitem__("d_model", 32))
    out = tmp_path / "m.json"
    assert_refused(invoke("evaluate", model, "-d", pipe.data, "-o", out), 1, "model.safetensors does not match",
                   "config.json", "size mismatch", output=out)


# ---- users with fewer than 3 interactions; an empty dataset after filtering -------------------------------

def test_short_users_are_reported_and_dropped(pipe, tmp_path):
    data = copy_artifact(pipe.data, tmp_path / "data")
    with open(data / "interactions.jsonl", "a") as f:
        f.write('{"user_id": "short1", "item_id": "i1", "timestamp": 1}\n')
        f.write('{"user_id": "short2", "item_id": "i1", "timestamp": 1}\n')
        f.write('{"user_id": "short2", "item_id": "i2", "timestamp": 2}\n')
    out = tmp_path / "m.json"
    result = invoke("evaluate", pipe.sasrec, "-d", data, "-o", out)
    assert result.exit_code == 0, result.output
    assert "dropped 2 users with fewer than 3 interactions; 60 users remain" in result.stderr
    assert json.loads(out.read_text())["users"] == 60


def test_no_user_left_after_filtering(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "items.jsonl", [{"item_id": f"i{k}", "text": "t"} for k in range(5)])
    write_jsonl(data / "interactions.jsonl", [{"user_id": f"u{u}", "item_id": f"i{k}"} for u in range(4)
                                              for k in range(2)])
    out = tmp_path / "out"
    assert_refused(collab(data, out), 1, "interactions.jsonl", "no user has 3 or more interactions",
                   "add interactions", output=out)


def test_no_training_transition(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "items.jsonl", [{"item_id": f"i{k}", "text": "t"} for k in range(5)])
    write_jsonl(data / "interactions.jsonl", [{"user_id": f"u{u}", "item_id": f"i{k}"} for u in range(4)
                                              for k in range(3)])
    out = tmp_path / "out"
    assert_refused(collab(data, out), 1, "no user has a training transition", output=out)


# ---- prepare and compare ----------------------------------------------------------------------------------------

def test_prepare_malformed_recbole_file(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "d.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\nu1\ti2\n")
    out = tmp_path / "out"
    assert_refused(invoke("prepare", source, "-o", out), 1, "d.inter line 3", "2 tab-separated values for 3 header",
                   output=out)


def test_prepare_non_finite_timestamp(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "d.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tnan\n")
    out = tmp_path / "out"
    assert_refused(invoke("prepare", source, "-o", out), 1, "d.inter line 2", "timestamp 'nan' is not a finite number",
                   output=out)


def test_compare_a_file_that_is_not_metrics(tmp_path):
    (tmp_path / "m.json").write_text("{not json")
    out = tmp_path / "all.json"
    assert_refused(invoke("compare", f"a={tmp_path / 'm.json'}", "-o", out), 1, "m.json is not valid JSON", output=out)


# ---- invalid flags and flag combinations (exit 2) ------------------------------------------------------------

def test_k_larger_than_beam(pipe, tmp_path):
    out = tmp_path / "recs.jsonl"
    (tmp_path / "h.jsonl").write_text('{"user_id": "x", "history": ["i0", "i4"]}\n')
    result = invoke("recommend", pipe.generator, "-i", tmp_path / "h.jsonl", "-o", out, "-k", "30",
                    "--beam-size", "10")
    assert_refused(result, 2, "-k 30 is larger than --beam-size 10", "raise --beam-size", output=out)


def test_ks_larger_than_beam(pipe, tmp_path):
    out = tmp_path / "m.json"
    result = invoke("evaluate", pipe.generator, "-d", pipe.data, "--ks", "5,50", "-o", out)
    assert_refused(result, 2, "--ks asks for K=50 but --beam-size is 10", output=out)


@pytest.mark.parametrize("ks", ["abc", "0,5"])
def test_ks_that_are_not_positive_integers(pipe, tmp_path, ks):
    out = tmp_path / "m.json"
    assert_refused(invoke("evaluate", pipe.sasrec, "-d", pipe.data, "--ks", ks, "-o", out), 2, f"--ks {ks!r}",
                   output=out)


@pytest.mark.parametrize("flags, needle", [
    (["--n-levels", "0"], "--n-levels must be at least 1"),
    (["--codebook-size", "1"], "give one size >= 2"),
    (["--codebook-size", "4,4"], "give one size >= 2, or 3 comma-separated sizes"),
    (["--epochs", "3"], "--epochs does not apply to --method rq-kmeans"),
    (["--method", "rq-foo"], "--method 'rq-foo' must be one of"),
    (["--method", "rq-vae", "--epochs", "0"], "--epochs must be at least 1"),
])
def test_quantize_flags(pipe, tmp_path, flags, needle):
    out = tmp_path / "q"
    result = invoke("quantize", "--modality", "text", "--embeddings", pipe.emb_text, "-o", out, *flags)
    assert_refused(result, 2, needle, output=out)


@pytest.mark.parametrize("flags, needle", [
    (["--d-model", "15"], "--d-model 15 must be divisible by --n-heads 2"),
    (["--n-heads", "0"], "must be at least 1"),
    (["--dropout", "1.5"], "--dropout 1.5 must be in [0, 1)"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--weight-decay", "-1"], "--weight-decay must be a number >= 0"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--precision", "fp16"], "--precision 'fp16' must be one of: bf16, fp32"),
])
def test_collab_flags(tmp_path, data, flags, needle):
    out = tmp_path / "out"
    assert_refused(collab(data, out, *flags), 2, needle, output=out)


@pytest.mark.parametrize("flags, needle", [
    (["--beam-size", "5"], "--beam-size must be at least 10"),
    (["--mask-prob", "1.5"], "--mask-prob must be in [0, 1)"),
    (["--constraint", "foo"], "--constraint 'foo' must be one of"),
    (["--d-ff", "0"], "--d-ff"),
    (["--n-decoder-layers", "0"], "--n-decoder-layers"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--precision", "half"], "--precision 'half' must be one of: bf16, fp32"),
])
def test_train_flags(pipe, tmp_path, flags, needle):
    out = tmp_path / "gen"
    result = invoke("train", "-d", pipe.data, "--codes", pipe.codes, "-o", out, *TINY_GENERATOR, *flags)
    assert_refused(result, 2, needle, output=out)


@pytest.mark.parametrize("flags, needle", [
    (["--modality", "audio"], "--modality 'audio'"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_embed_flags(data, tmp_path, flags, needle):
    out = tmp_path / "out"
    assert_refused(embed(data, out, *flags), 2, needle, output=out)


def test_two_quantizers_for_one_modality(pipe, tmp_path):
    out = tmp_path / "codes"
    result = invoke("assign-codes", "-d", pipe.data, "-q", pipe.q_text, "-q", pipe.q_text, "-o", out)
    assert_refused(result, 2, "two quantizers for the text modality", "one per modality", output=out)


def test_raw_vectors_without_dim(pipe, tmp_path):
    (tmp_path / "v.f32").write_bytes(structured_vectors(40, 8, 0).tobytes())
    out = tmp_path / "out"
    result = invoke("import-embeddings", "-d", pipe.data, "--vectors", tmp_path / "v.f32", "--ids",
                    pipe.work / "ids.txt", "--modality", "text", "-o", out)
    assert_refused(result, 2, "v.f32 is read as raw float32", "pass --dim", output=out)


def test_negative_seed(data, tmp_path):
    out = tmp_path / "out"
    result = collab(data, out, "--seed", "-1")
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output
    assert not out.exists() and not partial_path(out).exists()


def test_existing_output_needs_force(pipe, tmp_path):
    out = copy_artifact(pipe.q_text, tmp_path / "q")
    before = (out / "model.safetensors").read_bytes()
    result = invoke("quantize", "--modality", "text", "--embeddings", pipe.emb_text, "-o", out)
    assert_refused(result, 2, f"{out} already exists", "--force")
    assert (out / "model.safetensors").read_bytes() == before


def test_evaluate_refuses_an_existing_output_before_evaluating(pipe, tmp_path, monkeypatch):
    out = tmp_path / "m.json"
    out.write_text("{}")
    import mscg.recommenders

    monkeypatch.setattr(mscg.recommenders, "load_recommender", lambda *a, **k: pytest.fail("evaluated anyway"))
    assert_refused(invoke("evaluate", pipe.sasrec, "-d", pipe.data, "-o", out), 2, "already exists", "--force")
    assert out.read_text() == "{}"


def test_output_inside_an_input(data, tmp_path):
    out = data / "emb"
    assert_refused(embed(data, out), 2, "would be written inside the input", output=out)


def test_output_under_a_file(data, tmp_path):
    (tmp_path / "file.txt").write_text("not a directory")
    out = tmp_path / "file.txt" / "emb"
    assert_refused(collab(data, out), 1, "Not a directory", "file.txt", "check the path")
    assert (tmp_path / "file.txt").read_text() == "not a directory"


def test_recommend_output_inside_the_model(pipe, tmp_path):
    (tmp_path / "h.jsonl").write_text('{"user_id": "x", "history": ["i0", "i4"]}\n')
    out = pipe.sasrec / "recs.jsonl"
    result = invoke("recommend", pipe.sasrec, "-i", tmp_path / "h.jsonl", "-o", out)
    assert_refused(result, 2, "would be written inside the input", output=out)


def test_recommend_unknown_history_item(pipe, tmp_path):
    (tmp_path / "h.jsonl").write_text('{"user_id": "x", "history": ["i0"]}\n{"user_id": "y", "history": ["zz"]}\n')
    out = tmp_path / "recs.jsonl"
    result = invoke("recommend", pipe.sasrec, "-i", tmp_path / "h.jsonl", "-o", out)
    assert_refused(result, 1, "h.jsonl line 2", "'zz' is not in the model's catalogue", "--skip-unknown", output=out)


# ---- files that would be unpickled: refused, and the pickle never runs ---------------------------------------

def test_pickle_as_model_weights(pipe, tmp_path):
    marker = tmp_path / "PWNED"
    model = copy_artifact(pipe.sasrec, tmp_path / "model")
    (model / "model.safetensors").write_bytes(pickle.dumps(Evil(marker)))
    out = tmp_path / "m.json"
    result = invoke("evaluate", model, "-d", pipe.data, "-o", out)
    assert_refused(result, 1, "model.safetensors is not a readable safetensors file", output=out)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["object-array", "raw-pickle"])
def test_pickle_as_npy_vectors(pipe, tmp_path, how):
    marker = tmp_path / "PWNED"
    vectors = tmp_path / "v.npy"
    if how == "object-array":
        array = np.empty(40, dtype=object)
        array[:] = [Evil(marker)] * 40
        np.save(vectors, array, allow_pickle=True)
    else:
        vectors.write_bytes(pickle.dumps(Evil(marker)))
    out = tmp_path / "out"
    result = invoke("import-embeddings", "-d", pipe.data, "--vectors", vectors, "--ids", pipe.work / "ids.txt",
                    "--modality", "text", "-o", out)
    assert_refused(result, 1, "v.npy is not a plain .npy array", output=out)
    assert not marker.exists()


def test_pickle_as_embeddings_and_codes(pipe, tmp_path):
    marker = tmp_path / "PWNED"
    emb = copy_artifact(pipe.emb_text, tmp_path / "emb")
    (emb / "embeddings.safetensors").write_bytes(pickle.dumps(Evil(marker)))
    out = tmp_path / "out"
    result = invoke("quantize", "--modality", "text", "--embeddings", emb, "-o", out)
    assert_refused(result, 1, "embeddings.safetensors is not a valid embeddings file", output=out)
    codes = copy_artifact(pipe.codes, tmp_path / "codes")
    (codes / "codes.safetensors").write_bytes(pickle.dumps(Evil(marker)))
    result = invoke("train", "-d", pipe.data, "--codes", codes, "-o", out, *TINY_GENERATOR)
    assert_refused(result, 1, "codes.safetensors is not a valid codes file", output=out)
    assert not marker.exists()


def test_pickle_as_resume_checkpoint(data, tmp_path):
    marker = tmp_path / "PWNED"
    out = tmp_path / "out"
    partial_path(out).mkdir()
    torch.save({"payload": Evil(marker)}, partial_path(out) / "resume.pt")
    result = collab(data, out, "--resume")
    assert_refused(result, 1, "resume.pt is not a readable mscg checkpoint", "drop --resume")
    assert not out.exists()
    assert not marker.exists()


def test_pickle_in_a_text_model_directory_does_not_run(data, tmp_path, tiny_text_model):
    marker = tmp_path / "PWNED"
    model = tmp_path / "model"
    shutil.copytree(tiny_text_model, model)
    for f in model.glob("*.safetensors"):
        f.unlink()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(marker)))
    result = embed(data, tmp_path / "out", "--model", model)
    assert result.exit_code != 0
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    assert_refused(result, 1, str(model), "safetensors")


# ---- --debug, Ctrl-C -------------------------------------------------------------------------------------------

def test_debug_shows_the_traceback(data, tmp_path, monkeypatch):
    monkeypatch.setitem(_common.DEBUG, "on", False)  # --debug turns it on for the rest of the process
    set_line(data / "items.jsonl", 3, "{")
    result = invoke("--debug", "embed", "--modality", "text", "-d", data, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "DataError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def _interrupt_after_writing(real):
    def save(out_dir, *args, **kwargs):
        real(out_dir, *args, **kwargs)  # the partial directory is complete...
        raise KeyboardInterrupt  # ...when Ctrl-C arrives

    return save


def test_ctrl_c_leaves_no_output(pipe, tmp_path, monkeypatch):
    import mscg.artifacts.embeddings as embeddings

    monkeypatch.setattr(embeddings, "save_embeddings", _interrupt_after_writing(embeddings.save_embeddings))
    out = tmp_path / "out"
    result = invoke("import-embeddings", "-d", pipe.data, "--vectors", pipe.work / "text.npy", "--ids",
                    pipe.work / "ids.txt", "--modality", "text", "-o", out)
    assert result.exit_code == 130
    assert "Traceback" not in result.output and "interrupted" in result.stderr
    assert not out.exists() and not partial_path(out).exists()


def test_ctrl_c_with_force_keeps_the_old_output(pipe, tmp_path, monkeypatch):
    import mscg.artifacts.codes as codes

    out = copy_artifact(pipe.codes, tmp_path / "codes")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(codes, "save_codes", _interrupt_after_writing(codes.save_codes))
    result = invoke("assign-codes", "-d", pipe.data, "-q", pipe.q_text, "-o", out, "--force")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not partial_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes"]


def test_wrong_artifact_kind_reads_as_english(tmp_path):
    pipe = build_tiny_pipeline(tmp_path, generator=False, sasrec=False)
    assert_refused(invoke("collab", "-d", pipe.data, "-o", tmp_path / "out", "--init-embeddings", pipe.q_text,
                          *TINY_SASREC), 1, "is a quantizer directory, but an embeddings directory is expected",
                   output=tmp_path / "out")
