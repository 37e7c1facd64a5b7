"""The dataset filters of `mscg prepare`: rating, seeded user sample, iterated k-core; copied image names."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from mscg.data.recbole import Converted, convert_atomic
from mscg.data.shaping import filter_rating, image_file_name, k_core, read_mscg_dataset, sample_users, shape
from mscg.errors import DataError, UsageError
from tests.conftest import write_jsonl


def pairs(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["user_id"], r["item_id"]) for r in records]


def records(*pairs_: tuple[str, str]) -> list[dict]:
    return [{"user_id": u, "item_id": i} for u, i in pairs_]


# A 2-core of users a, b, c on items x, y, and a chain hanging off it: item z has one interaction (u's), so it
# goes in round 1; that leaves u with one interaction (x), so u goes in round 2. One pass would keep (u, x).
CORE = [(u, i) for u in "abc" for i in "xy"]
CHAIN = [("u", "x"), ("u", "z")]


def test_k_core_is_iterated_until_stable():
    kept, rounds = k_core(records(*CORE, *CHAIN), min_user=2, min_item=2)
    assert pairs(kept) == CORE
    assert rounds == 2
    again, more = k_core(kept, min_user=2, min_item=2)
    assert pairs(again) == CORE and more == 0  # stable: nothing left to drop


def test_k_core_leaves_every_user_and_item_above_the_limits():
    rng = random.Random(0)
    interactions = records(*[(f"u{rng.randrange(15)}", f"i{int(rng.paretovariate(1.2))}") for _ in range(120)])
    kept, rounds = k_core(interactions, min_user=6, min_item=5)
    assert rounds >= 2
    assert kept and len(kept) < len(interactions)
    assert min(Counter(u for u, _ in pairs(kept)).values()) >= 6
    assert min(Counter(i for _, i in pairs(kept)).values()) >= 5
    assert [r for r in interactions if r in kept] == kept  # file order kept


def test_k_core_counts_repeats():
    kept, _ = k_core(records(("a", "x"), ("a", "x"), ("b", "y")), min_user=2, min_item=1)
    assert pairs(kept) == [("a", "x"), ("a", "x")]


def test_rating_filter_keeps_the_limit_itself():
    interactions = records(("a", "x"), ("a", "y"), ("b", "x"), ("b", "z"))
    assert pairs(filter_rating(interactions, [5, 3.5, 4, 1], 4)) == [("a", "x"), ("b", "x")]


def test_user_sample_is_seeded_and_keeps_whole_users():
    interactions = records(*[(f"u{k % 20}", f"i{k}") for k in range(100)])
    first = sample_users(interactions, 5, seed=1)
    assert first == sample_users(interactions, 5, seed=1)
    assert first != sample_users(interactions, 5, seed=2)
    users = Counter(u for u, _ in pairs(first))
    assert len(users) == 5 and set(users.values()) == {5}  # all 5 interactions of each drawn user
    assert [r for r in interactions if r in first] == first
    assert sample_users(interactions, 20, seed=1) == interactions


def test_shape_runs_the_filters_in_order_and_drops_items_left_without_interactions():
    items = [{"item_id": i, "text": i} for i in "xyzw"]  # w: no interaction at all
    interactions = records(*CORE, *CHAIN, ("d", "x"))
    converted = Converted(items, interactions, "atomic", ratings=[5] * len(CORE) + [5, 5, 1])
    shaped = shape(converted, min_rating=4, min_user_interactions=2, min_item_interactions=2)
    assert pairs(shaped.interactions) == CORE
    assert [r["item_id"] for r in shaped.items] == ["x", "y"]
    assert [(s.name, s.users, s.items, s.interactions) for s in shaped.steps] == [
        ("--min-rating 4", 1, 0, 1), ("--min-user-interactions 2 --min-item-interactions 2", 1, 1, 2)]
    assert shaped.unused_items == 1


def test_shape_without_filters_keeps_everything():
    items = [{"item_id": i} for i in "xyzw"]
    converted = Converted(items, records(*CORE), "atomic")
    shaped = shape(converted)
    assert shaped.items == items and shaped.interactions == converted.interactions and not shaped.steps


def test_filters_that_leave_nothing_are_refused():
    converted = Converted([{"item_id": "x"}], records(("a", "x")), "atomic")
    with pytest.raises(UsageError, match="no interaction is left after --min-user-interactions 2; loosen the filters"):
        shape(converted, min_user_interactions=2)


def test_rating_column_is_read_on_request(tmp_path: Path):
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\trating:float\na\tx\t4\nb\tx\t2.5\n")
    assert convert_atomic(tmp_path, "d").ratings is None
    assert convert_atomic(tmp_path, "d", ratings=True).ratings == [4.0, 2.5]
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\trating:float\na\tx\t4\nb\tx\tgood\n")
    with pytest.raises(DataError, match="d.inter line 3: rating 'good' is not a finite number"):
        convert_atomic(tmp_path, "d", ratings=True)
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\na\tx\n")
    with pytest.raises(UsageError, match=r"has no `rating` column \(it has user_id, item_id\)"):
        convert_atomic(tmp_path, "d", ratings=True)


def test_mscg_dataset_ratings_must_be_on_every_line(tmp_path: Path):
    write_jsonl(tmp_path / "items.jsonl", [{"item_id": "x"}])
    write_jsonl(tmp_path / "interactions.jsonl", [{"user_id": "a", "item_id": "x", "rating": 5},
                                                  {"user_id": "b", "item_id": "x"}])
    with pytest.raises(DataError, match=r"interactions.jsonl line 2: no \"rating\""):
        read_mscg_dataset(tmp_path, ratings=True)
    converted, images = read_mscg_dataset(tmp_path)
    assert converted.interactions[0]["rating"] == 5 and images == {}


def test_copied_image_names_are_plain_distinct_file_names():
    ids = ["42", "a/b", "../evil", ".hidden", "é x", "a%2Fb", "z" * 300, "y" * 300]
    names = [image_file_name(i, Path("p/poster.JPG")) for i in ids]
    assert names[:2] == ["42.JPG", "a%2Fb.JPG"]
    assert len(set(names)) == len(names)
    for name in names:
        assert "/" not in name and not name.startswith(".") and len(name.encode()) <= 255
