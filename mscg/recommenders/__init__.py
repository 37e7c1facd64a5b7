"""Inference: one interface over the trained models, used by the API, `serve`, `evaluate`, `recommend`, `fuse` and
validation in training.

    recommender = load(path, device)              # the model folder's kind, from its config.json's model_type
    items, scores = recommender.top_k(histories, k, exclude_history=True)
    ranks = recommender.rank(histories, targets)

Recommenders work on dense item indices (`item_ids[i]` is item i). One module per kind: sasrec (scores every
item), generator (constrained beam search over item codes), fused (a beam and dense scorers re-ranked together),
dense_head (a generator's own dense scorer), popularity (the training counts: a fallback, and a floor). This
package imports no training and no command; training and commands import it.

Leaving the history out: `exclude_history` everywhere, True for recommending and False for evaluating
(recommenders/defaults.py states both); each kind excludes through `excluded_items`. A generator asked for k items
searches a beam of at least k (GeneratorRecommender.beam_for), so every kind fills k when k items remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch

# model_type (config.json) -> the module of mscg.recommenders whose `load_folder` reads such a folder
REGISTRY = {"sasrec": "sasrec", "mscg-generator": "generator", "fused": "fused"}
MODEL_TYPES = tuple(REGISTRY)


class Recommender(Protocol):
    kind: str  # a model_type of REGISTRY (or "popularity", "dense-head")
    item_ids: list[str]  # the catalogue, in dense index order
    meta: dict  # the folder's meta.json ({} when built in memory)

    def top_k(self, histories: Sequence[np.ndarray], k: int, *, exclude_history: bool = False,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(items (B, k) best first, -1 where fewer remain; scores (B, k)). With `exclude_history` no item of a
        history is returned but `keep[row]` (an evaluation target stays rankable)."""

    def rank(self, histories: Sequence[np.ndarray], targets: torch.Tensor, *, k: int = 10,
             exclude_history: bool = False) -> torch.Tensor:
        """(B,) 1-based rank of each target; a kind that ranks a list (a beam) puts targets outside it past the
        list, which is at least `k` deep."""

    def memory_bytes_per_item(self) -> float:
        """What serving one more item costs the model: its codes, or its row of an item table."""


def load(path: Path | str, device: torch.device, *, beam_size: int | None = None, codes_path: Path | None = None,
         verify: bool = True) -> Recommender:
    """The recommender of a model folder. Its config is checked (types, ranges, and the tensor shapes of
    model.safetensors' header) before anything is built; a generator takes `beam_size` (default: the one it
    recorded) and its own codes unless `codes_path`; `verify`: those codes must have the digest its meta.json
    records."""
    from importlib import import_module

    from mscg.artifacts.modeldir import read_model_dir

    path = Path(path)
    config, meta = read_model_dir(path, "model", "MODEL", MODEL_TYPES)
    module = import_module(f"mscg.recommenders.{REGISTRY[config['model_type']]}")
    return module.load_folder(path, config, meta, device, beam_size=beam_size, codes_path=codes_path,
                              verify=verify)
