"""`mscg prepare` on small RecBole atomic files written here: filters, seeded samples, the images placed in the
dataset folder (hard links, copies with --copy-images), an mscg dataset as the source, and the refusals.
(Image paths that would leave their folder: tests/commands/test_bad_paths.py.)"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from mscg.data.interactions import load_interactions
from mscg.data.items import load_catalogue
from tests.conftest import write_jsonl
from tests.helpers import assert_refused, invoke, ok, pattern_image

N_USERS, N_ITEMS = 12, 10


@pytest.fixture
def recbole(tmp_path: Path) -> Path:
    """src/d.inter (user_id, item_id, rating, timestamp) + src/d.item (title): user u<k> rates items
    k, k+1, ... (k + 2 + k % 5 of them), 5 stars when the item is even; i9 is never rated; item i8 only by u7."""
    src = tmp_path / "src"
    src.mkdir()
    lines, t = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"], 0
    for u in range(N_USERS):
        for j in range(2 + u % 5):
            item = (u + j) % 8
            t += 1
            lines.append(f"u{u}\ti{item}\t{5 if item % 2 == 0 else 2}\t{t}")
    lines.append(f"u7\ti8\t4\t{t + 1}")
    (src / "d.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\ttitle:token_seq"] + [f"i{k}\tFilm {k}" for k in range(N_ITEMS)]
    (src / "d.item").write_text("\n".join(items) + "\n")
    return src


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_plain_conversion_keeps_every_item(recbole: Path, tmp_path: Path):
    out = ok("prepare", recbole, "-o", tmp_path / "out")
    assert "10 items (10 with text, 0 with an image)" in out and "removed" not in out
    assert len(read(tmp_path / "out" / "interactions.jsonl")) == len(recbole.joinpath("d.inter").read_text()
                                                                       .splitlines()) - 1


def test_filters_run_in_order_and_report_what_they_removed(recbole: Path, tmp_path: Path):
    out = ok("prepare", recbole, "-o", tmp_path / "out", "--min-rating", "4", "--min-user-interactions", "2",
             "--min-item-interactions", "3")
    interactions = read(tmp_path / "out" / "interactions.jsonl")
    items = read(tmp_path / "out" / "items.jsonl")
    assert interactions and all(int(r["item_id"][1:]) % 2 == 0 for r in interactions)  # the 5-star ones
    # i8 (one rating, kept by --min-rating) falls to the k-core, and i9 (never rated) leaves items.jsonl too
    assert {r["item_id"] for r in items} == {r["item_id"] for r in interactions} <= {"i0", "i2", "i4", "i6"}
    assert all(set(r) == {"user_id", "item_id", "timestamp"} for r in interactions)
    assert "--min-rating 4 removed" in out and "--min-user-interactions 2 --min-item-interactions 3 removed" in out
    assert "1 items without any interaction dropped" in out
    catalogue = load_catalogue(tmp_path / "out" / "items.jsonl")
    assert len(load_interactions(tmp_path / "out" / "interactions.jsonl", catalogue)) == len(interactions)


def test_user_sample_same_seed_same_bytes(recbole: Path, tmp_path: Path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = ok("prepare", recbole, "-o", tmp_path / name, "--sample-users", "5", "--seed", seed)
        assert "interactions of 5 users" in out and f"--sample-users 5 --seed {seed} removed" in out
    for file in ("items.jsonl", "interactions.jsonl"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a" / "interactions.jsonl").read_bytes() != (tmp_path / "c" / "interactions.jsonl").read_bytes()


def test_copy_images_makes_a_folder_that_works_after_a_move(recbole: Path, tmp_path: Path):
    posters = tmp_path / "posters"
    posters.mkdir()
    for k in range(0, N_ITEMS, 2):  # the odd items have no poster
        pattern_image(k, seed=k).save(posters / f"i{k}.jpg")
    (posters / "originals").mkdir()
    (posters / "i2.jpg").rename(posters / "originals" / "i2.jpg")
    (posters / "i2.jpg").symlink_to("originals/i2.jpg")  # a link inside --images is copied as its file
    out = ok("prepare", recbole, "-o", tmp_path / "out", "--images", posters, "--copy-images")
    assert "5 with an image, copied into images/" in out
    placed = list((tmp_path / "out" / "images").iterdir())
    assert not any(p.is_symlink() for p in placed) and all(p.stat().st_nlink == 1 for p in placed)  # no hard link
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    shutil.move(tmp_path / "out", moved)
    shutil.rmtree(posters)
    catalogue = load_catalogue(moved / "items.jsonl")
    found = {i: p for i, p in zip(catalogue.item_ids, catalogue.images, strict=True) if p is not None}
    assert sorted(found) == ["i0", "i2", "i4", "i6", "i8"] and all(p.is_file() for p in found.values())
    assert all(str(p.relative_to(moved)).startswith("images/") for p in found.values())
    out = ok("embed", "--modality", "image", "-d", moved, "-o", tmp_path / "emb", "--device", "cpu")
    assert "5 of 10 items have an image embedding" in out


def test_without_copy_images_the_images_are_hard_linked_into_the_folder(recbole: Path, tmp_path: Path):
    """The dataset holds its images without copying them: a hard link is the same file under a second name, so
    the folder still works once moved and the --images folder removed."""
    posters = tmp_path / "posters"
    posters.mkdir()
    pattern_image(0).save(posters / "i0.jpg")
    pattern_image(4).save(posters / "i4.jpg")
    out = ok("prepare", recbole, "-o", tmp_path / "out", "--images", posters)
    assert "2 with an image, hard-linked into images/" in out
    items = read(tmp_path / "out" / "items.jsonl")
    assert [r.get("image") for r in items[:5]] == ["images/i0.jpg", None, None, None, "images/i4.jpg"]
    assert os.path.samefile(tmp_path / "out" / "images" / "i0.jpg", posters / "i0.jpg")
    before = (posters / "i4.jpg").read_bytes()
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "out", moved)
    shutil.rmtree(posters)
    assert (moved / "images" / "i4.jpg").read_bytes() == before
    assert (moved / "images" / "i0.jpg").stat().st_nlink == 1  # the last name of the file
    out = ok("embed", "--modality", "image", "-d", moved, "-o", tmp_path / "emb", "--device", "cpu")
    assert "2 of 10 items have an image embedding" in out


def test_where_no_hard_link_can_be_made_the_images_are_copied(recbole: Path, tmp_path: Path, monkeypatch):
    """Another file system (EXDEV), a file the user may not link (EPERM): a copy instead, said so in the line."""
    posters = tmp_path / "posters"
    posters.mkdir()
    for k in (0, 2, 4):
        pattern_image(k, seed=k).save(posters / f"i{k}.jpg")
    link = os.link

    def cross_device(source, dest, **kwargs):
        if str(source).endswith("i2.jpg"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return link(source, dest, **kwargs)

    monkeypatch.setattr(os, "link", cross_device)
    out = ok("prepare", recbole, "-o", tmp_path / "out", "--images", posters)
    assert "3 with an image, in images/: 2 hard-linked, 1 copied" in out
    placed = tmp_path / "out" / "images"
    assert [(placed / f"i{k}.jpg").stat().st_nlink for k in (0, 2, 4)] == [2, 1, 2]
    assert (placed / "i2.jpg").read_bytes() == (posters / "i2.jpg").read_bytes()


@pytest.mark.parametrize("source_mode,copy_mode", [(0o644, 0o644), (0o444, 0o644), (0o640, 0o600), (0o600, 0o600),
                                                   (0o604, 0o644)])
def test_a_copy_is_readable_by_others_only_where_its_source_is(recbole: Path, tmp_path: Path, source_mode: int,
                                                              copy_mode: int):
    """A group-only source (/etc/shadow is 0640) must not become readable by the copier's own group, or by all."""
    posters = tmp_path / "posters"
    posters.mkdir()
    pattern_image(0).save(posters / "i0.jpg")
    os.chmod(posters / "i0.jpg", source_mode)
    umask = os.umask(0o022)
    try:
        ok("prepare", recbole, "-o", tmp_path / "out", "--images", posters, "--copy-images")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out" / "images" / "i0.jpg").stat().st_mode) == copy_mode


