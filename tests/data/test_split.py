
import pytest

from mscg.data.split import load_dataset
from mscg.errors import DataError
from tests.conftest import write_jsonl


def make(tmp_path, interactions, items=("a", "b", "c", "d", "e")):
    write_jsonl(tmp_path / "items.jsonl", [{"item_id": i} for i in items])
    write_jsonl(tmp_path / "interactions.jsonl", interactions)
    return load_dataset(tmp_path)


def test_sorted_by_timestamp_ties_by_file_order(tmp_path):
    ds = make(tmp_path, [
        {"user_id": "u", "item_id": "c", "timestamp": 3},
        {"user_id": "u", "item_id": "a", "timestamp": 1},
        {"user_id": "u", "item_id": "e", "timestamp": 2},  # tie with the next line: file order wins
        {"user_id": "u", "item_id": "b", "timestamp": 2},
        {"user_id": "u", "item_id": "d", "timestamp": 9},
    ])
    seq = [ds.catalogue.item_ids[i] for i in ds.split.sequences[0]]
    assert seq == ["a", "e", "b", "c", "d"]
    assert [ds.catalogue.item_ids[i] for i in ds.split.train_sequence(0)] == ["a", "e", "b"]
    assert ds.catalogue.item_ids[ds.split.target(0, "valid")] == "c"
    assert ds.catalogue.item_ids[ds.split.target(0, "test")] == "d"
    assert [ds.catalogue.item_ids[i] for i in ds.split.history(0, "test")] == ["a", "e", "b", "c"]


def test_file_order_without_timestamps_and_short_users_dropped(tmp_path):
    ds = make(tmp_path, [
        {"user_id": "short", "item_id": "a"},
        {"user_id": "long", "item_id": "b"},
        {"user_id": "long", "item_id": "a"},
        {"user_id": "short", "item_id": "b"},
        {"user_id": "long", "item_id": "c"},
    ])
    assert ds.split.user_ids == ["long"]
    assert ds.split.dropped_users == 1
    assert [ds.catalogue.item_ids[i] for i in ds.split.sequences[0]] == ["b", "a", "c"]


def test_everyone_dropped_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no user has 3 or more"):
        make(tmp_path, [{"user_id": "u", "item_id": "a"}])


def test_mixed_timestamps_are_refused(tmp_path):
    with pytest.raises(DataError, match="line 2.*timestamp"):
        make(tmp_path, [{"user_id": "u", "item_id": "a", "timestamp": 1}, {"user_id": "u", "item_id": "b"}])


def test_train_items_never_include_validation_or_test_only_items(tiny_data):
    ds = load_dataset(tiny_data)
    train_items = set(ds.split.train_items().tolist())
    for u in range(len(ds.split)):
        assert set(ds.split.train_sequence(u).tolist()) <= train_items
    assert all(len(s) >= 3 for s in ds.split.sequences)
