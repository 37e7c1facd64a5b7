"""Every bad input gets one clear line on stderr, the right exit code, no traceback and no output.

One row of CASES per case: JSONL syntax, required fields and types, duplicate and unknown items, empty text,
bad images, non-finite and mismatched embeddings, codes that do not fit a model, model directories of
the wrong kind or a newer schema, an empty dataset, invalid flags, outputs that may not be written, files
that would be unpickled. Then the cases that are not one refusal: a bad image skipped on request, short
users dropped, a negative --seed (refused by click), a pickled resume checkpoint, --debug, and Ctrl-C.
Exit codes: 1 for data errors, 2 for usage errors.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mscg.artifacts.atomic import lock_path, partial_path
from mscg.commands import _common
from tests.conftest import synthetic_dataset, write_jsonl
from tests.helpers import (
    TINY_GENERATOR,
    TINY_SASREC,
    CaseContext,
    Evil,
    Pipeline,
    assert_refused,
    build_tiny_pipeline,
    copy_artifact,
    edit_json,
    invoke,
    ok,
    one_thread,  # noqa: F401 (fixture: tiny models on one thread)
    set_line,
    structured_vectors,
)

# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("bad-input"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A fresh copy of the synthetic dataset, to break."""
    return synthetic_dataset(tmp_path)


@pytest.fixture(scope="module")
def other_codes(pipe, tmp_path_factory) -> dict[str, Path]:
    """Codes with another vocabulary (codebook size 4), and text-only codes."""
    root = tmp_path_factory.mktemp("other-codes")
    ok("quantize", "--modality", "text", "--embeddings", pipe.emb_text, "-o", root / "q4", "--n-levels", "2",
       "--codebook-size", "4")
    ok("assign-codes", "-d", pipe.data, "-q", root / "q4", "-q", pipe.q_collab, "-o", root / "vocab")
    ok("assign-codes", "-d", pipe.data, "-q", pipe.q_text, "-o", root / "text_only")
    return {"vocab": root / "vocab", "text_only": root / "text_only"}


# ---- the table ------------------------------------------------------------------------------------

class Ctx(CaseContext):
    """What a case sees: `tmp`, `out`, `marker`, the fixtures by name (`pipe`, `data`, `other_codes`, ...),
    requested on first use, and whatever its setup stores (a setup may replace `data` or `pipe`)."""

    def __init__(self, request, tmp: Path):
        super().__init__(request, tmp)
        self.marker = tmp / "PWNED"


@dataclass(frozen=True)
class Case:
    """Run `args` (split on spaces, each word filled in from the Ctx: `{pipe.codes}`, `{tmp}/emb`) after
    `setup(ctx)`; expect exit `code` and one error line holding every needle (filled in too, so a literal brace
    is written `{{`), nothing at `out` (nor its partial sibling; None: not checked), the file `unchanged` byte
    for byte, and no pickle run."""

    id: str
    setup: Callable[[Ctx], object] | None
    args: str
    code: int
    needles: Sequence[str]
    out: str | None = "{tmp}/out"
    unchanged: str | None = None


PICKLE = object()  # as file content: a pickle that creates ctx.marker when loaded


def _content(c: Ctx, content) -> bytes:
    if content is PICKLE:
        return pickle.dumps(Evil(c.marker))
    return content.encode() if isinstance(content, str) else content


def write(template: str, content):
    """Setup: write a file (bytes, text or PICKLE), making its folder."""
    def setup(c: Ctx):
        path = Path(c.fill(template))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(c, content))
    return setup


def line(file: str, line_no: int, text: str | bytes):
    """Setup: replace line `line_no` of the fresh dataset's FILE.jsonl."""
    return lambda c: set_line(c.data / f"{file}.jsonl", line_no, text)


def copied(artifact: str, name: str, file: str | None = None, change=None):
    """Setup: copy the pipeline's ARTIFACT to tmp/NAME, then edit its JSON FILE in place if `change` is a
    function, else replace FILE with `change` (bytes, text or PICKLE)."""
    def setup(c: Ctx):
        path = copy_artifact(getattr(c.pipe, artifact), c.tmp / name)
        if callable(change):
            edit_json(path / file, change)
        elif file is not None:
            (path / file).write_bytes(_content(c, change))
    return setup


def own_data(items: list[dict], interactions: list[dict]):
    """Setup: a dataset of the case's own (tmp/data) instead of the synthetic one."""
    def setup(c: Ctx):
        c.data = c.tmp / "data"
        write_jsonl(c.data / "items.jsonl", items)
        write_jsonl(c.data / "interactions.jsonl", interactions)
    return setup


def image_data(tmp_path: Path, bad: str) -> Path:
    """Two items: i0 with a bad image (data/img/bad.jpg) of kind `bad`, i1 with a good one."""
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
    return data


def bad_image(bad: str):
    """Setup: `image_data` (skipped until the image encoder, another module, imports)."""
    def setup(c: Ctx):
        pytest.importorskip("mscg.encoders.image", reason="mscg.encoders.image does not import yet")
        c.data = image_data(c.tmp, bad)
    return setup


def embeddings_of_another_catalogue(c: Ctx):
    from mscg.artifacts.embeddings import Embeddings, save_embeddings

    (c.tmp / "emb_other").mkdir()
    save_embeddings(c.tmp / "emb_other", Embeddings("text", ["x0", "x1", "x2"], torch.randn(3, 8)), source={},
                    provenance={})


def vectors_with_nan(c: Ctx):
    vectors = structured_vectors(40, 8, 0)
    vectors[2, 3] = np.nan
    np.save(c.tmp / "v.npy", vectors)


def embeddings_with_inf(c: Ctx):
    path = copy_artifact(c.pipe.emb_text, c.tmp / "emb") / "embeddings.safetensors"
    tensors = load_file(path)
    tensors["embeddings"][5, 0] = float("inf")
    save_file(tensors, path)


def nan_weights(artifact: str, name: str = "model"):
    """Setup: copy the pipeline's ARTIFACT (a model or quantizer directory) to tmp/NAME with one weight NaN,
    as a diverged run (or a hand edit) leaves it."""
    def setup(c: Ctx):
        path = copy_artifact(getattr(c.pipe, artifact), c.tmp / name) / "model.safetensors"
        tensors = load_file(path)
        key = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
        tensors[key].view(-1)[0] = float("nan")
        save_file(tensors, path, metadata={"format": "pt"})
        (c.tmp / "h.jsonl").write_text(H_JSONL)
    return setup


def embeddings_of_4_dims(c: Ctx):
    np.save(c.tmp / "v.npy", structured_vectors(40, 4, 0))
    ok("import-embeddings", "-d", c.pipe.data, "--vectors", c.tmp / "v.npy", "--ids", c.pipe.work / "ids.txt",
       "--modality", "text", "-o", c.tmp / "emb4")


def ids_with_a_ghost(c: Ctx):
    (c.tmp / "ids.txt").write_text((c.pipe.work / "ids.txt").read_text().replace("i7\n", "ghost\n"))


def codes_outside_their_slot(c: Ctx):
    path = copy_artifact(c.pipe.codes, c.tmp / "codes") / "codes.safetensors"
    tensor = load_file(path)["codes"]
    tensor[0, 0] = 999
    save_file({"codes": tensor}, path)


def pickled_object_array(c: Ctx):
    array = np.empty(40, dtype=object)
    array[:] = [Evil(c.marker)] * 40
    np.save(c.tmp / "v.npy", array, allow_pickle=True)


def pickle_in_a_text_model(c: Ctx):
    model = c.tmp / "model"
    shutil.copytree(c.tiny_text_model, model)
    for f in model.glob("*.safetensors"):
        f.unlink()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(c.marker)))


def existing_metrics_and_no_evaluation(c: Ctx):
    import mscg.recommenders

    (c.tmp / "m.json").write_text("{}")
    c.monkeypatch.setattr(mscg.recommenders, "load", lambda *a, **k: pytest.fail("evaluated anyway"))


def setting(key: str, value):
    """A `copied` change: set a key of the JSON file."""
    return lambda obj: obj.__setitem__(key, value)