def test_an_mscg_dataset_is_reshaped_with_its_fields_and_images(tmp_path: Path):
    src = tmp_path / "mine"
    (src / "pics").mkdir(parents=True)
    pattern_image(0).save(src / "pics" / "a.png")
    write_jsonl(src / "items.jsonl", [{"item_id": "a", "text": "A", "image": "pics/a.png", "year": 1999},
                                      {"item_id": "b", "text": "B"}, {"item_id": "c"}])
    write_jsonl(src / "interactions.jsonl", [
        {"user_id": u, "item_id": i, "timestamp": t, "rating": r, "device": "tv"}
        for t, (u, i, r) in enumerate([("u1", "a", 5), ("u1", "b", 5), ("u2", "a", 4), ("u2", "c", 1),
                                       ("u3", "b", 2)])])
    out = ok("prepare", src, "-o", tmp_path / "linked", "--min-rating", "4")
    assert "(an mscg dataset)" in out and "--min-rating 4 removed 2 interactions, 1 user, 1 item" in out
    items = read(tmp_path / "linked" / "items.jsonl")
    assert items == [{"item_id": "a", "text": "A", "image": "images/a.png", "year": 1999},
                     {"item_id": "b", "text": "B"}]
    assert os.path.samefile(tmp_path / "linked" / "images" / "a.png", src / "pics" / "a.png")
    assert read(tmp_path / "linked" / "interactions.jsonl")[0] == {"user_id": "u1", "item_id": "a", "timestamp": 0,
                                                                   "rating": 5, "device": "tv"}
    assert load_catalogue(tmp_path / "linked" / "items.jsonl").images[0].is_file()
    ok("prepare", src, "-o", tmp_path / "copied", "--copy-images")
    assert read(tmp_path / "copied" / "items.jsonl")[0]["image"] == "images/a.png"
    assert (tmp_path / "copied" / "images" / "a.png").read_bytes() == (src / "pics" / "a.png").read_bytes()
    assert not os.path.samefile(tmp_path / "copied" / "images" / "a.png", src / "pics" / "a.png")


