import math

import torch

from mscg.metrics import means, metric_sums, ranks_from_lists, ranks_from_scores


def test_ranks_from_scores_break_ties_by_item_index():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [1.0, 1.0, 1.0, 1.0]])
    assert ranks_from_scores(scores, torch.tensor([3, 2])).tolist() == [2, 3]
    assert ranks_from_scores(scores, torch.tensor([1, 0])).tolist() == [1, 1]


def test_ranks_from_lists():
    ranked = torch.tensor([[4, 2, 7], [1, -1, -1], [5, 6, 0]])
    assert ranks_from_lists(ranked, torch.tensor([7, 1, 9])).tolist() == [3, 1, 4]


def test_metrics_against_hand_computed_values():
    ranks = torch.tensor([1, 3, 6, 11])
    m = means(metric_sums(ranks, ks=(5, 10)))
    assert m["recall@5"] == 0.5
    assert m["recall@10"] == 0.75
    assert math.isclose(m["ndcg@5"], (1 + 1 / math.log2(4)) / 4)
    assert math.isclose(m["ndcg@10"], (1 + 1 / math.log2(4) + 1 / math.log2(7)) / 4)


def test_a_nan_score_is_the_worst_score():
    """A NaN target ranks last (every comparison with NaN is false: it would otherwise rank first), and a NaN
    item is never ahead of a target."""
    nan = float("nan")
    scores = torch.tensor([[nan, nan, nan, nan], [0.1, nan, 0.5, nan], [nan, 0.2, 0.1, 0.3]])
    ranks = ranks_from_scores(scores, torch.tensor([0, 2, 2]))
    assert ranks.tolist() == [4, 1, 3]
