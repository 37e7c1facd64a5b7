"""The Python API: `mscg.load(MODEL)` returns a `Model` that recommends on item ids.

    import mscg

    model = mscg.load("work/mscgrec")             # a generator (train) or SASRec (collab --model-out) folder
    model.recommend(["50", "172", "181"], k=5)    # [("98", -0.41), ...]: best first, the history left out
    model.recommend_batch([["50"], ["172", "181"]], k=5)

A `Model` keeps the loaded recommender (`mscg.recommenders.load`, which works on dense item indices) and maps
item ids in and out; `mscg recommend` ranks through the same methods. Ids given as integers are read as
their decimal strings (`50` is item "50"). An id the model does not know raises `UnknownItemError` (or is
dropped with `skip_unknown=True`); a history left with no known item raises a `DataError`, or gets the
items most often in training with `fallback="popular"`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mscg.errors import DataError, UnknownItemError, UsageError
from mscg.recommenders.defaults import EVAL_BATCH_SIZE, EXCLUDE_HISTORY_RECOMMENDING

FALLBACKS = ("none", "popular")
# What a model's scores are (`Model.score_kind`, "score_kind" in `mscg recommend` and `mscg serve` answers): they
# compare within one answer, not across kinds. A fused score is a weighted sum of its parts' log-probabilities.
SCORE_KINDS = {"mscg-generator": "log-probability", "sasrec": "inner-product", "fused": "fused"}
POPULARITY = "popularity"  # a fallback answer: each item's count in the training data


def item_key(value) -> str | None:
    """An id as mscg stores it: a string as is, an integer as its decimal string; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return None


def history_rows(values: Iterable, index: dict[str, int]) -> tuple[list[int], list[str]]:
    """(dense rows of the known ids, the unknown ids) of a history; ValueError(value) for a value that is not
    an id. Shared by `Model.indices` and `mscg recommend`, which word the errors for their callers."""
    rows, unknown = [], []
    for value in values:
        key = item_key(value)
        if key is None:
            raise ValueError(value)
        row = index.get(key)
        if row is None:
            unknown.append(key)
        else:
            rows.append(row)
    return rows, unknown


def load(path: str | Path, device: str = "auto", *, beam_size: int | None = None, codes: str | Path | None = None,
         verify: bool = True) -> Model:
    """The model in directory `path` (from `mscg train`, `mscg collab --model-out` or `mscg fuse`), on `device`
    (auto, the default as in the CLI: the GPU when present; or cpu, cuda, cuda:N). A generator uses the codes
    inside its directory unless `codes` names others; `verify` refuses codes whose SHA-256 differs from the one its
    meta.json records."""
    from mscg.devices import resolve_device
    from mscg import recommenders

    recommender = recommenders.load(Path(path), resolve_device(device), beam_size=beam_size,
                                   codes_path=Path(codes) if codes is not None else None, verify=verify)
    return Model(recommender, Path(path))