def test_refusals(recbole: Path, tmp_path: Path):
    out = tmp_path / "out"
    ok("prepare", recbole, "-o", tmp_path / "plain")
    assert_refused(invoke("prepare", tmp_path / "plain", "-o", out), 2,
                   "is already an mscg dataset (items.jsonl + interactions.jsonl)", "use it directly with -d",
                   output=out)
    assert_refused(invoke("prepare", tmp_path / "plain", "-o", out, "--min-rating", "4"), 2,
                   'interactions.jsonl has no "rating" field', output=out)
    assert_refused(invoke("prepare", recbole, "-o", out, "--copy-images"), 2, "pass --images DIR", output=out)
    assert_refused(invoke("prepare", recbole, "-o", out, "--images", recbole, "--image-pattern", "{item_id}-{n}.jpg"),
                   2, "may hold only the placeholder {item_id}", output=out)
    assert_refused(invoke("prepare", recbole, "-o", out, "--min-rating", "nan"), 2, "must be a finite number",
                   output=out)
    assert_refused(invoke("prepare", recbole, "-o", out, "--min-user-interactions", "99"), 2,
                   "no interaction is left after --min-user-interactions 99; loosen the filters", output=out)
    (recbole / "d.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    assert_refused(invoke("prepare", recbole, "-o", out, "--min-rating", "4"), 2,
                   "d.inter has no `rating` column (it has user_id, item_id)", "drop --min-rating", output=out)
    seq = tmp_path / "seq"
    seq.mkdir()
    (seq / "d.test.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\nu1\ti1 i2\ti3\n")
    assert_refused(invoke("prepare", seq, "-o", out, "--min-rating", "4"), 2,
                   "RecBole sequence files, which have no rating column", output=out)


def test_a_missing_image_stops_the_copy_and_leaves_no_output(tmp_path: Path):
    src = tmp_path / "mine"
    write_jsonl(src / "items.jsonl", [{"item_id": "a", "image": "pics/gone.jpg"}])
    write_jsonl(src / "interactions.jsonl", [{"user_id": "u1", "item_id": "a"}])
    out = tmp_path / "out"
    assert_refused(invoke("prepare", src, "-o", out, "--copy-images"), 1, "the image", "gone.jpg",
                   "of item 'a' cannot be read", output=out)
