"""`evaluate --by-popularity`: groups, list popularity and history share against hand-computed values."""

import math

import numpy as np
import torch

from mscg.data.split import Split
from mscg.popularity import PopularityBreakdown, train_counts


def test_train_counts_use_the_training_part_only():
    split = Split(user_ids=["a", "b"], sequences=[np.array([0, 1, 2, 3]), np.array([1, 1, 4])], dropped_users=0)
    # training parts: [0, 1] and [1]; the validation/test items (2, 3, 1, 4) are not counted
    assert train_counts(split, 5).tolist() == [1, 2, 0, 0, 0]


def test_breakdown_against_hand_computed_values():
    counts = np.array([50, 10, 10, 3, 0, 7])
    b = PopularityBreakdown(counts, k=2)
    # 6 users; targets' counts 50, 10, 0, 3, 7, 10 -> popular {u0, u1}, middle {u5, u4}, rare {u3, u2}
    targets = torch.tensor([0, 1, 4, 3, 5, 2])
    ranks = torch.tensor([1, 3, 2, 1, 2, 1])
    top = torch.tensor([[0, 1], [0, 2], [0, 4], [3, -1], [1, 5], [2, 0]])
    histories = [np.array([1]), np.array([5]), np.array([0, 3]), np.array([3]), np.array([2]), np.array([4])]
    b.add(ranks[:4], targets[:4], top[:4], histories[:4])  # two batches, as evaluate feeds it
    b.add(ranks[4:], targets[4:], top[4:], histories[4:])
    s = b.summary(ks=(1, 2))
    groups = {g["group"]: g for g in s["by_target_popularity"]}
    assert [g["group"] for g in s["by_target_popularity"]] == ["popular", "middle", "rare"]
    assert groups["popular"]["target_train_count"] == [10, 50] and groups["popular"]["users"] == 2
    assert groups["popular"]["recall@1"] == 0.5 and groups["popular"]["recall@2"] == 0.5  # ranks 1, 3
    assert groups["middle"]["recall@1"] == 0.5 and groups["middle"]["recall@2"] == 1.0  # u5 rank 1, u4 rank 2
    assert math.isclose(groups["rare"]["ndcg@2"], (1 + 1 / math.log2(3)) / 2, abs_tol=1e-6)  # u3 rank 1, u2 rank 2
    assert s["target_train_count_mean"] == round(80 / 6, 3)
    # list means per user: 30, 30, 25, 3 (one slot empty), 8.5, 30
    assert s["recommended_train_count@2"] == round((30 + 30 + 25 + 3 + 8.5 + 30) / 6, 3)
    # slots in the user's history: u0 {1}, u2 {0}, u3 {3} of 11 filled slots
    assert s["history_share@2"] == round(3 / 11, 6)
    assert s["list_fill@2"] == round(11 / 12, 6)


def test_breakdown_by_the_most_recent_history_item():
    counts = np.array([50, 10, 3, 0])
    b = PopularityBreakdown(counts, k=2)
    # most recent items 0, 2, 1, 3, 0, 2 (counts 50, 3, 10, 0, 50, 3) -> popular {u0, u4}, middle {u2, u1},
    # rare {u5, u3}
    histories = [np.array([3, 0]), np.array([2]), np.array([0, 1]), np.array([3]), np.array([0]), np.array([1, 2])]
    targets = torch.tensor([1, 1, 2, 2, 3, 3])
    ranks = torch.tensor([1, 3, 2, 3, 3, 1])
    top = torch.tensor([[1, 0], [0, 2], [0, 2], [0, 1], [0, 1], [3, 0]])
    b.add(ranks, targets, top, histories)
    groups = b.summary(ks=(1, 2))["by_last_item_popularity"]
    assert [g["group"] for g in groups] == ["popular", "middle", "rare"]
    assert [g["last_item_train_count"] for g in groups] == [[50, 50], [3, 10], [0, 3]]
    assert [g["recall@1"] for g in groups] == [0.5, 0.0, 0.5]  # ranks (1, 3), (2, 3), (1, 3)
    assert [g["recall@2"] for g in groups] == [0.5, 0.5, 0.5]
    assert b.summary(ks=(1, 2))["by_target_popularity"] != groups  # the two groupings are computed apart


def test_breakdown_counts_an_empty_history_as_rare():
    b = PopularityBreakdown(np.array([5, 1]), k=1)
    b.add(torch.tensor([1, 2, 2]), torch.tensor([0, 1, 0]), torch.tensor([[0], [0], [1]]),
          [np.array([0]), np.array([1]), np.array([], dtype=np.int64)])
    groups = b.summary(ks=(1,))["by_last_item_popularity"]
    assert [g["last_item_train_count"] for g in groups] == [[5, 5], [1, 1], [0, 0]]
    assert [g["recall@1"] for g in groups] == [1.0, 0.0, 0.0]
