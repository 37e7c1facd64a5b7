"""Training SASRec (`mscg collab`): next-item loss on every position of each training window (full softmax,
or sampled softmax with negatives shared by the batch), early stopping on validation NDCG@10."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mscg.data.samples import SASRecWindows
from mscg.data.split import Dataset, Split
from mscg.errors import DataError
from mscg.models.sasrec import SASRec, SASRecConfig
from mscg.recommenders.sasrec import SASRecRecommender
from mscg.training import distributed as dist
from mscg.evaluation import validation_users
from mscg.training.defaults import DEFAULT_VALID_USERS
from mscg.training.defaults import SASREC_LOOP as SASREC_LOOP  # its home before defaults.py
from mscg.training.loop import Event, LoopConfig, LoopResult, train_loop, with_model
from mscg.training.validation import popularity_thirds, validation_sums

# `mscg collab`'s training defaults (the model's are SASRecConfig's).


def content_start(emb, item_ids: list[str], d_model: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Another modality's embeddings (an Embeddings artifact) as SASRec's starting item table.

    Returns (vectors (N, d_model), known (N,) bool): the artifact's rows for the catalogue's items,
    reduced to d_model dimensions by PCA (fitted on those rows; fewer components leave the last
    columns zero); items the artifact lacks are not known and keep a random start.
    """
    from sklearn.decomposition import PCA

    row_of = emb.row_of()
    rows = [row_of.get(i, -1) for i in item_ids]
    known = torch.tensor([r >= 0 for r in rows], dtype=torch.bool)
    if int(known.sum()) < 2:
        raise DataError(f"{emb.path}: the embeddings cover {int(known.sum())} of the dataset's {len(item_ids)} "
                        "items; --init-embeddings needs embeddings of the same catalogue (item ids as in "
                        "items.jsonl)")
    source = emb.vectors[[r for r in rows if r >= 0]].double().numpy()  # (n_known, D)
    n_components = min(d_model, source.shape[0], source.shape[1])
    reduced = PCA(n_components=n_components, random_state=seed).fit_transform(source)  # (n_known, n_components)
    vectors = torch.zeros(len(item_ids), d_model)
    vectors[known, :n_components] = torch.from_numpy(reduced.astype(np.float32))
    return vectors, known


class NegativeSamples:
    """A batch source: `windows`' batches, each with `negatives` item indices that all its targets share.

    "uniform" draws them uniformly from the catalogue (as eSASRec and gSASRec do, though per position);
    "popularity" in proportion to each item's count as a training target (the distribution of in-batch
    negatives) and adds their log probabilities `log_q` for the model's logQ correction. Drawn with torch's
    global generator on the windows' device, which the training loop seeds and checkpoints: same seed, same
    negatives, and a resumed run draws what the uninterrupted one did.
    """

    def __init__(self, windows: SASRecWindows, n_items: int, negatives: int, sampler: str = "uniform"):
        self.windows, self.n_items, self.negatives = windows, n_items, negatives
        self.device = windows.inputs.device
        self.probs = self.log_q = None
        if sampler == "popularity":
            counts = torch.bincount(windows.targets[windows.targets >= 0], minlength=n_items).double()
            self.probs = (counts / counts.sum()).float()  # (n_items,); every target has a count
            self.log_q = self.probs.log()  # -inf where never a target: never drawn, never scored
        elif sampler != "uniform":
            raise ValueError(f"unknown negative sampler {sampler!r}")

    def __len__(self) -> int:
        return len(self.windows)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.windows.batch(indices)
        if self.probs is None:
            out["negatives"] = torch.randint(self.n_items, (self.negatives,), device=self.device)
        else:
            out["negatives"] = torch.multinomial(self.probs, self.negatives, replacement=True)
            out["log_q"] = self.log_q
        return out


def sasrec_batches(config: SASRecConfig, split: Split, device: torch.device):
    """The batch source that trains `config` (resolved: see SASRecConfig.resolved) on `split`."""
    windows = SASRecWindows(split, config.max_history, device=device, pack=bool(config.pack))
    if not config.negatives:
        return windows
    return NegativeSamples(windows, config.n_items, config.negatives, config.negative_sampler)


def fit_sasrec(config: SASRecConfig, loop: LoopConfig, ds: Dataset, *, device: torch.device,
               start: tuple[torch.Tensor, torch.Tensor] | None = None, checkpoint_dir: Path | None = None,
               resume: bool = False, fingerprint: dict[str, Any] | None = None,
               valid_users: int = DEFAULT_VALID_USERS) -> Generator[Event, None, tuple[SASRec, LoopResult]]:
    """Train SASRec on the training sequences of `ds`; validate on the validation targets of `valid_users`
    users (all of them, or a seeded sample when there are more, as `train` does).

    `start` = (vectors, known) from `content_start` sets the first item table. Yields the loop's events;
    returns (the model with its best validated weights, the loop's result). A `config` whose loss or packing is
    left unset (None) gets them from SASRecConfig.resolved.
    """
    config = config.resolved(config.n_items)  # (no change to a resolved config)
    windows = sasrec_batches(config, ds.split, device)
    if len(windows) == 0:
        raise DataError(f"{ds.interactions_path}: no user has a training transition (every user has exactly 3 "
                        "interactions); SASRec needs longer sequences")
    torch.manual_seed(loop.seed)
    model = SASRec(config)
    if start is not None:
        model.init_item_table(*start)
    recommender = SASRecRecommender(model, ds.catalogue.item_ids, device, {})
    chosen = validation_users(len(ds.split), valid_users, loop.seed)
    mine = chosen[list(dist.shard(len(chosen)))]
    thirds = popularity_thirds(ds.split, chosen, len(ds.catalogue))

    def validate(core: SASRec) -> dict[str, float]:
        recommender.model = core
        return validation_sums(recommender, ds.split, mine, thirds=thirds)

    events = train_loop(model, windows, loop, device=device, validate=validate, checkpoint_dir=checkpoint_dir,
                        resume=resume, fingerprint={"model": config.to_json(), **(fingerprint or {})})
    return (yield from with_model(events, model))
