"""No file outside its folder: every path a dataset or a model folder names is read only inside that folder.

One row of CASES per case, driven through the CLI as a user would: an items.jsonl whose `image` climbs out with
`..`, is absolute, is a symbolic link to a file outside or passes through a linked folder, for every stage that
reads images (`prepare` with and without --copy-images, `embed --modality image`, `quantize --method rq-dino`,
`assign-codes`); an --images folder whose files lead out of it; an --image-pattern that climbs out; a model
folder whose meta.json names codes outside it (`evaluate`, `recommend`); `train -o` inside what its codes were
made from. Each: one line on stderr, exit 1 (data) or 2 (usage), no traceback, no output, the inputs untouched
and the file outside copied nowhere. Then what keeps working: item ids that would climb out of --images are
escaped, not followed, and images in a subfolder, a link or a `..` that stays inside, and a dataset folder
reached through a link are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mscg.artifacts.atomic import lock_path
from tests.conftest import write_jsonl
from tests.helpers import (
    TINY_GENERATOR,
    CaseContext,
    Pipeline,
    assert_refused,
    build_tiny_pipeline,
    copy_artifact,
    edit_json,
    image_catalogue,
    invoke,
    ok,
    one_thread,  # noqa: F401 (fixture: tiny models on one thread)
    pattern_image,
    set_line,
)

TINY_DINO = "--modality image --method rq-dino --image-size 32 --epochs 1 --batch-size 4 --n-levels 2 " \
            "--codebook-size 4 --device cpu"
SYSTEM_FILES = [Path("/etc/passwd"), Path("/etc/shadow")]  # copied nowhere either, where this machine has them


def image_dataset(root: Path) -> Path:
    """ROOT/data: items i0..i3 and `evil` (line 5), each with an image in data/img/, and interactions of 6 users."""
    data = image_catalogue(root, 4, without_image=0)
    pattern_image(2, seed=5).save(data / "img" / "evil.jpg")
    with open(data / "items.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"item_id": "evil", "text": "item evil", "image": "img/evil.jpg"}) + "\n")
    ids = ["i0", "i1", "i2", "i3", "evil"]
    write_jsonl(data / "interactions.jsonl", [{"user_id": f"u{u}", "item_id": ids[(u + k) % 5], "timestamp": k}
                                              for u in range(6) for k in range(3)])
    return data


def recbole_source(root: Path, ids: Sequence[str]) -> Path:
    """ROOT/src/d.inter: 6 users over the items `ids` (RecBole atomic files)."""
    src = root / "src"
    src.mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"u{u}\t{ids[(u + k) % len(ids)]}\t{k}" for u in range(6) for k in range(3)]
    (src / "d.inter").write_text("\n".join(lines) + "\n")
    return src


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_copied_nowhere(root: Path, originals: Sequence[Path]) -> None:
    """No regular file under `root` but the originals themselves has an original's bytes, and no original has a
    second name (a hard link)."""
    readable = [p for p in originals if os.access(p, os.R_OK)]
    wanted = {digest(p): p for p in readable}
    keep = {os.path.realpath(p) for p in readable}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path) or os.path.realpath(path) in keep:
                continue
            assert digest(Path(path)) not in wanted, f"{path} is a copy of {wanted[digest(Path(path))]}"
    for p in readable:
        assert os.stat(p).st_nlink == 1, f"{p} was hard-linked"


# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("bad-paths"), sasrec=False)


@pytest.fixture(scope="module")
def dino(tmp_path_factory) -> Path:
    """An rq-dino quantizer trained on a clean image dataset with the same items as `image_dataset`."""
    root = tmp_path_factory.mktemp("dino")
    ok("quantize", *TINY_DINO.split(), "-d", image_dataset(root), "-o", root / "q")
    return root / "q"


# ---- the table ------------------------------------------------------------------------------------

class Ctx(CaseContext):
    """What a case sees: `tmp`, `out`, `secret` (tmp/outside/secret.jpg, a readable image outside every folder
    a case names), `data` (a fresh `image_dataset`), and the fixtures by name (`pipe`, `dino`), requested on
    first use."""

    def __init__(self, request, tmp: Path):
        super().__init__(request, tmp)
        (tmp / "outside").mkdir()
        self.secret = tmp / "outside" / "secret.jpg"
        pattern_image(3, seed=99).save(self.secret)
        os.chmod(self.secret, 0o640)  # readable by its group only, like /etc/shadow
        self.originals = [self.secret, *SYSTEM_FILES]  # files outside that must be copied nowhere
        self.data = image_dataset(tmp)
        self.posters = tmp / "posters"



@dataclass(frozen=True)
class Case:
    """Run `args` (split on spaces, each word filled in from the Ctx) after `setup(ctx)`; expect exit `code` and
    one error line holding every needle (filled in too), nothing at `out`, the inputs (items.jsonl, the secret,
    `unchanged`) byte for byte as they were, and the secret and the system files copied nowhere."""

    id: str
    setup: Callable[[Ctx], object] | None
    args: str
    code: int
    needles: Sequence[str]
    out: str = "{tmp}/out"
    unchanged: str | None = None


def evil_image(image: Callable[[Ctx], str], prepare: Callable[[Ctx], object] | None = None):
    """Setup: item `evil` (line 5 of data/items.jsonl) names the image `image(ctx)`, after `prepare(ctx)`."""
    def setup(c: Ctx):
        if prepare is not None:
            prepare(c)
        set_line(c.data / "items.jsonl", 5, json.dumps({"item_id": "evil", "text": "item evil", "image": image(c)}))
    return setup


def link(at: str, to: str):
    """Setup: a symbolic link at `at` to `to` (both filled in)."""
    return lambda c: Path(c.fill(at)).symlink_to(c.fill(to))


ESCAPES = [  # (id, setup, what the error says)
    ("climbs out with ..", evil_image(lambda c: "../outside/secret.jpg"), "climbs out of the folder with `..`"),
    ("climbs out to /etc/passwd", evil_image(lambda c: "../" * 40 + "etc/passwd"), "climbs out of the folder"),
    ("absolute path", evil_image(lambda c: str(c.secret)), "is an absolute path"),
    ("absolute /etc/shadow", evil_image(lambda c: "/etc/shadow"), "is an absolute path"),
    ("linked file", evil_image(lambda c: "img/cover.jpg", link("{data}/img/cover.jpg", "{secret}")),
     "leads out of the folder through a symbolic link (to {secret})"),
    ("linked folder", evil_image(lambda c: "img/shelf/secret.jpg", link("{data}/img/shelf", "{tmp}/outside")),
     "leads out of the folder through a symbolic link (to {secret})"),
]
IMAGE_READERS = [  # (id, command line)
    ("prepare --copy-images", "prepare {data} -o {out} --copy-images"),
    ("prepare", "prepare {data} -o {out} --min-user-interactions 1"),
    ("embed", "embed --modality image -d {data} -o {out} --device cpu"),
    ("embed --skip-bad-images", "embed --modality image -d {data} -o {out} --device cpu --skip-bad-images"),
    ("quantize rq-dino", f"quantize {TINY_DINO} -d {{data}} -o {{out}}"),
    ("assign-codes rq-dino", "assign-codes -d {data} -q {dino} -o {out} --device cpu"),
]


def posters(c: Ctx) -> None:
    """tmp/posters/i0..i3.jpg and tmp/src, RecBole files over the items i0..i3."""
    c.posters.mkdir()
    for k in range(4):
        pattern_image(k, seed=k).save(c.posters / f"i{k}.jpg")
    recbole_source(c.tmp, ["i0", "i1", "i2", "i3"])


def steps(*setups):
    def setup(c: Ctx):
        for s in setups:
            s(c)
    return setup


def linked_poster(c: Ctx) -> None:
    (c.posters / "i1.jpg").unlink()
    (c.posters / "i1.jpg").symlink_to(c.secret)


def poster_outside(c: Ctx) -> None:
    """tmp/outside/i1.jpg, which --image-pattern shelf/{item_id}.jpg would name through the linked shelf/."""
    pattern_image(1, seed=42).save(c.tmp / "outside" / "i1.jpg")
    c.originals.append(c.tmp / "outside" / "i1.jpg")


def moved_codes(codes: str | Callable[[Ctx], str], linked: bool = False):
    """Setup: tmp/models/gen, a copy of the generator without its codes/; a copy of its codes at tmp/x, which
    meta.json names as `codes` (or, `linked`, which gen/codes links to); tmp/h.jsonl, histories."""
    def setup(c: Ctx):
        gen = copy_artifact(c.pipe.generator, c.tmp / "models" / "gen")
        shutil.rmtree(gen / "codes")
        copy_artifact(c.pipe.codes, c.tmp / "x")
        if linked:
            (gen / "codes").symlink_to(c.tmp / "x")
        else:
            edit_json(gen / "meta.json", lambda meta: meta.update(codes=codes(c) if callable(codes) else codes))
        (c.tmp / "h.jsonl").write_text(json.dumps({"user_id": "me", "history": ["i0", "i1"]}) + "\n")
    return setup


MODEL_COMMANDS = [  # (id, command line, output)
    ("evaluate", "evaluate {tmp}/models/gen -d {pipe.data} -o {tmp}/m.json --device cpu", "{tmp}/m.json"),
    ("recommend", "recommend {tmp}/models/gen -i {tmp}/h.jsonl -o {tmp}/r.jsonl --device cpu", "{tmp}/r.jsonl"),
]
CODES_ESCAPES = [  # (id, setup, what the error says)
    ("codes ../../x", moved_codes("../../x"), "names the codes '../../x', which climbs out of the folder with `..`"),
    ("codes absolute", moved_codes(lambda c: str(c.tmp / "x")), "names the codes '{tmp}/x', which is an absolute path"),
    ("codes/ linked outside", moved_codes("codes", linked=True),
     "names the codes 'codes', which leads out of the folder through a symbolic link (to {tmp}/x)"),
]

TRAIN = "train -d {pipe.data} --codes {pipe.codes} " + " ".join(TINY_GENERATOR)

CASES = [
    # ---- an items.jsonl image outside the dataset folder, for every stage that reads images
    *[Case(f"{reader}: {escape}", setup, args, 1, ["items.jsonl line 5", "the image", "of item 'evil'", why,
                                                    "mscg reads only images inside the dataset folder {data}",
                                                    "copy the file into it"])
      for escape, setup, why in ESCAPES for reader, args in IMAGE_READERS],
    # ---- prepare --images DIR: a file of DIR that leads out of it, a pattern that climbs out
    *[Case(f"--images: a linked file{flag}", steps(posters, linked_poster),
           "prepare {tmp}/src -o {out} --images {posters}" + flag, 1,
           [("--images {posters}: i1.jpg, the image of item 'i1', leads out of the folder through a symbolic link "
             "(to {secret})"), "copy the file into it"]) for flag in ("", " --copy-images")],
    Case("--images: a linked folder", steps(posters, link("{posters}/shelf", "{tmp}/outside"), poster_outside),
         "prepare {tmp}/src -o {out} --images {posters} --image-pattern shelf/{{item_id}}.jpg", 1,
         ["shelf/i0.jpg, the image of item 'i0', leads out of the folder through a symbolic link"]),
    Case("--image-pattern climbs out", posters,
         "prepare {tmp}/src -o {out} --images {posters} --image-pattern ../outside/{{item_id}}.jpg --copy-images", 2,
         ["--image-pattern '../outside/{{item_id}}.jpg' must name a file inside --images", "without `..`"]),
    Case("--image-pattern absolute", posters,
         "prepare {tmp}/src -o {out} --images {posters} --image-pattern {tmp}/outside/{{item_id}}.jpg", 2,
         ["must name a file inside --images: a relative path"]),
    # ---- a model folder's codes outside it
    *[Case(f"{command}: {escape}", setup, args, 1, ["{tmp}/models/gen/meta.json " + why, "pass --codes",
                                                    "re-create the folder with `mscg train`"], out=out)
      for escape, setup, why in CODES_ESCAPES for command, args, out in MODEL_COMMANDS],
    # ---- train writes nowhere inside what its codes were made from
    Case("train -o inside a quantizer of its codes", None, TRAIN + " -o {pipe.q_text}/gen", 2,
         ["output {pipe.q_text}/gen would be written inside the input", "q_text"], out="{pipe.q_text}/gen",
         unchanged="{pipe.q_text}/model.safetensors"),
    Case("train -o inside the quantizer of its other modality", None, TRAIN + " -o {pipe.q_collab}/sub/gen", 2,
         ["would be written inside the input", "q_collab"], out="{pipe.q_collab}/sub/gen"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused(case: Case, request, tmp_path):
    c = Ctx(request, tmp_path)
    out = Path(c.fill(case.out))
    c.out = out
    if case.setup is not None:
        case.setup(c)
    inputs = [c.data / "items.jsonl", c.secret] + ([Path(c.fill(case.unchanged))] if case.unchanged else [])
    before = [p.read_bytes() for p in inputs]
    mode = os.stat(c.secret).st_mode
    result = invoke(*(c.fill(word) for word in case.args.split()))
    assert_refused(result, case.code, *(c.fill(needle) for needle in case.needles), output=out)
    assert not lock_path(out).exists(), f"{lock_path(out)} was left behind"
    assert [p.read_bytes() for p in inputs] == before, "an input changed"
    assert os.stat(c.secret).st_mode == mode
    assert_copied_nowhere(tmp_path, c.originals)
    if out.parent.is_dir():
        assert not any(out.parent.glob(f".{out.name}.*")), "a partial or lock sibling was left behind"


# ---- what keeps working ---------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,copy", [("{item_id}.jpg", True), ("{item_id}", False)])
def test_an_item_id_never_climbs_out_of_the_images_folder(tmp_path, pattern, copy):
    """Ids that would climb out of --images (`../outside/secret`, `..`, `.`) find no image, instead of the file
    they would name; a `/` in an id is %2F in the file name, and ids as they are ("42", "x y") keep working."""
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    pattern_image(3, seed=99).save(secret)
    suffix = ".jpg" if pattern.endswith(".jpg") else ""
    ids = ["42", "x y", "a/b", "../outside/secret" + ("" if suffix else ".jpg"), "..", "."]
    src = recbole_source(tmp_path, ids)
    folder = tmp_path / "posters"
    folder.mkdir()
    for k, name in enumerate(["42", "x y", "a%2Fb"]):
        pattern_image(k, seed=k).save(folder / f"{name}{suffix}", format="JPEG")
    out = tmp_path / "out"
    ok("prepare", src, "-o", out, "--images", folder, "--image-pattern", pattern, *(["--copy-images"] if copy else []))
    items = {r["item_id"]: r.get("image") for r in map(json.loads, (out / "items.jsonl").read_text().splitlines())}
    assert items == {"42": f"images/42{suffix}", "x y": f"images/x%20y{suffix}", "a/b": f"images/a%2Fb{suffix}",
                     ids[3]: None, "..": None, ".": None}
    assert (out / "images" / f"a%2Fb{suffix}").read_bytes() == (folder / f"a%2Fb{suffix}").read_bytes()
    assert_copied_nowhere(tmp_path, [secret, *SYSTEM_FILES])


def test_images_inside_the_dataset_folder_are_read(tmp_path):
    """A subfolder, a `..` and links that stay inside the folder, and the dataset folder reached through a link:
    every image is read, and prepare places each as the file it is."""
    data = image_dataset(tmp_path)
    (data / "img" / "alias.jpg").symlink_to("1.jpg")  # a link to a file inside
    (data / "shelf").symlink_to("img")  # a link to a folder inside
    extra = [{"item_id": "alias", "image": "img/alias.jpg"}, {"item_id": "up-down", "image": "img/../img/2.jpg"},
             {"item_id": "shelved", "image": "shelf/3.png"}, {"item_id": "no image"}]
    with open(data / "items.jsonl", "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in extra)
    with open(data / "interactions.jsonl", "a", encoding="utf-8") as f:  # so that the filter keeps them
        f.writelines(json.dumps({"user_id": "u0", "item_id": r["item_id"], "timestamp": 9}) + "\n" for r in extra)
    via = tmp_path / "via"
    via.symlink_to(data)
    out = ok("embed", "--modality", "image", "-d", via, "-o", tmp_path / "emb", "--device", "cpu")
    assert "8 of 9 items have an image embedding" in out
    out = ok("prepare", via, "-o", tmp_path / "copied", "--copy-images", "--min-user-interactions", "1")
    placed = tmp_path / "copied" / "images"
    assert not any(p.is_symlink() for p in placed.iterdir())
    assert (placed / "alias.jpg").read_bytes() == (data / "img" / "1.jpg").read_bytes()
    out = ok("prepare", via, "-o", tmp_path / "linked", "--min-user-interactions", "1")
    assert "hard-linked into images/" in out
    assert os.path.samefile(tmp_path / "linked" / "images" / "shelved.png", data / "img" / "3.png")
    assert os.path.samefile(tmp_path / "linked" / "images" / "alias.jpg", data / "img" / "1.jpg")
