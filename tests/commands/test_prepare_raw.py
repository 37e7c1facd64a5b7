"""`mscg prepare` on raw downloads written here: MovieLens CSV (and ml-1m's .dat) and Amazon Reviews 2023 JSONL.gz,
as a folder and as a file; the filters on them; bad rows refused with one line; and dataset folders of
`.jsonl.gz` files read by every stage (`collab` here) and by `recommend -i`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mscg.commands.prepare import prepare
from mscg.data.jsonl import read_jsonl
from mscg.data.raw import TEXT_CHARS, join_text
from mscg.data.split import load_dataset
from tests.conftest import synthetic_dataset
from tests.helpers import TINY_SASREC, assert_refused, invoke, ok, one_thread  # noqa: F401 (one_thread: a fixture)

RATINGS = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,3,4.0,964981247
1,2,2.5,964982224
2,1,5.0,964983000
2,2,4.5,964983200
3,9,1.0,964983300
"""
MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"American President, The (1995)",Comedy|Drama|Romance
3,Heat (1995),(no genres listed)
4,Nobody Rated (2001),Drama
"""


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_gz(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


@pytest.fixture
def movielens(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(RATINGS)
    (folder / "movies.csv").write_text(MOVIES)
    return folder


def review(user: str, item: str, t: int, rating: float = 5.0) -> dict:
    return {"rating": rating, "title": "A title", "text": "a review, long or short", "images": [],
            "asin": item + "-red", "parent_asin": item, "user_id": user, "timestamp": t, "helpful_vote": 0,
            "verified_purchase": True}


META = [
    {"main_category": "Toys", "title": "Wooden train", "features": ["100% wood", "Ages 3+"],
     "description": ["A classic\n train  set.", "Fun for all"], "store": "Acme", "categories": ["Toys", "Trains"],
     "images": [{"thumb": "https://m.media-amazon.com/t.jpg", "large": "https://m.media-amazon.com/l.jpg",
                 "hi_res": None, "variant": "MAIN"}], "parent_asin": "P1"},
    {"title": "Never reviewed", "features": [], "description": [], "parent_asin": "P7"},
    {"title": "Puzzle", "features": ["500 pieces"], "description": [], "images": [], "parent_asin": "P2"},
    {"title": "Kite", "features": None, "description": "Flies high.", "parent_asin": "P3"},
]


@pytest.fixture
def amazon(tmp_path: Path) -> Path:
    """Toys_and_Games.jsonl.gz + meta_Toys_and_Games.jsonl.gz: P9 is reviewed but not in the metadata, P7 is in the
    metadata but never reviewed; the file order is not the time order."""
    folder = tmp_path / "amazon"
    folder.mkdir()
    write_gz(folder / "Toys_and_Games.jsonl.gz", [
        review("UA", "P1", 1588615855070), review("UA", "P2", 1588615855000, 3.0), review("UB", "P9", 1600000000000),
        review("UB", "P1", 1600000000001, 1.0), review("UB", "P3", 1600000000002, 4.0)])
    write_gz(folder / "meta_Toys_and_Games.jsonl.gz", META)
    return folder


def test_movielens_folder_and_ratings_file(movielens: Path, tmp_path: Path):
    out = ok("prepare", movielens, "-o", tmp_path / "out")
    assert ("4 items (3 with text, 0 with an image), 6 interactions of 3 users (MovieLens files; 1 items not in "
            "movies.csv, kept without text; 1 items of movies.csv without a rating left out)") in out
    assert read(tmp_path / "out" / "items.jsonl") == [
        {"item_id": "1", "text": "Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy"},
        {"item_id": "2", "text": "American President, The (1995). Comedy, Drama, Romance"},  # the quoted comma
        {"item_id": "3", "text": "Heat (1995)"}, {"item_id": "9"}]
    interactions = read(tmp_path / "out" / "interactions.jsonl")
    assert interactions[:3] == [{"user_id": "1", "item_id": "1", "timestamp": 964982703},
                                {"user_id": "1", "item_id": "3", "timestamp": 964981247},
                                {"user_id": "1", "item_id": "2", "timestamp": 964982224}]
    ok("prepare", movielens / "ratings.csv", "-o", tmp_path / "file", "--meta", movielens / "movies.csv")
    for name in ("items.jsonl", "interactions.jsonl"):
        assert (tmp_path / "file" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
    ds = load_dataset(tmp_path / "out")  # the split orders by timestamp, not by file order
    assert [[ds.catalogue.item_ids[i] for i in s] for s in ds.split.sequences] == [["3", "2", "1"]]
    out = ok("prepare", movielens, "-o", tmp_path / "4star", "--min-rating", "4", "--min-item-interactions", "2")
    assert "--min-rating 4 removed 2 interactions, 1 user, 1 item" in out
    assert [(r["user_id"], r["item_id"]) for r in read(tmp_path / "4star" / "interactions.jsonl")] == [
        ("1", "1"), ("2", "1")]
    assert read(tmp_path / "4star" / "items.jsonl") == read(tmp_path / "out" / "items.jsonl")[:1]


def test_movielens_1m_dat_files_in_latin_1(tmp_path: Path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_bytes(b"1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (folder / "movies.dat").write_bytes("10::Caf\u00e9 Society (1995)::Comedy|Drama\n20::Heat (1995)::Action\n"
                                        .encode("latin-1"))
    ok("prepare", folder, "-o", tmp_path / "out", "--min-rating", "4")
    assert read(tmp_path / "out" / "items.jsonl") == [{"item_id": "10", "text": "Caf\u00e9 Society (1995). Comedy, "
                                                                               "Drama"}]
    assert [r["user_id"] for r in read(tmp_path / "out" / "interactions.jsonl")] == ["1", "2"]


def test_amazon_folder_and_reviews_file(amazon: Path, tmp_path: Path):
    out = ok("prepare", amazon, "-o", tmp_path / "out")
    assert ("4 items (3 with text, 0 with an image), 5 interactions of 2 users (Amazon Reviews 2023 files; 1 items "
            "not in meta_Toys_and_Games.jsonl.gz, kept without text; 1 items of meta_Toys_and_Games.jsonl.gz without "
            "a review left out)") in out
    items = read(tmp_path / "out" / "items.jsonl")
    assert items == [{"item_id": "P1", "text": "Wooden train. 100% wood. Ages 3+. A classic train set. Fun for all"},
                     {"item_id": "P2", "text": "Puzzle. 500 pieces"}, {"item_id": "P3", "text": "Kite. Flies high."},
                     {"item_id": "P9"}]  # the metadata's order, then the reviewed items it lacks; no image URL
    interactions = read(tmp_path / "out" / "interactions.jsonl")
    assert interactions[:2] == [{"user_id": "UA", "item_id": "P1", "timestamp": 1588615855070},
                                {"user_id": "UA", "item_id": "P2", "timestamp": 1588615855000}]
    ds = load_dataset(tmp_path / "out")
    ua = ds.split.user_ids.index("UB")
    assert [ds.catalogue.item_ids[i] for i in ds.split.sequences[ua]] == ["P9", "P1", "P3"]
    out = ok("prepare", amazon / "Toys_and_Games.jsonl.gz", "-o", tmp_path / "4star", "--min-rating", "4")
    assert "--min-rating 4 removed 2 interactions, 0 users, 1 item" in out
    assert [(r["user_id"], r["item_id"]) for r in read(tmp_path / "4star" / "interactions.jsonl")] == [
        ("UA", "P1"), ("UB", "P9"), ("UB", "P3")]
    assert [r["item_id"] for r in read(tmp_path / "4star" / "items.jsonl")] == ["P1", "P3", "P9"]


def test_amazon_reviews_file_with_its_metadata_elsewhere(amazon: Path, tmp_path: Path):
    reviews = tmp_path / "downloads" / "reviews.jsonl"  # plain JSONL, another name
    reviews.parent.mkdir()
    reviews.write_bytes(gzip.decompress((amazon / "Toys_and_Games.jsonl.gz").read_bytes()))
    assert_refused(invoke("prepare", reviews, "-o", tmp_path / "out"), 2, "no meta_reviews.jsonl.gz next to it",
                   "pass --meta", output=tmp_path / "out")
    ok("prepare", reviews, "--meta", amazon / "meta_Toys_and_Games.jsonl.gz", "-o", tmp_path / "out",
       "--sample-users", "1", "--seed", "3")
    assert len({r["user_id"] for r in read(tmp_path / "out" / "interactions.jsonl")}) == 1


def test_amazon_folder_of_several_categories_takes_name(amazon: Path, tmp_path: Path):
    write_gz(amazon / "Books.jsonl.gz", [review("UC", "B1", 1), review("UC", "B2", 2)])
    write_gz(amazon / "meta_Books.jsonl.gz", [{"title": "A book", "parent_asin": "B1"}])
    assert_refused(invoke("prepare", amazon, "-o", tmp_path / "out"), 2, "2 categories (Books, Toys_and_Games)",
                   "pass --name", output=tmp_path / "out")
    ok("prepare", amazon, "--name", "Books", "-o", tmp_path / "out")
    assert read(tmp_path / "out" / "items.jsonl") == [{"item_id": "B1", "text": "A book"}, {"item_id": "B2"}]


def test_item_text_is_cut_at_a_word():
    text = join_text(["Title", "word " * 1000])
    assert len(text) <= TEXT_CHARS and text.startswith("Title. word word") and text.endswith("word")
    assert join_text(["", "  ", "\n"]) is None


@pytest.mark.parametrize("setup,needles", [
    (lambda d: (d / "ratings.csv").write_text("userId,rating,timestamp\n1,4.0,5\n"),
     ["ratings.csv line 1: no `movieId` column", "fix the header"]),
    (lambda d: (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n1,2,4.0\n"),
     ["ratings.csv line 3: 3 comma-separated values for the 4 columns"]),
    (lambda d: (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,soon\n"),
     ["ratings.csv line 2: `timestamp` 'soon' is not a finite number"]),
    (lambda d: (d / "movies.csv").write_text('movieId,title,genres\n1,"Toy Story (1995),Comedy\n'),
     ["movies.csv line", "fix the quoting"]),
    (lambda d: (d / "movies.csv").write_bytes(b"movieId,title,genres\n1,Caf\xe9,Comedy\n"),
     ["movies.csv line 2: not valid UTF-8"]),
], ids=["missing column", "short row", "bad timestamp", "open quote", "not utf-8"])
def test_bad_movielens_rows_are_refused(movielens: Path, tmp_path: Path, setup, needles):
    setup(movielens)
    assert_refused(invoke("prepare", movielens, "-o", tmp_path / "out"), 1, str(movielens), *needles,
                   output=tmp_path / "out")


def corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # cut short, as an interrupted download


@pytest.mark.parametrize("setup,needles", [
    (lambda d: write_gz(d / "Toys_and_Games.jsonl.gz", [review("UA", "P1", 1), {"user_id": "UA", "timestamp": 2}]),
     ["Toys_and_Games.jsonl.gz line 2: missing \"parent_asin\""]),
    (lambda d: write_gz(d / "Toys_and_Games.jsonl.gz", [{**review("UA", "P1", 1), "timestamp": "May 2020"}]),
     ["Toys_and_Games.jsonl.gz line 1: \"timestamp\" must be a finite number"]),
    (lambda d: write_gz(d / "meta_Toys_and_Games.jsonl.gz", [{**META[0], "features": [1, 2]}]),
     ["meta_Toys_and_Games.jsonl.gz line 1: \"features\" must be a string or a list of strings"]),
    (lambda d: corrupt(d / "Toys_and_Games.jsonl.gz"),
     ["Toys_and_Games.jsonl.gz is not valid gzip data", "download or compress it again"]),
    (lambda d: corrupt(d / "meta_Toys_and_Games.jsonl.gz"), ["meta_Toys_and_Games.jsonl.gz is not valid gzip data"]),
], ids=["no parent_asin", "timestamp text", "features not strings", "reviews cut short", "meta cut short"])
def test_bad_amazon_lines_are_refused(amazon: Path, tmp_path: Path, setup, needles):
    setup(amazon)
    assert_refused(invoke("prepare", amazon, "-o", tmp_path / "out"), 1, str(amazon), *needles,
                   output=tmp_path / "out")


def test_what_prepare_cannot_read_is_named(amazon: Path, movielens: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert_refused(invoke("prepare", amazon / "meta_Toys_and_Games.jsonl.gz", "-o", out), 2, "is Amazon metadata",
                   "pass the reviews file (Toys_and_Games.jsonl.gz) as SOURCE", output=out)
    assert_refused(invoke("prepare", amazon, "--meta", amazon / "meta_Toys_and_Games.jsonl.gz", "-o", out), 2,
                   "is a folder", "drop --meta", output=out)
    (movielens / "movies.csv").unlink()
    assert_refused(invoke("prepare", movielens, "-o", out), 2, "holds ratings.csv but no movies.csv", output=out)
    (tmp_path / "empty").mkdir()
    assert_refused(invoke("prepare", tmp_path / "empty", "-o", out), 2, "holds none of the files prepare reads",
                   "MovieLens files (ratings.csv + movies.csv", "Amazon Reviews 2023 files", output=out)
    (tmp_path / "notes.txt").write_text("hello\n")
    assert_refused(invoke("prepare", tmp_path / "notes.txt", "-o", out), 2, "is neither a MovieLens ratings file",
                   output=out)


def gzip_dataset(data: Path) -> Path:
    for name in ("items.jsonl", "interactions.jsonl"):
        (data / f"{name}.gz").write_bytes(gzip.compress((data / name).read_bytes()))
        (data / name).unlink()
    return data


def test_a_dataset_of_jsonl_gz_files_goes_through_the_stages(tmp_path: Path):
    plain = synthetic_dataset(tmp_path / "plain")
    packed = gzip_dataset(synthetic_dataset(tmp_path / "packed"))
    ok("collab", "-d", packed, "-o", tmp_path / "emb", "--model-out", tmp_path / "sasrec", *TINY_SASREC)
    history = {"user_id": "me", "history": ["i0", "i4"]}
    (tmp_path / "h.jsonl.gz").write_bytes(gzip.compress((json.dumps(history) + "\n").encode()))
    (tmp_path / "h.jsonl").write_text(json.dumps(history) + "\n")
    for name in ("h.jsonl.gz", "h.jsonl"):
        ok("recommend", tmp_path / "sasrec", "-i", tmp_path / name, "-o", tmp_path / f"{name}.recs", "-k", "3")
    assert (tmp_path / "h.jsonl.gz.recs").read_bytes() == (tmp_path / "h.jsonl.recs").read_bytes()
    result = invoke("recommend", tmp_path / "sasrec", "-o", "-", "-k", "3",
                    input=gzip.compress((json.dumps(history) + "\n").encode()))
    assert result.exit_code == 0 and json.loads(result.stdout)["user_id"] == "me"
    out = ok("prepare", packed, "-o", tmp_path / "core", "--min-user-interactions", "5")  # reshaped: plain files
    assert "(an mscg dataset)" in out and (tmp_path / "core" / "items.jsonl").is_file()
    ok("prepare", plain, "-o", tmp_path / "core-plain", "--min-user-interactions", "5")
    for name in ("items.jsonl", "interactions.jsonl"):
        assert (tmp_path / "core" / name).read_bytes() == (tmp_path / "core-plain" / name).read_bytes()


def test_a_dataset_with_a_plain_and_a_gzip_file_or_a_corrupt_one_is_refused(tmp_path: Path):
    data = gzip_dataset(synthetic_dataset(tmp_path))
    (data / "items.jsonl").write_bytes(gzip.decompress((data / "items.jsonl.gz").read_bytes()))
    collab = ["collab", "-d", data, "-o", tmp_path / "emb", *TINY_SASREC]
    assert_refused(invoke(*collab), 1, "holds both items.jsonl and items.jsonl.gz; keep one", output=tmp_path / "emb")
    (data / "items.jsonl").unlink()
    corrupt(data / "interactions.jsonl.gz")
    assert_refused(invoke(*collab), 1, "interactions.jsonl.gz is not valid gzip data", output=tmp_path / "emb")


def test_gzip_is_recognised_by_its_bytes_not_its_name(tmp_path: Path):
    path = tmp_path / "histories.jsonl"
    path.write_bytes(gzip.compress(b'{"a": 1}\n\n{"a": 2}\n'))
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_prepare_tells_how_far_the_reading_got(amazon: Path, tmp_path: Path):
    seen: dict[str, tuple[int, int]] = {}
    prepare(str(amazon), tmp_path / "out", on_read=lambda path, done, size: seen.update({path.name: (done, size)}))
    assert seen == {name: ((amazon / name).stat().st_size,) * 2
                    for name in ("Toys_and_Games.jsonl.gz", "meta_Toys_and_Games.jsonl.gz")}
