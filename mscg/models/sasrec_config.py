"""SASRec's config (`mscg collab`'s defaults), free of torch: `mscg collab --help` reads it without importing
torch. The model is in sasrec.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mscg.models.config import JsonConfig

NEGATIVE_SAMPLERS = ("uniform", "popularity")
# Sampled softmax's negatives per batch. eSASRec and gSASRec draw 256 (per position); on Amazon Toys (11,924
# items, 20 epochs) 1,024 shared ones scored 13% higher validation NDCG@10 than 256 for ~20% more time a step.
DEFAULT_NEGATIVES = 1024
# Full softmax up to this many items, where the default negatives would be a quarter of the catalogue or more
# (sampling would save little and approximate the loss); sampled softmax above it.
FULL_SOFTMAX_MAX_ITEMS = 4 * DEFAULT_NEGATIVES


@dataclass
class SASRecConfig(JsonConfig):
    n_items: int
    max_history: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    # How it trains; None: chosen from the catalogue's size by `resolved` (a saved config holds the choice).
    negatives: int | None = None  # 0: full softmax over every item; N: sampled softmax, N negatives per batch
    negative_sampler: str = "uniform"  # how negatives are drawn: "uniform", or "popularity"
    pack: bool | None = None  # short training windows share rows, so no compute goes to padding
    model_type: str = "sasrec"

    def resolved(self, n_items: int) -> SASRecConfig:
        """This config for a catalogue of `n_items`, what was left to choose chosen: full softmax up to
        FULL_SOFTMAX_MAX_ITEMS items, DEFAULT_NEGATIVES sampled negatives above; windows packed with sampled
        softmax (full softmax keeps the padded windows, and so the results of mscg before sampling existed)."""
        negatives = self.negatives
        if negatives is None:
            negatives = 0 if n_items <= FULL_SOFTMAX_MAX_ITEMS else DEFAULT_NEGATIVES
        pack = negatives > 0 if self.pack is None else self.pack
        return replace(self, n_items=n_items, negatives=negatives, pack=pack)
