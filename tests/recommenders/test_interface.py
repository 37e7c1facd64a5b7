"""The package's contract: `load` picks a folder's kind by its model_type, every kind ranks through the same
interface, one mask leaves the history out, a generator's beam is at least k, and popularity ranks as a kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mscg import recommenders
from mscg.data.batching import excluded_items
from mscg.errors import UsageError
from mscg.evaluation import ranked_batches
from mscg.recommenders.generator import GeneratorRecommender
from mscg.recommenders.popularity import PopularityRecommender
from mscg.recommenders.sasrec import SASRecRecommender
from tests.helpers import build_tiny_pipeline, ok

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    p = build_tiny_pipeline(tmp_path_factory.mktemp("recommenders"))
    ok("fuse", p.generator, p.sasrec, "-d", p.data, "-o", p.fused, "--weight", "0.5", "--device", "cpu")
    return p


def test_excluded_items_marks_each_history_but_the_kept_target():
    histories = [np.array([0, 2, 2]), np.array([], dtype=np.int64), np.array([4, 1])]
    mask = excluded_items(histories, 5, keep=torch.tensor([2, 3, 0]))
    assert mask.tolist() == [[True, False, False, False, False],  # 2 is the target: kept rankable
                             [False] * 5,
                             [False, True, False, False, True]]
    assert excluded_items(histories, 5)[0].nonzero().view(-1).tolist() == [0, 2]


def test_load_picks_the_kind_of_each_folder(pipe):
    kinds = {name: recommenders.load(pipe.work / name, CPU) for name in ("sasrec", "generator", "fused")}
    assert {n: type(r) for n, r in kinds.items() if n != "fused"} == {"sasrec": SASRecRecommender,
                                                                      "generator": GeneratorRecommender}
    assert [r.kind for r in kinds.values()] == ["sasrec", "mscg-generator", "fused"]
    assert set(recommenders.REGISTRY) == set(recommenders.MODEL_TYPES) == {r.kind for r in kinds.values()}
    histories = [np.array([0, 1, 2]), np.array([5])]
    for recommender in kinds.values():  # the one interface, history left out by every kind
        items, scores = recommender.top_k(histories, 4, exclude_history=True)
        assert items.shape == scores.shape == (2, 4)
        assert not set(items[0].tolist()) & {0, 1, 2} and 5 not in items[1].tolist()
        assert recommender.rank(histories, torch.tensor([3, 7]), k=4).shape == (2,)
        assert recommender.memory_bytes_per_item() > 0


def test_a_generator_searches_a_beam_of_at_least_k(pipe):
    generator = recommenders.load(pipe.generator, CPU, beam_size=3)
    assert generator.beam_for(2) == 3 and generator.beam_for(7) == 7
    items, _ = generator.top_k([np.array([0, 1])], 7)
    assert (items >= 0).sum() == 7  # k beyond --beam-size fills: the beam widened to k


def test_popularity_ranks_by_training_count_ties_in_catalogue_order():
    pop = PopularityRecommender(np.array([3, 9, 3, 0, 9]), [f"i{k}" for k in range(5)])
    items, scores = pop.top_k([np.array([1]), np.array([], dtype=np.int64)], 4, exclude_history=True)
    assert items.tolist() == [[4, 0, 2, 3], [1, 4, 0, 2]] and scores[0, 0] == 9
    assert pop.rank([np.array([1]), np.array([0])], torch.tensor([2, 3])).tolist() == [4, 5]
    assert pop.rank([np.array([1]), np.array([0])], torch.tensor([2, 3]), exclude_history=True).tolist() == [3, 4]
    assert pop.most_popular(2) == [(1, 9.0), (4, 9.0)]


def test_popularity_of_a_model_without_recorded_counts_names_the_option():
    bare = PopularityRecommender.__new__(PopularityRecommender)
    model = type("M", (), {"meta": {}, "item_ids": ["a", "b"]})()
    with pytest.raises(UsageError, match="--fallback popular needs the model's training popularity"):
        bare.of_model(model, "work/m", "--fallback popular")


def test_ranked_batches_take_the_longest_histories_first_and_rank_as_one_batch(pipe):
    """Users go longest history first (a batch pads to its own longest); every user's rank is the one a single
    batch of all users gives."""
    from mscg.data.split import load_dataset

    ds = load_dataset(pipe.data)
    sasrec = recommenders.load(pipe.sasrec, CPU)
    users = list(range(len(ds.split)))
    batches = list(ranked_batches(sasrec, ds.split, users, "test", batch_size=7))
    lengths = [len(h) for b in batches for h in b.histories]
    assert lengths == sorted(lengths, reverse=True) and sorted(u for b in batches for u in b.users) == users
    got = {u: int(r) for b in batches for u, r in zip(b.users, b.ranks)}
    whole = sasrec.rank([ds.split.history(u, "test") for u in users],
                        torch.tensor([ds.split.target(u, "test") for u in users]))
    assert [got[u] for u in users] == whole.tolist()
