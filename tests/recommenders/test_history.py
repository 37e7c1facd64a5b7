"""The recommender interface: top_k and rank, with and without the history's items, for both model kinds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from mscg.recommenders.generator import GeneratorRecommender
from mscg.recommenders.sasrec import SASRecRecommender

CPU = torch.device("cpu")
HISTORIES = [np.array([0, 1]), np.array([2, 3])]
TARGETS = torch.tensor([3, 2])  # user 1's target is also in its history: an evaluation keeps it


class FixedScores(torch.nn.Module):
    """SASRec-like: the same scores of every item for every batch."""

    def __init__(self, scores):
        super().__init__()
        self.fixed = torch.tensor(scores)
        self.config = SimpleNamespace(max_history=5)

    def score(self, history):
        return self.fixed.clone()


def fixed_beam(lists, beam_size=2) -> GeneratorRecommender:
    """A generator recommender whose beam search returns `lists` (cut or padded to the beam asked for); as the
    real search, excluded items take no beam (the next ones move up)."""
    recommender = GeneratorRecommender.__new__(GeneratorRecommender)
    recommender.beam_size, recommender.item_ids, recommender.beams_asked = beam_size, [f"i{k}" for k in range(5)], []
    recommender.excluded_asked = []

    def search(histories, beam, excluded=None):
        recommender.beams_asked.append(beam)
        recommender.excluded_asked.append(excluded)
        rows = [[i for i in row if i >= 0 and (excluded is None or not excluded[n, i])] for n, row in enumerate(lists)]
        top = torch.tensor([row + [-1] * (len(lists[0]) - len(row)) for row in rows])
        items = torch.nn.functional.pad(top, (0, max(0, beam - top.shape[1])), value=-1)[:, :beam]
        return items, torch.where(items >= 0, -torch.arange(beam, dtype=torch.float)[None], float("-inf"))

    recommender.search = search
    return recommender


def test_sasrec_ranks_among_unseen_items_and_keeps_the_target():
    sasrec = SASRecRecommender(FixedScores([[0.9, 0.8, 0.1, 0.5, 0.7], [0.1, 0.2, 0.6, 0.9, 0.8]]), [], CPU, {})
    assert sasrec.rank(HISTORIES, TARGETS).tolist() == [4, 3]
    assert sasrec.top_k(HISTORIES, 2)[0].tolist() == [[0, 1], [3, 4]]
    assert sasrec.rank(HISTORIES, TARGETS, exclude_history=True).tolist() == [2, 2]
    assert sasrec.top_k(HISTORIES, 2, exclude_history=True, keep=TARGETS)[0].tolist() == [[4, 3], [4, 2]]
    items, scores = sasrec.top_k(HISTORIES, 4, exclude_history=True)  # fewer unseen items than asked for
    assert (items.tolist() == [[4, 3, 2, -1], [4, 1, 0, -1]]
            and torch.allclose(scores[0, :3], torch.tensor([0.7, 0.5, 0.1])))


def test_generator_searches_unseen_items_only_and_keeps_the_target():
    beam = fixed_beam([[0, 4, 3, 1], [3, 2, -1, -1]])
    assert beam.rank(HISTORIES, TARGETS, k=4).tolist() == [3, 2]
    assert beam.rank(HISTORIES, TARGETS, k=4, exclude_history=True).tolist() == [2, 1]
    items, scores = beam.top_k(HISTORIES, 2, exclude_history=True, keep=TARGETS)
    assert items.tolist() == [[4, 3], [2, -1]] and scores[1, 1] == float("-inf")
    assert beam.beams_asked[-1] == 2  # no wider beam: the search itself leaves the history out
    excluded = beam.excluded_asked[-1]
    assert excluded[0].nonzero().view(-1).tolist() == [0, 1] and excluded[1].nonzero().view(-1).tolist() == [3]
    assert beam.top_k(HISTORIES, 3)[0].tolist() == [[0, 4, 3], [3, 2, -1]] and beam.beams_asked[-1] == 3
