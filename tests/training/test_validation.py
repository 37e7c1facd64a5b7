"""Validation in training: metric sums, also per third of target popularity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mscg.data.split import Split
from mscg.training.validation import popularity_thirds, validation_sums

# 6 users; item k occurs k times in training (item 0 never): the validation target is each sequence's second last
SEQUENCES = [np.array([5, 5, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 2, 2, 1, t, 0]) for t in (5, 4, 3, 2, 1, 0)]


def test_thirds_group_users_by_the_training_count_of_their_validation_target():
    split = Split(user_ids=[f"u{k}" for k in range(6)], sequences=SEQUENCES, dropped_users=0)
    thirds = popularity_thirds(split, range(6), 6)
    assert thirds == {0: "popular", 1: "popular", 2: "middle", 3: "middle", 4: "rare", 5: "rare"}



def test_thirds_by_the_test_target_read_the_last_item():
    # the test targets run the other way: user k's is item k (training counts as above)
    sequences = [np.concatenate([s[:-1], [k]]) for k, s in enumerate(SEQUENCES)]
    split = Split(user_ids=[f"u{k}" for k in range(6)], sequences=sequences, dropped_users=0)
    thirds = popularity_thirds(split, range(6), 6, target="test")
    assert thirds == {5: "popular", 4: "popular", 3: "middle", 2: "middle", 1: "rare", 0: "rare"}
    assert popularity_thirds(split, range(6), 6) == popularity_thirds(Split([f"u{k}" for k in range(6)], SEQUENCES, 0),
                                                                      range(6), 6)


@pytest.mark.parametrize("batch_size", [6, 4])
def test_the_thirds_average_to_the_whole(batch_size):
    split = Split(user_ids=[f"u{k}" for k in range(6)], sequences=SEQUENCES, dropped_users=0)
    ranks = torch.tensor([1, 30, 2, 30, 30, 5])  # hits at 10: users 0, 2, 5

    class Recommender:
        def rank(self, histories, targets, *, k=10):  # targets of users u..: item 5 - u
            return ranks[5 - targets]

    sums = validation_sums(Recommender(), split, range(6), batch_size=batch_size,
                           thirds=popularity_thirds(split, range(6), 6))
    assert sums["count"] == 6 and sums["count/popular"] == sums["count/middle"] == sums["count/rare"] == 2
    assert sums["recall@10/popular"] == 1 and sums["recall@10/middle"] == 1 and sums["recall@10/rare"] == 1
    assert sums["recall@10"] == 3
    assert sums["ndcg@10/popular"] + sums["ndcg@10/middle"] + sums["ndcg@10/rare"] == pytest.approx(sums["ndcg@10"])


def test_a_models_training_history_records_each_third(tmp_path):
    import json

    from tests.helpers import build_tiny_pipeline

    pipe = build_tiny_pipeline(tmp_path)
    for model in ("generator", "sasrec"):
        epoch = json.loads((pipe.work / model / "meta.json").read_text())["training"]["history"][0]
        for third in ("popular", "middle", "rare"):
            assert 0 <= epoch[f"ndcg@10/{third}"] <= epoch[f"recall@10/{third}"] <= 1
