"""Property-based tests of the readers of user files: whatever the bytes, the result is valid records
or an mscg error (DataError/UsageError), never another exception.

Inputs are drawn both as raw bytes and as near-valid files (JSON objects with the right keys but
wrong, missing or odd values; RecBole headers and rows over a small alphabet), so that the semantic
checks are reached, not only the parsers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mscg.commands.recommend import read_histories
from mscg.data.features import read_ids, read_vectors
from mscg.data.interactions import load_interactions
from mscg.data.items import load_catalogue
from mscg.data.jsonl import GZIP_MAGIC, read_jsonl, write_jsonl_line
from mscg.data.raw import TEXT_CHARS, convert_amazon, convert_movielens
from mscg.data.recbole import convert_atomic, convert_sequence
from mscg.errors import MscgError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- strategies -----------------------------------------------------------------------------------------

GOOD_IDS = ["i0", "i1", "i2", "u0", "u1", "0", "é", "x y"]
IDS = st.sampled_from(GOOD_IDS * 3 + ["", " ", "\t", "\u2028", "i0\x00"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=False), IDS, st.text(max_size=8))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
KEYS = st.sampled_from(["item_id", "user_id", "text", "image", "timestamp", "history", "year"])
FIELD_VALUES = st.one_of(IDS, IDS, JSON_VALUES, st.lists(IDS, max_size=4), st.floats())


def _record_line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def weighted(*choices):
    """One of the strategies, chosen with the given weights: weighted((6, common), (1, rare))."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(table))).flatmap(lambda k: table[k])


def often(strategy, rare):
    """`strategy` most of the time, `rare` now and then."""
    return weighted((6, strategy), (1, rare))


RECORD_LINES = st.dictionaries(KEYS, FIELD_VALUES, max_size=5).map(_record_line)
ODD_LINES = st.one_of(
    st.binary(max_size=20),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"   ", b"{", b"[]", b"null", b"1", b'"s"', b"NaN", b'{"item_id": NaN}',
                     b'{"item_id": "a\\ud800"}', b'{"item_id": "a\\udc00\\ud800"}', b"\xef\xbb\xbf{}",
                     b'{"timestamp": 1e999, "user_id": "u0", "item_id": "i0"}', b"[" * 5000, b"\r", b"\x00"]),
)
ITEM_RECORDS = st.fixed_dictionaries(
    {"item_id": IDS}, optional={"text": st.one_of(IDS, st.text(max_size=6)), "image": IDS, "year": JSON_VALUES},
).map(_record_line)
INTERACTION_RECORDS = st.fixed_dictionaries(
    {"user_id": IDS, "item_id": IDS}, optional={"timestamp": st.one_of(st.integers(), st.floats(), IDS)},
).map(_record_line)
HISTORY_RECORDS = st.fixed_dictionaries(
    {"user_id": IDS, "history": often(st.lists(IDS, max_size=4), JSON_VALUES)},
).map(_record_line)


def jsonl(records) -> st.SearchStrategy[bytes]:
    """A JSONL file of mostly well-formed `records`, some arbitrary objects and, now and then, odd bytes."""
    lines = weighted((12, records), (1, RECORD_LINES), (1, ODD_LINES))
    return often(st.lists(lines, max_size=6).map(b"\n".join), st.binary(max_size=200))


GOOD_TOKENS = ["1", "2", "3", "a", "b", "1.5", "-0", "x y"]
TOKENS = st.sampled_from(GOOD_TOKENS * 3 + ["", " ", "nan", "inf", "²", "1e400"])
COLUMNS = st.sampled_from(["user_id:token", "item_id:token", "timestamp:float", "item_id_list:token_seq",
                           "title:token_seq", "rating:float", "bad", ":", "user_id", "item_id:"])


def _tsv(header: list[str], rows: list[list[str]]) -> bytes:
    return "\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]).encode("utf-8", "surrogatepass")


def tsv(header, width: int) -> st.SearchStrategy[bytes]:
    rows = st.lists(st.lists(TOKENS, min_size=width, max_size=width), max_size=6)
    return st.builds(_tsv, header, rows)