def item_id(index: int, value: str):
    """A `copied` change: replace one of meta.json's item ids."""
    return lambda meta: meta["item_ids"].__setitem__(index, value)


def steps(*setups):
    """Setup: several setups, in order."""
    def setup(c: Ctx):
        for step in setups:
            step(c)
    return setup


def built_only_after_checks(c: Ctx):
    """Setup: a model or quantizer built for real (not on the meta device, where nothing is allocated) before
    its config was refused fails the test."""
    import dataclasses

    import mscg.quantizers
    import mscg.recommenders.generator
    import mscg.recommenders.sasrec

    def guarded(cls):
        def build(config):
            if torch.empty(0).device.type != "meta":
                pytest.fail(f"{cls.__name__} was built (allocated) before its config was checked")
            return cls(config)
        return build

    c.monkeypatch.setattr(mscg.recommenders.generator, "Generator", guarded(mscg.recommenders.generator.Generator))
    c.monkeypatch.setattr(mscg.recommenders.sasrec, "SASRec", guarded(mscg.recommenders.sasrec.SASRec))
    for name, kind in mscg.quantizers.QUANTIZERS.items():
        c.monkeypatch.setitem(mscg.quantizers.QUANTIZERS, name, dataclasses.replace(kind, module=guarded(kind.module)))


def bad_config(artifact: str, change, file: str = "config.json"):
    """Setup: a copy of the pipeline's ARTIFACT at tmp/ARTIFACT whose FILE is changed (a function editing the
    JSON, or the file's new text), and no real model built before the refusal."""
    return steps(copied(artifact, artifact, file, change), built_only_after_checks)


def planted_link(link: str, target: str, copy_of: str | None = None):
    """Setup: a symbolic link at LINK to TARGET (made a copy of the pipeline's artifact COPY_OF, or a file)."""
    def setup(c: Ctx):
        target_path = Path(c.fill(target))
        if copy_of is not None:
            copy_artifact(getattr(c.pipe, copy_of), target_path)
        else:
            target_path.write_text("the victim of a planted link\n")
        Path(c.fill(link)).symlink_to(target_path)
    return setup


def held_lock(c: Ctx):
    """Setup: another process (an open file description of the test's own) holds the lock of tmp/out."""
    import fcntl
    import os

    from mscg.artifacts.atomic import lock_path

    fd = os.open(lock_path(c.out), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    c._request.addfinalizer(lambda: os.close(fd))
    c.held_lock = True


def no_space_when_saving(module: str, name: str):
    """Setup: MODULE.NAME (safetensors' save_file / save_model) writes part of its file and fails as safetensors
    does on a full disk."""
    def setup(c: Ctx):
        import importlib

        from safetensors import SafetensorError

        def full(_tensors, path, *args, **kwargs):
            Path(path).write_bytes(b"\0" * 100)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

        c.monkeypatch.setattr(importlib.import_module(module), name, full)
    return setup


def quantizer_on_edited_embeddings(c: Ctx):
    """Setup: tmp/q quantizes tmp/emb, whose vectors were edited afterwards."""
    emb = copy_artifact(c.pipe.emb_text, c.tmp / "emb")
    ok("quantize", "--modality", "text", "--embeddings", emb, "-o", c.tmp / "q", "--n-levels", "2")
    tensors = load_file(emb / "embeddings.safetensors")
    tensors["embeddings"][0] *= 2
    save_file(tensors, emb / "embeddings.safetensors")


def swapped_codes(path: Path) -> None:
    """Swap the codes of two items (same layout, same item ids: only the digest tells)."""
    tensors = load_file(path / "codes.safetensors")
    tensors["codes"][[0, 1]] = tensors["codes"][[1, 0]]
    save_file(tensors, path / "codes.safetensors")


def generator_on_swapped_codes(c: Ctx):
    """Setup: tmp/gen, a copy of the generator whose own codes (tmp/gen/codes) were swapped."""
    swapped_codes(copy_artifact(c.pipe.generator, c.tmp / "gen") / "codes")


def old_generator_on_swapped_codes(c: Ctx):
    """Setup: tmp/gen, a generator folder as mscg wrote them before they held their codes (meta.json names the
    codes by absolute path: tmp/codes), whose codes were swapped."""
    gen = copy_artifact(c.pipe.generator, c.tmp / "gen")
    shutil.rmtree(gen / "codes")
    swapped_codes(copy_artifact(c.pipe.codes, c.tmp / "codes"))
    edit_json(gen / "meta.json", setting("codes", str(c.tmp / "codes")))


def without_its_codes(c: Ctx):
    """Setup: tmp/gen, a copy of the generator whose codes/ folder was removed."""
    shutil.rmtree(copy_artifact(c.pipe.generator, c.tmp / "gen") / "codes")


def images_with_the_last_missing(c: Ctx):
    """Setup: two items with images, the last one's file missing; reading any image fails the test (the
    missing file must be found before the work on the others)."""
    import mscg.encoders.image

    c.data = image_data(c.tmp, "missing")
    items = c.data / "items.jsonl"
    items.write_text("\n".join(reversed(items.read_text().splitlines())) + "\n")  # the missing one last
    c.monkeypatch.setattr(mscg.encoders.image, "read_image", lambda *a: pytest.fail("an image was read first"))


def read_only_output_folder(c: Ctx):
    """Setup: tmp/ro cannot be written (a read-only tmpfs as root, else mode 555); encoding fails the test."""
    import os
    import subprocess

    import mscg.encoders.text

    ro = c.tmp / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True,
                                 check=False)
        if mounted.returncode:
            pytest.skip("no read-only folder: root ignores file modes and tmpfs cannot be mounted here")
        c._request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(ro)], capture_output=True, check=False))
    else:
        ro.chmod(0o555)
        c._request.addfinalizer(lambda: ro.chmod(0o755))
    c.monkeypatch.setattr(mscg.encoders.text, "encode_texts", lambda *a, **k: pytest.fail("encoded first"))


SASREC, GENERATOR = " ".join(TINY_SASREC), " ".join(TINY_GENERATOR)
EMBED = "embed --modality text -d {data} -o {out} --device cpu"
COLLAB = "collab -d {data} -o {out} " + SASREC


def train(codes: str = "{pipe.codes}", data: str = "{pipe.data}") -> str:
    return f"train -d {data} --codes {codes} -o {{out}} {GENERATOR}"


def evaluate(model: str) -> str:
    return f"evaluate {model} -d {{pipe.data}} -o {{out}}"


def quantize(embeddings: str, modality: str = "text") -> str:
    return f"quantize --modality {modality} --embeddings {embeddings} -o {{out}}"


def import_embeddings(vectors: str = "{tmp}/v.npy", ids: str = "{pipe.work}/ids.txt") -> str:
    return f"import-embeddings -d {{pipe.data}} --vectors {vectors} --ids {ids} --modality text -o {{out}}"


def flag_cases(command: str, template: str, out: str, rows: list[tuple[str, str]]) -> list[Case]:
    """Usage errors (exit 2): `template` + each row's flags, refused with its needle."""
    return [Case(f"{command} {flags}", None, f"{template} {flags}", 2, [needle], out=out) for flags, needle in rows]


def four_users_of(n: int):
    """Setup: 5 items, and 4 users with `n` interactions each."""
    return own_data([{"item_id": f"i{k}", "text": "t"} for k in range(5)],
                    [{"user_id": f"u{u}", "item_id": f"i{k}"} for u in range(4) for k in range(n)])


H_JSONL = '{"user_id": "x", "history": ["i0", "i4"]}\n'
M_JSON = '{"users": 3, "recall@10": 0.5, "ndcg@10": 0.25}'
ASSIGN_Q_TEXT = "assign-codes -d {pipe.data} -q {tmp}/q_text -o {out}"  # a copy of the text quantizer
SCHEMA_99_COMMANDS = {"generator": evaluate("{tmp}/generator"), "codes": train("{tmp}/codes"),
                      "q_text": "assign-codes -d {pipe.data} -q {tmp}/q_text -o {out}",
                      "emb_text": quantize("{tmp}/emb_text")}

