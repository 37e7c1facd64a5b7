"""The cold-start split: withheld items survive only as users' last interactions, the test targets."""

from __future__ import annotations

import pytest

from mscg.data.coldstart import withhold
from mscg.errors import UsageError


def records():
    # u1: a(1) b(2) c(3) d(4); u2: b(5) d(6) a(7) (file order is not time order)
    return [{"user_id": "u1", "item_id": "d", "timestamp": 4}, {"user_id": "u2", "item_id": "b", "timestamp": 5},
            {"user_id": "u1", "item_id": "a", "timestamp": 1}, {"user_id": "u1", "item_id": "b", "timestamp": 2},
            {"user_id": "u2", "item_id": "a", "timestamp": 7}, {"user_id": "u1", "item_id": "c", "timestamp": 3},
            {"user_id": "u2", "item_id": "d", "timestamp": 6}]


def test_withheld_items_stay_only_as_last_interactions():
    for seed in range(20):
        kept, withheld = withhold(records(), 0.5, seed)
        assert len(withheld) == 2
        last = {"u1": "d", "u2": "a"}
        for r in records():
            if r["item_id"] in withheld:
                assert (r in kept) == (last[r["user_id"]] == r["item_id"])
            else:
                assert r in kept
        assert [r for r in records() if r in kept] == kept  # file order kept


def test_withholding_is_seeded():
    assert withhold(records(), 0.25, 7) == withhold(records(), 0.25, 7)
    assert len({tuple(withhold(records(), 0.25, s)[1]) for s in range(20)}) > 1


def test_ties_follow_file_order_like_the_split():
    rows = [{"user_id": "u", "item_id": "x", "timestamp": 1}, {"user_id": "u", "item_id": "y", "timestamp": 1}]
    kept, withheld = withhold(rows + [{"user_id": "v", "item_id": "z", "timestamp": 0}], 0.99, 0)
    assert rows[1] in kept and rows[0] not in kept  # y is u's last: same timestamp, later in the file


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5])
def test_a_share_outside_zero_one_is_refused(share):
    with pytest.raises(UsageError, match="--withhold-items"):
        withhold(records(), share, 0)