class Model:
    """A loaded recommender over item ids. `kind`: "mscg-generator", "sasrec" or "fused"; `item_ids`: the catalogue;
    `score_kind`: what its scores are ("log-probability", "inner-product" or "fused"; see SCORE_KINDS)."""

    def __init__(self, recommender, path: Path):
        self.recommender = recommender
        self.path = Path(path)
        self.kind: str = recommender.kind
        self.score_kind: str = SCORE_KINDS[self.kind]
        self.item_ids: list[str] = list(recommender.item_ids)
        self.index: dict[str, int] = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self._popularity = None  # a PopularityRecommender, when a fallback first asks

    def __repr__(self) -> str:
        return f"<mscg.Model {self.kind} {str(self.path)!r}: {len(self.item_ids):,} items>"

    def __contains__(self, item_id) -> bool:
        return item_key(item_id) in self.index

    # ---- on item ids ------------------------------------------------------------------------------------

    def recommend(self, history_item_ids: Iterable[str], k: int = 10, *,
                  exclude_history: bool = EXCLUDE_HISTORY_RECOMMENDING, skip_unknown: bool = False,
                  fallback: str = "none") -> list[tuple[str, float]]:
        """The k best next items for one history (oldest first) as (item_id, score), best first. Scores are
        `score_kind`: log-probabilities (generator), inner products (SASRec) or fused log-probabilities; training
        counts for a fallback (`popular`); fewer than k items when fewer remain."""
        return self.recommend_batch([history_item_ids], k, exclude_history=exclude_history,
                                    skip_unknown=skip_unknown, fallback=fallback)[0]

    def recommend_batch(self, histories: Sequence[Iterable[str]], k: int = 10, *,
                        exclude_history: bool = EXCLUDE_HISTORY_RECOMMENDING, skip_unknown: bool = False,
                        fallback: str = "none", batch_size: int = EVAL_BATCH_SIZE) -> list[list[tuple[str, float]]]:
        """`recommend` for several histories at once (ranked `batch_size` at a time): one list per history.
        `fallback="popular"`: a history with no known item gets the items most often in training, scored by
        that count."""
        check_request(k, fallback, batch_size)
        if isinstance(histories, (str, bytes)):
            raise UsageError("histories must be a list of histories (each a list of item ids), not a string")
        dense = [self.indices(h, skip_unknown=skip_unknown, position=n) for n, h in enumerate(histories)]
        empty = [n for n, d in enumerate(dense) if len(d) == 0]
        if empty and fallback != "popular":
            raise DataError(f"history {empty[0]} has no item the model knows; give at least one, or pass "
                            "fallback=\"popular\"")
        popular = self.popular_indices(k, 'fallback="popular"') if empty else []
        ranked = iter(self.rank_indices([d for d in dense if len(d)], k, exclude_history=exclude_history,
                                        batch_size=batch_size))
        return [[(self.item_ids[i], s) for i, s in (popular if len(d) == 0 else next(ranked))] for d in dense]

    def popular(self, k: int = 10) -> list[tuple[str, float]]:
        """The k items most often in the model's training data, with their counts, ties in catalogue order."""
        check_request(k, "none", 1)
        return [(self.item_ids[i], s) for i, s in self.popular_indices(k, "popular()")]

    def indices(self, history: Iterable[str], *, skip_unknown: bool = False, position: int | None = None
                ) -> np.ndarray:
        """A history of item ids as dense item indices; unknown ids raise `UnknownItemError` (or are dropped)."""
        where = f"history {position}: " if position is not None else ""
        if isinstance(history, (str, bytes)) or not isinstance(history, Iterable):
            raise UsageError(f"{where}a history must be a list of item ids, found {type(history).__name__}")
        try:
            rows, unknown = history_rows(history, self.index)
        except ValueError as e:
            raise DataError(f"{where}{e.args[0]!r} is not an item id (a string, or an integer)") from None
        if unknown and not skip_unknown:
            raise UnknownItemError(unknown[0], f"{where}item {unknown[0]!r} is not in the catalogue of {self.path}; "
                                               "drop it or pass skip_unknown=True")
        return np.asarray(rows, dtype=np.int64)

    # ---- on dense indices (what `mscg recommend` uses) ---------------------------------------------------

    def rank_indices(self, histories: Sequence[np.ndarray], k: int, *,
                     exclude_history: bool = EXCLUDE_HISTORY_RECOMMENDING,
                     batch_size: int = EVAL_BATCH_SIZE) -> list[list[tuple[int, float]]]:
        """(item index, score) lists, best first, for non-empty histories of dense indices."""
        out: list[list[tuple[int, float]]] = []
        for start in range(0, len(histories), batch_size):
            items, scores = self.recommender.top_k(histories[start:start + batch_size], k,
                                                   exclude_history=exclude_history)
            for row in range(len(items)):
                keep = items[row] >= 0
                found = scores[row][keep].tolist()
                if not all(map(math.isfinite, found)):
                    raise DataError(f"{self.path} gives a non-finite score (NaN or infinity) for history "
                                    f"{start + row}; its weights are unusable: re-create it (a run that diverged: a "
                                    "lower --lr)")
                out.append(list(zip(items[row][keep].tolist(), found)))
        return out

    def popular_indices(self, k: int, asked_by: str) -> list[tuple[int, float]]:
        """(item index, training count) of the k most popular items; `asked_by` names the option in the
        message for a model whose meta.json records no popularity."""
        from mscg.recommenders.popularity import PopularityRecommender

        if self._popularity is None:
            self._popularity = PopularityRecommender.of_model(self.recommender, self.path, asked_by)
        return self._popularity.most_popular(k)


def check_request(k: int, fallback: str, batch_size: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"k must be an integer of at least 1, not {k!r}")
    if fallback not in FALLBACKS:
        raise UsageError(f"fallback {fallback!r} must be one of: {', '.join(FALLBACKS)}")
    if batch_size < 1:
        raise UsageError("batch_size must be at least 1")