RANDOM_TSV = tsv(st.lists(COLUMNS, min_size=1, max_size=3, unique=True), 3)  # often the wrong width
INTER_TSV = weighted(
    (8, tsv(st.permutations(["user_id:token", "item_id:token", "timestamp:float"]), 3)),
    (3, tsv(st.permutations(["user_id:token", "item_id:token"]), 2)),
    (1, RANDOM_TSV),
    (1, st.binary(max_size=60)),
)
ITEM_TSV = weighted(
    (8, tsv(st.permutations(["item_id:token", "title:token_seq"]), 2)),
    (1, RANDOM_TSV),
    (1, st.binary(max_size=60)),
)
INDEX = often(
    st.lists(st.tuples(TOKENS, TOKENS), max_size=5).map(
        lambda pairs: "\n".join(f"{a}\t{b}" for a, b in pairs).encode("utf-8", "surrogatepass")),
    st.binary(max_size=30),
)
SEQUENCE = often(
    st.builds(_tsv, st.just(["user_id:token", "item_id_list:token_seq", "item_id:token"]),
              st.lists(st.tuples(TOKENS, st.lists(TOKENS, max_size=3).map(" ".join), TOKENS).map(list),
                       max_size=5)),
    st.binary(max_size=60),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def only_mscg_errors(fn, *args):
    """fn(*args), or None when it raised an mscg error; any other exception fails the test."""
    try:
        return fn(*args)
    except MscgError:
        return None


def write(path: Path, content: bytes | None) -> Path:
    if content is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(content)
    return path


# ---- JSONL ------------------------------------------------------------------------------------------

@FUZZ
@given(content=jsonl(RECORD_LINES))
def test_read_jsonl(scratch, content):
    records = only_mscg_errors(lambda p: list(read_jsonl(p)), write(scratch / "x.jsonl", content))
    for line_no, obj in records or []:
        assert isinstance(line_no, int) and isinstance(obj, dict)
        write_jsonl_line(obj).encode("utf-8")  # whatever is read can be written back as UTF-8


@FUZZ
@given(content=jsonl(ITEM_RECORDS))
def test_load_catalogue(scratch, content):
    catalogue = only_mscg_errors(load_catalogue, write(scratch / "items.jsonl", content))
    if catalogue is not None:
        assert len(catalogue) > 0 and len(set(catalogue.item_ids)) == len(catalogue)
        assert all(isinstance(i, str) and i.strip() for i in catalogue.item_ids)
        assert all(t is None or (isinstance(t, str) and t.strip()) for t in catalogue.texts)
        assert catalogue.index == {item_id: k for k, item_id in enumerate(catalogue.item_ids)}


@pytest.fixture(scope="module")
def catalogue(scratch):
    path = scratch / "fixed-items.jsonl"
    path.write_text("".join(write_jsonl_line({"item_id": i}) for i in ("i0", "i1", "i2", "0", "é")))
    return load_catalogue(path)


@FUZZ
@given(content=jsonl(INTERACTION_RECORDS))
def test_load_interactions(scratch, catalogue, content):
    inter = only_mscg_errors(load_interactions, write(scratch / "interactions.jsonl", content), catalogue)
    if inter is not None:
        assert len(inter) > 0 and len(inter.user) == len(inter.item)
        assert inter.item.min() >= 0 and inter.item.max() < len(catalogue)
        assert inter.timestamp is None or (len(inter.timestamp) == len(inter) and np.isfinite(inter.timestamp).all())


@FUZZ
@given(content=jsonl(HISTORY_RECORDS), skip_unknown=st.booleans(), fallback=st.booleans(),
       on_error=st.sampled_from(["fail", "skip"]))
def test_read_histories(scratch, content, skip_unknown, fallback, on_error):
    """Requests with string user ids (or none: the line gave none) and known items (empty histories only with the
    fallback); skipped lines are named; `--on-error skip` never raises for a line (only for a missing file, or
    for gzip data that cannot be decompressed: no line of it can be read)."""
    index = {"i0": 0, "i1": 1, "i2": 2}
    path = write(scratch / "h.jsonl", content)

    def read():
        return read_histories(str(path), index, skip_unknown=skip_unknown, fallback=fallback, on_error=on_error)

    result = only_mscg_errors(read)
    if on_error == "skip" and content is not None and not content.startswith(GZIP_MAGIC):
        assert result is not None
    if result is not None:
        assert all(r.user_id is None or isinstance(r.user_id, str) for r in result.requests)
        assert all((len(r.history) > 0 or fallback) and set(r.history.tolist()) <= {0, 1, 2}
                   for r in result.requests)
        lines = [r.line_no for r in result.requests] + [n for n, _ in result.failed]
        assert len(lines) == len(set(lines)) and all(f"line {n}" in message for n, message in result.failed)


# ---- RecBole converters: the records they return load back without error ---------------------------------

def assert_loadable(converted, root: Path) -> None:
    items = root / "out-items.jsonl"
    items.write_text("".join(write_jsonl_line(r) for r in converted.items), encoding="utf-8")
    interactions = root / "out-interactions.jsonl"
    interactions.write_text("".join(write_jsonl_line(r) for r in converted.interactions), encoding="utf-8")
    catalogue = load_catalogue(items)  # a DataError here is a converter bug: the test fails
    assert len(load_interactions(interactions, catalogue)) == len(converted.interactions)


@FUZZ
@given(inter=INTER_TSV, item=st.one_of(st.none(), ITEM_TSV))
def test_convert_atomic(scratch, inter, item):
    root = scratch / "atomic"
    root.mkdir(exist_ok=True)
    write(root / "d.inter", inter)
    write(root / "d.item", item)
    converted = only_mscg_errors(convert_atomic, root, "d")
    if converted is not None:
        assert_loadable(converted, root)


@FUZZ
@given(test=SEQUENCE, train=st.one_of(st.none(), SEQUENCE), item2index=st.one_of(st.none(), INDEX),
       user2index=st.one_of(st.none(), INDEX), text=st.one_of(st.none(), ITEM_TSV))
def test_convert_sequence(scratch, test, train, item2index, user2index, text):
    root = scratch / "sequence"
    root.mkdir(exist_ok=True)
    write(root / "d.test.inter", test)
    write(root / "d.train.inter", train)
    write(root / "d.item2index", item2index)
    write(root / "d.user2index", user2index)
    write(root / "d.text", text)
    converted = only_mscg_errors(convert_sequence, root, "d")
    if converted is not None:
        assert_loadable(converted, root)


# ---- raw downloads: MovieLens CSV and Amazon Reviews 2023 JSONL(.gz) ---------------------------------------

CSV_TOKENS = st.sampled_from(GOOD_TOKENS * 3 + ["", '"a, b"', '"', '"x""y"', "nan", "1e400", "\u00e9"])
CSV_HEADER = weighted((6, st.permutations(["userId", "movieId", "rating", "timestamp"])),
                      (1, st.lists(st.sampled_from(["userId", "movieId", "rating", "title", "x"]), max_size=4)))


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    return "\n".join([",".join(header)] + [",".join(r) for r in rows]).encode("utf-8", "surrogatepass")


MOVIELENS_CSV = often(st.builds(_csv, CSV_HEADER, st.lists(st.lists(CSV_TOKENS, min_size=3, max_size=5),
                                                                    max_size=5)), st.binary(max_size=60))
MOVIES_CSV = often(st.builds(_csv, st.just(["movieId", "title", "genres"]),
                             st.lists(st.lists(CSV_TOKENS, min_size=2, max_size=4), max_size=5)),
                   st.binary(max_size=60))
REVIEW_RECORDS = st.fixed_dictionaries(
    {"user_id": IDS, "parent_asin": IDS, "timestamp": st.one_of(st.integers(0, 2**53), st.floats(), IDS)},
    optional={"rating": st.one_of(st.floats(), st.integers(), IDS)},
).map(_record_line)
META_RECORDS = st.fixed_dictionaries(
    {"parent_asin": IDS}, optional={"title": FIELD_VALUES, "features": FIELD_VALUES, "description": FIELD_VALUES},
).map(_record_line)


def maybe_gzip(content: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """The content, or gzip of it, whole or cut short."""
    import gzip

    return st.one_of(content, st.builds(lambda c, cut: gzip.compress(c)[:cut or None], content, st.integers(0, 40)))


@FUZZ
@given(ratings=MOVIELENS_CSV, movies=MOVIES_CSV, with_ratings=st.booleans())
def test_convert_movielens(scratch, ratings, movies, with_ratings):
    root = scratch / "movielens"
    root.mkdir(exist_ok=True)
    converted = only_mscg_errors(lambda: convert_movielens(write(root / "ratings.csv", ratings),
                                                           write(root / "movies.csv", movies), ratings=with_ratings))
    if converted is not None:
        assert_loadable(converted, root)
        assert not with_ratings or len(converted.ratings) == len(converted.interactions)


@FUZZ
@given(reviews=maybe_gzip(jsonl(REVIEW_RECORDS)), meta=maybe_gzip(jsonl(META_RECORDS)), with_ratings=st.booleans())
def test_convert_amazon(scratch, reviews, meta, with_ratings):
    root = scratch / "amazon"
    root.mkdir(exist_ok=True)
    converted = only_mscg_errors(lambda: convert_amazon(write(root / "r.jsonl.gz", reviews),
                                                        write(root / "meta_r.jsonl.gz", meta), ratings=with_ratings))
    if converted is not None:
        assert_loadable(converted, root)
        assert all(len(r.get("text", "")) <= TEXT_CHARS for r in converted.items)


# ---- feature files ------------------------------------------------------------------------------------

@FUZZ
@given(content=st.one_of(st.binary(max_size=80), INDEX), n_rows=st.integers(0, 4))
def test_read_ids(scratch, content, n_rows):
    ids = only_mscg_errors(read_ids, write(scratch / "ids.txt", content), n_rows)
    if ids is not None:
        assert len(ids) == n_rows and len(set(ids)) == n_rows and all(i for i in ids)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


NPY = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda a, cut: _npy_bytes(a)[:cut] if cut else _npy_bytes(a),
              st.sampled_from([np.zeros((2, 3), np.float32), np.zeros(4, np.float64), np.zeros((2, 2), np.int64),
                               np.zeros((0, 3), np.float16), np.array([["a"]])]),
              st.integers(0, 200)),
    st.builds(lambda prefix, tail: b"\x93NUMPY\x01\x00" + prefix + tail,
              st.sampled_from([b"v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                               b"\x10\x00{'descr': 'O'", b"\xff\xff"]), st.binary(max_size=40)),
)


@FUZZ
@given(content=NPY, suffix=st.sampled_from([".npy", ".safetensors", ".f32"]), dim=st.integers(-1, 4))
def test_read_vectors(scratch, content, suffix, dim):
    vectors = only_mscg_errors(lambda: read_vectors(write(scratch / f"v{suffix}", content), dim=dim))
    if vectors is not None:
        assert vectors.ndim == 2