CASES = [
    # ---- JSONL syntax (file:line)
    Case("items malformed JSON", line("items", 3, '{"item_id": "i2", "text": "x"'), EMBED, 1,
         ["items.jsonl line 3", "malformed JSON"]),
    Case("interactions malformed JSON", line("interactions", 5, "user_id=u1 item_id=i1"), COLLAB, 1,
         ["interactions.jsonl line 5", "malformed JSON"]),
    Case("line not an object", line("items", 2, '["i1", "text"]'), EMBED, 1,
         ["items.jsonl line 2", "expected a JSON object, found list"]),
    Case("not UTF-8", line("items", 4, b'{"item_id": "i3", "text": "caf\xe9"}'), EMBED, 1,
         ["items.jsonl line 4", "not valid UTF-8"]),
    Case("NaN is not JSON", line("interactions", 1, '{"user_id": "u0", "item_id": "i0", "timestamp": NaN}'), COLLAB, 1,
         ["interactions.jsonl line 1", "NaN is not valid JSON"]),
    Case("lone surrogate escape", line("items", 2, '{"item_id": "i1", "text": "bad \\ud800 escape"}'), EMBED, 1,
         ["items.jsonl line 2", "surrogate"]),
    Case("init embeddings of another catalogue", embeddings_of_another_catalogue,
         COLLAB + " --init-embeddings {tmp}/emb_other", 1, ["emb_other", "cover 0 of the dataset's 40 items"]),
    # ---- missing, empty files
    Case("missing items file", lambda c: (c.data / "items.jsonl").unlink(), EMBED, 1, ["items.jsonl does not exist"]),
    Case("data is not a directory", None, "collab -d {data}/items.jsonl -o {out} " + SASREC, 1,
         ["--data", "is not a directory", "mscg prepare"]),
    Case("zero-byte items file", write("{data}/items.jsonl", b""), EMBED, 1, ["items.jsonl holds no items"]),
    Case("zero-byte interactions file", write("{data}/interactions.jsonl", b""), COLLAB, 1,
         ["interactions.jsonl holds no interactions"]),
    # ---- required fields and their types
    Case("item without item_id", line("items", 2, '{"text": "an item without id"}'), EMBED, 1,
         ["items.jsonl line 2", 'missing "item_id"']),
    Case("interaction without user_id", line("interactions", 7, '{"item_id": "i1", "timestamp": 5}'), COLLAB, 1,
         ["interactions.jsonl line 7", 'missing "user_id"']),
    Case("item_id a number", line("items", 8, '{"item_id": 7, "text": "numeric id"}'), EMBED, 1,
         ["items.jsonl line 8", '"item_id" must be a string', "quote it"]),
    Case("interaction item_id a number", line("interactions", 3, '{"user_id": "u1", "item_id": 3, "timestamp": 5}'),
         COLLAB, 1, ["interactions.jsonl line 3", '"item_id" must be a string']),
    Case("text not a string", line("items", 5, '{"item_id": "i4", "text": ["a", "list"]}'), EMBED, 1,
         ["items.jsonl line 5", '"text" must be a string']),
    Case("timestamp not a number",
         line("interactions", 2, '{"user_id": "u1", "item_id": "i1", "timestamp": "yesterday"}'), COLLAB, 1,
         ["interactions.jsonl line 2", '"timestamp" must be a finite number']),
    Case("timestamp on some lines only", line("interactions", 9, '{"user_id": "u1", "item_id": "i1"}'), COLLAB, 1,
         ["interactions.jsonl line 9", "timestamp", "every line a timestamp or none"]),
    # ---- duplicate and unknown items
    Case("duplicate item ids", line("items", 6, '{"item_id": "i0", "text": "again"}'), EMBED, 1,
         ["items.jsonl line 6", "'i0' already appears on line 1", "unique"]),
    Case("interaction on unknown item",
         line("interactions", 4, '{"user_id": "u1", "item_id": "nope", "timestamp": 5}'), COLLAB, 1,
         ["interactions.jsonl line 4", "'nope' is not in", "items.jsonl"]),
    # ---- empty or whitespace-only text
    *[Case(f"text {text!r}", line("items", 4, json.dumps({"item_id": "i3", "text": text})), EMBED, 1,
           ["items.jsonl line 4", "\"text\" of item 'i3' is empty", "omit the field"]) for text in ["", "  \t "]],
    Case("whitespace item_id", line("items", 4, '{"item_id": "   ", "text": "x"}'), EMBED, 1,
         ["items.jsonl line 4", '"item_id" is empty']),
    Case("no item has text", own_data([{"item_id": f"i{k}"} for k in range(3)],
                                      [{"user_id": "u", "item_id": f"i{k}"} for k in range(3)]), EMBED, 1,
         ['no item has a "text" field']),
    # ---- images
    *[Case(f"{bad} image", bad_image(bad), "embed --modality image -d {data} -o {out} --device cpu", 1,
           ["'i0'", "{data}/img/bad.jpg", "--skip-bad-images"])
      for bad in ["missing", "unreadable", "corrupt", "zero-byte"]],
    # ---- embeddings: non-finite values, item ids that do not match
    Case("import embeddings with NaN", vectors_with_nan, import_embeddings(), 1,
         ["v.npy", "item 'i2'", "NaN or infinite"]),
    Case("embeddings artifact with inf", embeddings_with_inf, quantize("{tmp}/emb"), 1,
         ["{tmp}/emb", "item 'i5'", "NaN or infinite"]),
    Case("predict-collab on collab embeddings with inf", embeddings_with_inf,
         "predict-collab -d {pipe.data} --collab {tmp}/emb --content {pipe.emb_text} -o {out}", 1,
         ["{tmp}/emb", "item 'i5'", "NaN or infinite"]),
    # ---- weights with NaN (a diverged run, a hand edit): every stage that loads them refuses, naming the file
    *[Case(f"{command.split()[0]} on {artifact} with a NaN weight", nan_weights(artifact, name), command, 1,
           [f"{{tmp}}/{name}/model.safetensors", "NaN or infinite", "lower --lr"], out=out)
      for artifact, name, command, out in [
          ("sasrec", "model", evaluate("{tmp}/model"), "{tmp}/m.json"),
          ("generator", "model", evaluate("{tmp}/model"), "{tmp}/m.json"),
          ("sasrec", "model", "recommend {tmp}/model -i {tmp}/h.jsonl -o {out}", "{tmp}/r.jsonl"),
          ("sasrec", "model", "fuse {pipe.generator} {tmp}/model -d {pipe.data} -o {out}", "{tmp}/fused"),
          ("q_text", "q", "assign-codes -d {pipe.data} -q {tmp}/q -q {pipe.q_collab} -o {out}", "{tmp}/codes")]],
    # ---- a run that diverges stops with one line (a run that wrote a checkpoint: test_a_diverged_run_...)
    Case("train diverges", None, train() + " --lr 1e30", 1,
         ["training diverged at epoch 1, step 2", "the gradient is not finite", "lower --lr than 1e+30"]),
    Case("embeddings meta lists fewer ids than rows",
         copied("emb_text", "emb", "meta.json", lambda meta: meta["item_ids"].pop()), quantize("{tmp}/emb"), 1,
         ["{tmp}/emb", "meta.json lists 39 item ids"]),
    Case("embeddings meta lists an id twice", copied("emb_text", "emb", "meta.json", item_id(3, "i0")),
         quantize("{tmp}/emb"), 1, ["{tmp}/emb", "item id 'i0' twice"]),
    Case("embeddings items not in catalogue", copied("emb_text", "emb", "meta.json", item_id(0, "zz")),
         "assign-codes -d {pipe.data} -q {pipe.q_text} --embeddings text={tmp}/emb -o {out}", 1,
         ["{tmp}/emb", "'zz'", "items.jsonl", "same items.jsonl"]),
    Case("embeddings of another dimension", embeddings_of_4_dims,
         "assign-codes -d {pipe.data} -q {pipe.q_text} --embeddings text={tmp}/emb4 -o {out}", 1,
         ["4-d vectors", "8-d"]),
    Case("embeddings of another modality", None, quantize("{pipe.emb_text}", modality="collab"), 2,
         ["holds text embeddings, not collab", "--modality text"]),
    Case("import ids not in catalogue", ids_with_a_ghost, import_embeddings("{pipe.work}/text.npy", "{tmp}/ids.txt"), 1,
         ["ids.txt", "'ghost'", "not in"]),
    Case("import ids fewer than rows", write("{tmp}/ids.txt", "\n".join(f"i{k}" for k in range(39)) + "\n"),
         import_embeddings("{pipe.work}/text.npy", "{tmp}/ids.txt"), 1,
         ["ids.txt", "1 of the 40 vector rows", "row 39"]),
    # ---- codes that do not match a model (vocabulary, modalities, item set)
    Case("codes with another vocabulary", None, evaluate("{pipe.generator}") + " --codes {other_codes[vocab]}", 1,
         ["{other_codes[vocab]}", "another vocabulary layout", "--codes the model was trained"], out="{tmp}/m.json"),
    Case("codes with other modalities", None, evaluate("{pipe.generator}") + " --codes {other_codes[text_only]}", 1,
         ["{other_codes[text_only]}", "another vocabulary layout"], out="{tmp}/m.json"),
    Case("train decode modality not in codes", None, train("{other_codes[text_only]}"), 2,
         ["--decode collab", "the codes hold text"], out="{tmp}/gen"),
    Case("train input modality not in codes", None, train() + " --modalities image", 2,
         ["--modalities 'image'", "text, collab"], out="{tmp}/gen"),
    Case("codes of another item set for a model", copied("codes", "codes", "meta.json", item_id(0, "zz")),
         evaluate("{pipe.generator}") + " --codes {tmp}/codes", 1, ["{tmp}/codes", "cover other items"],
         out="{tmp}/m.json"),
    Case("codes of another catalogue for train", lambda c: setattr(c, "data", synthetic_dataset(c.tmp, n_items=41)),
         train(data="{data}"), 1, ["cover 40 items", "lists 41", "run assign-codes with this --data"], out="{tmp}/gen"),
    Case("corrupt codes file", copied("codes", "codes", "codes.safetensors", b"\x00" * 7), train("{tmp}/codes"), 1,
         ["codes.safetensors", "not a valid codes file", "re-run assign-codes"], out="{tmp}/gen"),
    Case("codes outside their slot", codes_outside_their_slot, train("{tmp}/codes"), 1,
         ["{tmp}/codes", "outside their slot's range"], out="{tmp}/gen"),
    # ---- model directories of the wrong kind or a newer schema
    Case("model directory of the wrong kind", None, evaluate("{pipe.codes}"), 1,
         ["{pipe.codes}", "is a codes directory, but a model directory is expected"], out="{tmp}/m.json"),
    Case("quantizer given as codes", None, train("{pipe.q_text}"), 1,
         ["is a quantizer directory, but a codes directory is expected", "assign-codes"], out="{tmp}/gen"),
    Case("plain directory given as model", None, evaluate("{pipe.data}"), 1,
         ["meta.json is missing", "not an mscg model directory"], out="{tmp}/m.json"),
    Case("model of an unknown type", copied("sasrec", "model", "config.json", setting("model_type", "gpt")),
         evaluate("{tmp}/model"), 1, ["holds a 'gpt' model", "sasrec"], out="{tmp}/m.json"),
    *[Case(f"{artifact} of a newer schema", copied(artifact, artifact, "meta.json", setting("schema_version", 99)),
           command, 1, [f"{{tmp}}/{artifact}", "newer mscg (schema 99", "upgrade mscg"])
      for artifact, command in SCHEMA_99_COMMANDS.items()],
    Case("meta.json not JSON", copied("sasrec", "model", "meta.json", '{"kind": "model", '), evaluate("{tmp}/model"), 1,
         ["meta.json is not valid JSON"], out="{tmp}/m.json"),
    Case("weights that do not match the config", copied("sasrec", "model", "config.json", setting("d_model", 32)),
         evaluate("{tmp}/model"), 1, ["model.safetensors does not match", "config.json", "size mismatch"],
         out="{tmp}/m.json"),
    Case("wrong artifact kind reads as English",
         lambda c: setattr(c, "pipe", build_tiny_pipeline(c.tmp, generator=False, sasrec=False)),
         "collab -d {pipe.data} -o {out} --init-embeddings {pipe.q_text} " + SASREC, 1,
         ["is a quantizer directory, but an embeddings directory is expected"]),
    # ---- an empty dataset after filtering
    Case("no user left after filtering", four_users_of(2), COLLAB, 1,
         ["interactions.jsonl", "no user has 3 or more interactions", "add interactions"]),
    Case("no training transition", four_users_of(3), COLLAB, 1, ["no user has a training transition"]),
    # ---- prepare and compare
    Case("prepare malformed RecBole file",
         write("{tmp}/src/d.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\nu1\ti2\n"),
         "prepare {tmp}/src -o {out}", 1, ["d.inter line 3", "2 tab-separated values for 3 header"]),
    Case("compare a metric of 401 digits", write("{tmp}/m.json", '{"users": 3, "ndcg@10": 1' + "0" * 400 + "}"),
         "compare a={tmp}/m.json -o {out}", 1, ["{tmp}/m.json", '"ndcg@10" is an integer of 401 digits'],
         out="{tmp}/all.json"),
    Case("prepare non-finite timestamp",
         write("{tmp}/src/d.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tnan\n"),
         "prepare {tmp}/src -o {out}", 1, ["d.inter line 2", "timestamp 'nan' is not a finite number"]),
    Case("compare a file that is not metrics", write("{tmp}/m.json", "{not json"), "compare a={tmp}/m.json -o {out}", 1,
         ["m.json is not valid JSON"], out="{tmp}/all.json"),
    # ---- invalid flags and flag combinations (exit 2), outputs that may not be written
    *[Case(f"ks {ks}", None, evaluate("{pipe.sasrec}") + f" --ks {ks}", 2, [f"--ks {ks!r}"], out="{tmp}/m.json")
      for ks in ["abc", "0,5"]],
    *flag_cases("quantize", quantize("{pipe.emb_text}"), "{tmp}/q", [
        ("--n-levels 0", "--n-levels must be at least 1"),
        ("--codebook-size 1", "give one size >= 2"),
        ("--codebook-size 4,4", "give one size >= 2, or 3 comma-separated sizes"),
        ("--epochs 3", "--epochs does not apply to --method rq-kmeans"),
        ("--method rq-foo", "Invalid value for '--method': 'rq-foo' is not one of 'rq-kmeans', 'rq-vae', 'rq-dino'"),
        ("--method rq-vae --epochs 0", "--epochs must be at least 1"),
    ]),
    Case("rq-dino implies --modality image", None, "quantize --method rq-dino -o {out}", 2,
         ["--method rq-dino trains on the item images: pass --data"]),
    Case("rq-dino refuses another --modality", None, "quantize --method rq-dino --modality text -d {data} -o {out}",
         2, ["--method rq-dino learns image codes from pixels; use it with --modality image"]),
    Case("rq-kmeans needs --modality", None, "quantize --embeddings {pipe.emb_text} -o {out}", 2,
         ["--method rq-kmeans needs --modality"]),
    *flag_cases("collab", COLLAB, "{tmp}/out", [
        ("--d-model 15", "--d-model 15 must be divisible by --n-heads 2"),
        ("--n-heads 0", "must be at least 1"),
        ("--dropout 1.5", "--dropout 1.5 must be in [0, 1)"),
        ("--epochs 0", "--epochs must be at least 1"),
        ("--weight-decay -1", "--weight-decay must be a number >= 0"),
        ("--lr 0", "--lr must be a positive number"),
        ("--precision fp16", "Invalid value for '--precision': 'fp16' is not one of 'bf16', 'fp32'"),
    ]),
    *flag_cases("train", train(), "{tmp}/gen", [
        ("--beam-size 5", "--beam-size must be at least 10"),
        ("--mask-prob 1.5", "--mask-prob must be in [0, 1)"),
        ("--constraint foo", "Invalid value for '--constraint': 'foo' is not one of 'trie', 'level', 'off'"),
        ("--d-ff 0", "--d-ff"),
        ("--n-decoder-layers 0", "--n-decoder-layers"),
        ("--batch-size 0", "--batch-size must be at least 1"),
        ("--precision half", "Invalid value for '--precision': 'half' is not one of 'bf16', 'fp32'"),
    ]),
    *flag_cases("embed", EMBED, "{tmp}/out", [
        ("--modality audio", "Invalid value for '--modality': 'audio' is not one of 'text', 'image'"),
        ("--batch-size 0", "--batch-size must be at least 1"),
    ]),
    Case("two quantizers for one modality", None,
         "assign-codes -d {pipe.data} -q {pipe.q_text} -q {pipe.q_text} -o {out}", 2,
         ["two quantizers for the text modality", "one per modality"], out="{tmp}/codes"),
    Case("raw vectors without dim", write("{tmp}/v.f32", structured_vectors(40, 8, 0).tobytes()),
         import_embeddings("{tmp}/v.f32"), 2, ["v.f32 is read as raw float32", "pass --dim"]),
    Case("existing output needs force", copied("q_text", "q"),
         "quantize --modality text --embeddings {pipe.emb_text} -o {tmp}/q", 2, ["{tmp}/q already exists", "--force"],
         out=None, unchanged="{tmp}/q/model.safetensors"),
    Case("evaluate refuses an existing output before evaluating", existing_metrics_and_no_evaluation,
         "evaluate {pipe.sasrec} -d {pipe.data} -o {tmp}/m.json", 2, ["already exists", "--force"], out=None,
         unchanged="{tmp}/m.json"),
    Case("output inside an input", None, EMBED, 2, ["would be written inside the input"], out="{data}/emb"),
    Case("output under a file", write("{tmp}/file.txt", "not a directory"), COLLAB, 1,
         ["Not a directory", "file.txt", "check the path"], out="{tmp}/file.txt/emb", unchanged="{tmp}/file.txt"),
    Case("recommend output inside the model", write("{tmp}/h.jsonl", H_JSONL),
         "recommend {pipe.sasrec} -i {tmp}/h.jsonl -o {out}", 2, ["would be written inside the input"],
         out="{pipe.sasrec}/recs.jsonl"),
    Case("recommend unknown history item",
         write("{tmp}/h.jsonl", '{"user_id": "x", "history": ["i0"]}\n{"user_id": "y", "history": ["zz"]}\n'),
         "recommend {pipe.sasrec} -i {tmp}/h.jsonl -o {out}", 1,
         ["h.jsonl line 2", "'zz' is not in the model's catalogue", "--skip-unknown"], out="{tmp}/recs.jsonl"),
    *[Case(f"recommend {what}", write("{tmp}/h.jsonl", '{"user_id": "x", "history": ["i0"]}\n' + text + "\n"),
           "recommend {pipe.sasrec} -i {tmp}/h.jsonl -o {out}", 1, ["h.jsonl line 2", *needles],
           out="{tmp}/recs.jsonl")
      for what, text, needles in [
          ("missing history", '{"user_id": "y"}', ['missing "history"', '{{"history": [item_id, ...]}}, with an '
                                                                          'optional "user_id"']),
          ("user_id not an id", '{"user_id": 7.5, "history": ["i0"]}',
           ['"user_id" must be a string (or an integer), found 7.5']),
          ("history not a list", '{"user_id": "y", "history": "i0"}',
           ['"history" must be a list of item ids, found "i0"']),
          ("history item not an id", '{"user_id": "y", "history": ["i0", null]}',
           ['"history" must list item ids (strings or integers), found null']),
          ("empty history", '{"user_id": "y", "history": []}',
           ["user 'y' has no known history item", "--fallback popular"]),
      ]],
    Case("recommend all-unknown history", write("{tmp}/h.jsonl", '{"user_id": "y", "history": ["zz"]}\n'),
         "recommend {pipe.sasrec} -i {tmp}/h.jsonl -o {out} --skip-unknown", 1,
         ["h.jsonl line 1", "no known history item", "--fallback popular"], out="{tmp}/recs.jsonl"),
    *[Case(f"recommend {flag} {value}", write("{tmp}/h.jsonl", H_JSONL),
           f"recommend {{pipe.sasrec}} -i {{tmp}}/h.jsonl -o {{out}} {flag} {value}", 2,
           [f"Invalid value for '{flag}': '{value}' is not one of {choices}"], out="{tmp}/recs.jsonl")
      for flag, value, choices in [("--on-error", "ignore", "'fail', 'skip'"),
                                   ("--fallback", "random", "'none', 'popular'")]],
    Case("recommend --fallback popular without recorded popularity",
         steps(write("{tmp}/h.jsonl", H_JSONL),
               copied("sasrec", "model", "meta.json", lambda meta: meta.pop("train_item_counts"))),
         "recommend {tmp}/model -i {tmp}/h.jsonl -o {out} --fallback popular", 2,
         ["--fallback popular needs the model's training popularity", "{tmp}/model/meta.json records none"],
         out="{tmp}/recs.jsonl"),
    Case("recommend --fallback popular with malformed popularity",
         steps(write("{tmp}/h.jsonl", H_JSONL), copied("sasrec", "model", "meta.json", setting("train_item_counts",
                                                                                              [1, -2]))),
         "recommend {tmp}/model -i {tmp}/h.jsonl -o {out} --fallback popular", 1,
         ["{tmp}/model/meta.json: train_item_counts must list one count >= 0 per item"], out="{tmp}/recs.jsonl"),
    # ---- files that would be unpickled: refused, and the pickle never runs
    Case("pickle as model weights", copied("sasrec", "model", "model.safetensors", PICKLE), evaluate("{tmp}/model"), 1,
         ["model.safetensors is not a readable safetensors file"], out="{tmp}/m.json"),
    Case("pickle as npy object array", pickled_object_array, import_embeddings(), 1,
         ["v.npy is not a plain .npy array"]),
    Case("pickle as npy", write("{tmp}/v.npy", PICKLE), import_embeddings(), 1, ["v.npy is not a plain .npy array"]),
    Case("pickle as embeddings", copied("emb_text", "emb", "embeddings.safetensors", PICKLE), quantize("{tmp}/emb"), 1,
         ["embeddings.safetensors is not a valid embeddings file"]),
    Case("pickle as codes", copied("codes", "codes", "codes.safetensors", PICKLE), train("{tmp}/codes"), 1,
         ["codes.safetensors is not a valid codes file"]),
    Case("pickle in a text model directory", pickle_in_a_text_model, EMBED + " --model {tmp}/model", 1,
         ["{tmp}/model", "safetensors"]),
    # ---- numbers too large to be numbers
    Case("401-digit timestamp",
         line("interactions", 3, '{"user_id": "u1", "item_id": "i1", "timestamp": 1' + "0" * 400 + "}"), COLLAB, 1,
         ["interactions.jsonl line 3", '"timestamp" is an integer of 401 digits']),
    # ---- model configs: checked against types, ranges and the weights' header before anything is built
    *[Case(f"{artifact} config {key} {value!r:.20}", bad_config(artifact, setting(key, value)), command, 1,
           [f"{{tmp}}/{artifact}/config.json", f'"{key}"', needle], out=out)
      for artifact, key, value, needle, command, out in [
          ("generator", "d_ff", 100_000_000, "must be between 1 and", evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("generator", "n_heads", 0, "must be between 1 and", evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("generator", "max_history", -5, "must be between 1 and", evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("generator", "dropout", float("nan"), "must be a finite number", evaluate("{tmp}/generator"),
           "{tmp}/m.json"),
          ("generator", "d_model", "16", "must be an integer", evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("generator", "dual_positions", 1, "must be true or false", evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("generator", "constraint", "beam", "must be one of: trie", evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("generator", "decode_modality", "image", "must be among the vocabulary's modalities",
           evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("sasrec", "n_layers", True, "must be an integer", evaluate("{tmp}/sasrec"), "{tmp}/m.json"),
          ("sasrec", "n_items", 10**400, "must be between 1 and", evaluate("{tmp}/sasrec"), "{tmp}/m.json"),
          ("sasrec", "d_model", 15, "must be divisible by n_heads", evaluate("{tmp}/sasrec"), "{tmp}/m.json"),
          ("q_text", "dim", 1e12, "must be an integer", ASSIGN_Q_TEXT, "{tmp}/out"),
          ("q_text", "codebook_sizes", [8, 0], "must list integers between 1", ASSIGN_Q_TEXT, "{tmp}/out"),
          ("q_text", "normalize", "yes", "must be true or false", ASSIGN_Q_TEXT, "{tmp}/out"),
      ]],
    *[Case(f"{artifact} config that does not match its weights ({key} {value})",
           bad_config(artifact, setting(key, value)), command, 1,
           [f"{{tmp}}/{artifact}/model.safetensors does not match", "size mismatch", name], out=out)
      for artifact, key, value, name, command, out in [
          ("generator", "d_ff", 4096, "DenseReluDense.w", evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("sasrec", "max_history", 5000, "pos_emb.weight", evaluate("{tmp}/sasrec"), "{tmp}/m.json"),
          ("q_text", "dim", 10**6, "codebooks.0", ASSIGN_Q_TEXT, "{tmp}/out"),
      ]],
    *[Case(f"{artifact} {file} {what}", bad_config(artifact, content, file), command, 1, [f"{artifact}/{file}", needle],
           out=out)
      for artifact, file, what, content, needle, command, out in [
          ("sasrec", "config.json", "nested 100,000 deep", "[" * 100_000, "nests too deeply", evaluate("{tmp}/sasrec"),
           "{tmp}/m.json"),
          ("sasrec", "meta.json", "nested 100,000 deep", "[" * 100_000, "nests too deeply", evaluate("{tmp}/sasrec"),
           "{tmp}/m.json"),
          ("generator", "config.json", "with a 5,000-digit integer", '{"d_ff": 1' + "0" * 5000 + "}",
           "is not an mscg file", evaluate("{tmp}/generator"), "{tmp}/m.json"),
          ("q_text", "meta.json", "with a 5,000-digit integer", '{"kind": "quantizer", "n": 1' + "0" * 5000 + "}",
           "is not an mscg file", ASSIGN_Q_TEXT, "{tmp}/out"),
      ]],
    Case("generator meta beam_size too large", bad_config("generator", setting("beam_size", 10**30), "meta.json"),
         evaluate("{tmp}/generator"), 1, ["generator/meta.json", "beam_size must be an integer"], out="{tmp}/m.json"),
    # ---- digests: an artifact found through meta.json must be the one recorded there
    Case("embeddings edited after quantize", quantizer_on_edited_embeddings,
         "assign-codes -d {pipe.data} -q {tmp}/q -o {out}", 1,
         ["{tmp}/emb is not the embeddings {tmp}/q was made from", "SHA-256", "--no-verify"]),
    Case("codes swapped after train", generator_on_swapped_codes, evaluate("{tmp}/gen"), 1,
         ["{tmp}/gen/codes is not the codes {tmp}/gen was made from", "--no-verify"], out="{tmp}/m.json"),
    Case("codes swapped after train (an old model folder)", old_generator_on_swapped_codes,
         evaluate("{tmp}/gen") + " --codes {tmp}/codes", 1,
         ["{tmp}/codes is not the codes {tmp}/gen was made from", "--no-verify"], out="{tmp}/m.json"),
    Case("model folder without its codes", without_its_codes, evaluate("{tmp}/gen"), 1,
         ["{tmp}/gen/codes is missing", "copy the whole directory", "--codes"], out="{tmp}/m.json"),
    Case("other codes of the same layout and items",
         steps(write("{tmp}/h.jsonl", H_JSONL), lambda c: swapped_codes(copy_artifact(c.pipe.codes, c.tmp / "c"))),
         "recommend {pipe.generator} --codes {tmp}/c -i {tmp}/h.jsonl -o {out}", 1,
         ["{tmp}/c is not the codes {pipe.generator} was made from"], out="{tmp}/recs.jsonl"),
    # ---- outputs inside what an input was made from (found through meta.json)
    Case("evaluate output inside the model's codes", None, evaluate("{pipe.generator}"), 2,
         ["would be written inside the input {pipe.codes}"], out="{pipe.codes}/m.json"),
    Case("recommend output inside the model's codes", write("{tmp}/h.jsonl", H_JSONL),
         "recommend {pipe.generator} -i {tmp}/h.jsonl -o {out}", 2, ["would be written inside the input {pipe.codes}"],
         out="{pipe.codes}/recs.jsonl"),
    Case("assign-codes output inside the quantizer's embeddings", None,
         "assign-codes -d {pipe.data} -q {pipe.q_text} -o {out}", 2,
         ["would be written inside the input {pipe.emb_text}"],
         out="{pipe.emb_text}/codes"),
    # ---- knowable failures first: before any image is read, any text encoded
    Case("missing last image found first", images_with_the_last_missing,
         "embed --modality image -d {data} -o {out} --device cpu", 1, ["'i0'", "does not exist", "--skip-bad-images"]),
    Case("read-only output folder found first", read_only_output_folder, EMBED, 1, ["cannot write {tmp}/ro/emb"],
         out="{tmp}/ro/emb"),
    # ---- links, locks, full disks
    Case("planted partial link with resume", planted_link("{tmp}/.emb.partial", "{tmp}/victim", "emb_text"),
         "collab -d {data} -o {tmp}/emb --resume " + SASREC, 2, ["{tmp}/.emb.partial is a symbolic link"], out=None,
         unchanged="{tmp}/victim/meta.json"),
    Case("planted partial link of a file output", planted_link("{tmp}/.m.json.partial", "{tmp}/victim.txt"),
         "evaluate {pipe.sasrec} -d {pipe.data} -o {tmp}/m.json", 2, ["{tmp}/.m.json.partial is a symbolic link"],
         out=None, unchanged="{tmp}/victim.txt"),
    Case("output is a link", planted_link("{tmp}/q", "{tmp}/victim", "q_text"),
         "quantize --modality text --embeddings {pipe.emb_text} -o {tmp}/q --force", 2,
         ["output {tmp}/q is a symbolic link"], out=None, unchanged="{tmp}/victim/model.safetensors"),
    Case("another process writes the output", held_lock, COLLAB, 1, ["another mscg process", "is writing {out}"]),
    Case("full disk saving embeddings", no_space_when_saving("mscg.artifacts.embeddings", "save_file"),
         import_embeddings("{pipe.work}/text.npy"), 1,
         ["no space left on device while writing {out}", "free some space"]),
    Case("full disk saving a quantizer", no_space_when_saving("mscg.artifacts.modeldir", "save_model"),
         quantize("{pipe.emb_text}"), 1, ["no space left on device while writing {out}"]),
    # ---- compare, assign-codes --embeddings, click's own usage errors
    Case("compare input nested 100,000 deep", write("{tmp}/m.json", '{"users": 1, "x": ' + "[" * 100_000),
         "compare a={tmp}/m.json -o {out}", 1, ["m.json nests too deeply"], out="{tmp}/all.json"),
    Case("compare input nested 500 deep", write("{tmp}/m.json", '{"users": 1, "x": ' + "[" * 500 + "]" * 500 + "}"),
         "compare a={tmp}/m.json -o {out}", 1, ["m.json nests more than 32 levels deep"], out="{tmp}/all.json"),
    Case("compare metric not a number", write("{tmp}/m.json", '{"users": 1, "ndcg@10": "high"}'),
         "compare a={tmp}/m.json -o {out}", 1, ['m.json: "ndcg@10" must be a number'], out="{tmp}/all.json"),
    Case("compare unknown --format", write("{tmp}/m.json", M_JSON), "compare a={tmp}/m.json -o {out} --format xml",
         2, ["Invalid value for '--format': 'xml' is not one of 'json', 'csv', 'md'"], out="{tmp}/all.json"),
    Case("evaluate unknown --format", None, evaluate("{pipe.sasrec}") + " --format yaml", 2,
         ["Invalid value for '--format': 'yaml' is not one of 'json', 'csv', 'md'"], out="{tmp}/m.json"),
    Case("force never writes through an output link",
         steps(planted_link("{tmp}/all.json", "{tmp}/victim.txt"), write("{tmp}/m.json", M_JSON)),
         "compare a={tmp}/m.json -o {tmp}/all.json --force", 2, ["output {tmp}/all.json is a symbolic link"],
         out=None, unchanged="{tmp}/victim.txt"),
    Case("force never replaces a FIFO", steps(lambda c: os.mkfifo(c.tmp / "all.json"), write("{tmp}/m.json", M_JSON)),
         "compare a={tmp}/m.json -o {tmp}/all.json --force", 2,
         ["{tmp}/all.json is not a regular file (a FIFO, device or socket)", "even with --force"], out=None),
    Case("force never replaces a directory by a file", steps(lambda c: (c.tmp / "all.json").mkdir(),
                                                             write("{tmp}/m.json", M_JSON)),
         "compare a={tmp}/m.json -o {tmp}/all.json --force", 2, ["{tmp}/all.json is a directory"], out=None),
    Case("evaluate --force never replaces a directory", lambda c: (c.tmp / "m.json").mkdir(),
         "evaluate {pipe.sasrec} -d {pipe.data} -o {tmp}/m.json --force", 2, ["{tmp}/m.json is a directory"],
         out=None),
    Case("embeddings for a modality without its quantizer", None,
         "assign-codes -d {pipe.data} -q {pipe.q_text} --embeddings image={pipe.emb_text} -o {out}", 2,
         ["--embeddings image=", "no --quantizer quantizes image"]),
    Case("unknown option is one line", None, EMBED + " --nope", 2, ["No such option: --nope", "--help"]),
    Case("missing option is one line", None, "embed -d {data}", 2, ["Missing option '--output'"]),
    Case("invalid option value is one line", None, EMBED + " --batch-size many", 2,
         ["Invalid value for '--batch-size'"]),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused(case: Case, request, tmp_path):
    c = Ctx(request, tmp_path)
    out = Path(c.fill(case.out)) if case.out is not None else None
    if out is not None:  # else `{out}` names no path: a row without `out` spells its output path out
        c.out = out
    if case.setup is not None:
        case.setup(c)
    before = Path(c.fill(case.unchanged)).read_bytes() if case.unchanged else None
    result = invoke(*(c.fill(word) for word in case.args.split()))
    assert_refused(result, case.code, *(c.fill(needle) for needle in case.needles), output=out)
    assert not c.marker.exists(), "a pickle ran"
    if out is not None and "held_lock" not in vars(c):
        assert not lock_path(out).exists(), f"{lock_path(out)} was left behind"
    if case.unchanged:
        assert Path(c.fill(case.unchanged)).read_bytes() == before, f"{case.unchanged} changed"


# ---- cases that are not a single refusal ----------------------------------------------------------

def test_bad_image_skipped_on_request(tmp_path):
    pytest.importorskip("mscg.encoders.image", reason="mscg.encoders.image does not import yet")
    data = image_data(tmp_path, "corrupt")
    out = tmp_path / "out"
    result = invoke("embed", "--modality", "image", "-d", data, "-o", out, "--device", "cpu", "--skip-bad-images")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["item_ids"] == ["i1"]
    assert "1 unreadable images skipped" in result.stderr
    named = " ".join(result.stderr.split())
    assert "--skip-bad-images skipped 1 unreadable image: item 'i0': image file" in named and "bad.jpg" in named


def test_skipped_images_are_named_then_counted(tmp_path):
    """--skip-bad-images names the first five skipped items and files on stderr, then counts the rest."""
    pytest.importorskip("mscg.encoders.image", reason="mscg.encoders.image does not import yet")
    data = image_data(tmp_path, "corrupt")
    missing = [{"item_id": f"gone{k}", "image": f"img/gone{k}.jpg"} for k in range(6)]
    with (data / "items.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in missing)
    result = invoke("embed", "--modality", "image", "-d", data, "-o", tmp_path / "out", "--device", "cpu",
                    "--skip-bad-images")
    assert result.exit_code == 0, result.output
    named = " ".join(result.stderr.split())
    assert "skipped 7 unreadable images: item 'i0': image file" in named
    assert all(f"item 'gone{k}': image file {data / 'img'}/gone{k}.jpg does not exist" in named for k in range(4))
    assert "gone4" not in named and "; and 2 more" in named


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


def test_negative_seed(data, tmp_path):  # refused by click itself, before mscg's `error:` line
    out = tmp_path / "out"
    result = invoke("collab", "-d", data, "-o", out, *TINY_SASREC, "--seed", "-1")
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output
    assert not out.exists() and not partial_path(out).exists()


def test_pickle_as_resume_checkpoint(data, tmp_path):  # the partial directory is the input here
    marker = tmp_path / "PWNED"
    out = tmp_path / "out"
    partial_path(out).mkdir()
    torch.save({"payload": Evil(marker)}, partial_path(out) / "resume.pt")
    result = invoke("collab", "-d", data, "-o", out, *TINY_SASREC, "--resume")
    assert_refused(result, 1, "resume.pt is not a readable mscg checkpoint", "drop --resume")
    assert not out.exists()
    assert not marker.exists()


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


# ---- hardening: the cases that are not one refusal -------------------------------------------------

def test_a_huge_text_is_cut_before_tokenizing(tiny_text_model, tmp_path, monkeypatch):
    """A 2 MB text field: the tokenizer sees a bounded number of characters (memory stays bounded), and
    stderr says how many texts were cut."""
    import mscg.encoders.text

    write_jsonl(tmp_path / "data" / "items.jsonl", [{"item_id": "huge", "text": "word " * 400_000},
                                                    {"item_id": "small", "text": "a short one"}])
    write_jsonl(tmp_path / "data" / "interactions.jsonl", [])
    longest = []
    real_load = mscg.encoders.text.load_text_model

    def load(model_dir, device):
        tokenizer, model = real_load(model_dir, device)

        def spy(texts, *args, **kwargs):
            longest.append(max(map(len, texts)))
            return tokenizer(texts, *args, **kwargs)

        return spy, model

    monkeypatch.setattr(mscg.encoders.text, "load_text_model", load)
    out = tmp_path / "emb"
    result = invoke("embed", "--modality", "text", "-d", tmp_path / "data", "-o", out, "--model", tiny_text_model,
                    "--device", "cpu")
    assert longest and max(longest) <= 256 * 64, f"the tokenizer saw {max(longest):,} characters"
    assert result.exit_code == 0, result.output
    assert "1 item text is longer than" in result.stderr and "was cut" in result.stderr
    assert json.loads((out / "meta.json").read_text())["item_ids"] == ["huge", "small"]


def test_a_link_inside_a_reused_partial_is_not_followed(data, tmp_path):
    """--resume reuses a partial directory for its checkpoint only: a link planted inside it is removed, never
    written through."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    out = tmp_path / "emb"
    partial_path(out).mkdir()
    (partial_path(out) / "meta.json").symlink_to(victim)
    result = invoke("collab", "-d", data, "-o", out, *TINY_SASREC, "--resume")
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"precious"
    assert not (out / "meta.json").is_symlink() and (out / "meta.json").is_file()
    assert not partial_path(out).exists() and not lock_path(out).exists()


def two_epochs() -> list[str]:
    args = list(TINY_SASREC)
    args[args.index("--epochs") + 1] = "2"
    return args


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_for_resume(data, tmp_path, monkeypatch):
    """torch.save fails on a full disk with a RuntimeError that does not say why: mscg names the full disk,
    removes the partial output but the last good checkpoint, and --resume then finishes the run."""
    import mscg.artifacts.atomic as atomic

    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) == 2:  # the checkpoint of epoch 2
            Path(f).write_bytes(b"\0" * 64)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 0)  # as a full disk reports it
    out = tmp_path / "emb"
    result = invoke("collab", "-d", data, "-o", out, *two_epochs())
    assert_refused(result, 1, f"no space left on device while writing {out}", "--resume")
    assert not out.exists() and not lock_path(out).exists()
    assert sorted(p.name for p in partial_path(out).iterdir()) == ["resume.pt"]
    monkeypatch.undo()
    result = invoke("collab", "-d", data, "-o", out, *two_epochs(), "--resume")
    assert result.exit_code == 0, result.output
    assert "resumed from step" in result.stderr
    assert (out / "embeddings.safetensors").exists() and not partial_path(out).exists()


@pytest.fixture
def small_fs(tmp_path):
    """A real 256 KiB file system (tmpfs; Linux, as root), else the test is skipped."""
    import os
    import subprocess
    import sys

    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a small file system needs Linux and root (tmpfs)")
    mount = tmp_path / "fs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                             check=False)
    if mounted.returncode:
        pytest.skip("tmpfs cannot be mounted here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def fill(fs: Path, leave: int) -> Path:
    """Fill the file system but `leave` bytes."""
    import shutil

    filler = fs / "filler"
    filler.write_bytes(b"\0" * max(0, shutil.disk_usage(fs).free - leave))
    return filler


@pytest.mark.parametrize("stage", ["import-embeddings", "collab"])
def test_a_real_full_disk(stage, pipe, data, small_fs):
    """On a real full file system: one line naming the full disk, nothing left behind, and the same command
    succeeds once there is space (collab with --resume)."""
    out = small_fs / "out"
    args = (["import-embeddings", "-d", pipe.data, "--vectors", pipe.work / "text.npy", "--ids",
             pipe.work / "ids.txt", "--modality", "text", "-o", out] if stage == "import-embeddings"
            else ["collab", "-d", data, "-o", out, *TINY_SASREC])
    filler = fill(small_fs, 4096 if stage == "collab" else 1024)
    result = invoke(*args)
    assert_refused(result, 1, f"no space left on device while writing {out}")
    assert not out.exists() and not lock_path(out).exists()
    assert not partial_path(out).exists() or sorted(p.name for p in partial_path(out).iterdir()) == ["resume.pt"]
    filler.unlink()
    result = invoke(*args, *(["--resume"] if stage == "collab" else []))
    assert result.exit_code == 0, result.output
    assert out.is_dir() and not partial_path(out).exists()


def test_a_stale_lock_file_is_taken_over(data, tmp_path):
    """A lock file left by a killed run (kill -9) holds no lock: the next run takes it, and removes it."""
    out = tmp_path / "emb"
    lock_path(out).write_text("12345\n")
    result = invoke("collab", "-d", data, "-o", out, *TINY_SASREC)
    assert result.exit_code == 0, result.output
    assert out.is_dir() and not lock_path(out).exists()


def test_no_verify_uses_changed_inputs(pipe, tmp_path):
    """--no-verify skips the digest check (the embeddings of a quantizer, the codes of a generator)."""
    c = Ctx(None, tmp_path)
    c.pipe = pipe
    quantizer_on_edited_embeddings(c)
    ok("assign-codes", "-d", pipe.data, "-q", tmp_path / "q", "-o", tmp_path / "codes", "--no-verify")
    other = copy_artifact(pipe.codes, tmp_path / "other")
    swapped_codes(other)
    ok("evaluate", pipe.generator, "-d", pipe.data, "--codes", other, "--no-verify")
    (tmp_path / "h.jsonl").write_text(H_JSONL)
    ok("recommend", pipe.generator, "--codes", other, "-i", tmp_path / "h.jsonl", "-o", tmp_path / "r.jsonl",
       "--no-verify")


def test_compare_writes_nan_as_null(tmp_path):
    """A NaN metric (not JSON; mscg never writes one) becomes null, and a warning says so: the JSON compare
    writes is valid for every reader."""
    (tmp_path / "m.json").write_text('{"users": 3, "ndcg@10": NaN, "recall@10": 0.5}')
    out = tmp_path / "all.json"
    result = invoke("compare", f"a={tmp_path / 'm.json'}", "-o", out)
    assert result.exit_code == 0, result.output
    assert f'warning: {tmp_path / "m.json"}: "ndcg@10" is nan' in result.stderr and "written as null" in result.stderr
    strict = json.loads(out.read_text(), parse_constant=lambda token: pytest.fail(f"{token} in the JSON"))
    assert strict == {"a": {"users": 3, "ndcg@10": None, "recall@10": 0.5}}


def test_a_diverged_run_writes_nothing_and_keeps_its_checkpoint(pipe, tmp_path):
    """A loss that stops being finite stops training with one line naming the epoch and step and a lower --lr;
    nothing is written, and the last checkpoint (of finite weights) is kept for --resume."""
    out = tmp_path / "emb"
    result = invoke("collab", "-d", pipe.data, "-o", out, "--model-out", tmp_path / "m", *TINY_SASREC, "--epochs", "2",
                    "--lr", "1e30")
    line = assert_refused(result, 1, "training diverged at epoch 2, step 2", "the loss is nan", "lower --lr than 1e+30",
                          "add --resume to continue from its last checkpoint (step 1)")
    assert "nothing was written" in line and not out.exists() and not (tmp_path / "m").exists()
    assert [p.name for p in partial_path(out).iterdir()] == ["resume.pt"]
    state = torch.load(partial_path(out) / "resume.pt", weights_only=True)["model"]
    assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_serve_and_load_refuse_nan_weights(pipe, tmp_path):
    """`mscg.load` and `serve` refuse a model with a NaN weight before anything is served."""
    import mscg
    from mscg.commands.serve import serve
    from mscg.errors import DataError

    c = Ctx(None, tmp_path)
    c.pipe = pipe
    nan_weights("sasrec")(c)
    with pytest.raises(DataError, match="NaN or infinite"):
        mscg.load(tmp_path / "model")
    with pytest.raises(DataError, match="NaN or infinite"):
        serve(tmp_path / "model", port=0, on_ready=lambda url: pytest.fail(f"served at {url}"))


def test_predict_collab_names_the_rows_it_drops(pipe, tmp_path):
    """Collab rows of items that items.jsonl does not list are dropped with a warning, and meta.json names them."""
    from mscg.artifacts.embeddings import Embeddings, load_embeddings, save_embeddings

    trained = load_embeddings(pipe.emb_collab)
    (tmp_path / "collab").mkdir()
    save_embeddings(tmp_path / "collab", Embeddings("collab", [*trained.item_ids, "ghost"],
                                                    torch.cat([trained.vectors, trained.vectors[:1]])),
                    source=trained.meta["source"], provenance={})
    result = invoke("predict-collab", "-d", pipe.data, "--collab", tmp_path / "collab", "--content", pipe.emb_text,
                    "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "dropped 1 collab embeddings of items that" in result.stderr and "'ghost'" in result.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["source"]["dropped_item_ids"] == ["ghost"] and "ghost" not in meta["item_ids"]


def test_a_file_size_limit_while_training(pipe, tmp_path):
    """A file-size limit (EFBIG, as `ulimit -f` or a quota gives) while `train` writes: one line naming the
    limit, no traceback, nothing left behind; the same command succeeds without the limit."""
    import resource
    import subprocess
    import sys

    out = tmp_path / "gen"
    args = [sys.executable, "-m", "mscg", "train", "-d", str(pipe.data), "--codes", str(pipe.codes), "-o", str(out),
            *TINY_GENERATOR]
    limit = 16 * 1024  # bytes: the checkpoint and the weights are larger

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(args, capture_output=True, text=True, env=env, preexec_fn=limited, check=False)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[-1].startswith(f"error: a file grew past the file-size limit (ulimit -f) while writing {out}")
    assert "raise the limit" in lines[-1]
    assert not out.exists() and not partial_path(out).exists() and not lock_path(out).exists()
    assert subprocess.run(args, capture_output=True, env=env, check=False).returncode == 0
