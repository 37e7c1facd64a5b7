"""SASRec's config (`mscg collab`'s defaults), free of torch: `mscg collab --help` reads it without importing
torch. The model is in sasrec.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mscg.configs import check_fields, option
from mscg.models.config import JsonConfig, check_attention

NEGATIVE_SAMPLERS = ("uniform", "popularity")
# Sampled softmax's negatives per batch. eSASRec and gSASRec draw 256 (per position); on Amazon Toys (11,924
# items, 20 epochs) 1,024 shared ones scored 13% higher validation NDCG@10 than 256 for ~20% more time a step.
DEFAULT_NEGATIVES = 1024
# Full softmax up to this many items, sampled softmax above. On Amazon Toys (11,924 items, early stopped; BENCHMARKS.md
# "collab end to end") the full softmax validated 8-10% higher NDCG@10 than 1,024 sampled negatives at ~2.3x the
# time an epoch (~11 s with packed windows on 2 cores), so it stays while an epoch is affordable: its cost grows with
# the catalogue (~13 min an epoch at 100k items, where sampling takes ~0.6 min).
FULL_SOFTMAX_MAX_ITEMS = 16_384
# Windows packed above this many items (or with sampled softmax): smaller catalogues keep the padded windows, and so
# the results of mscg before packing existed, bit for bit.
PACK_ABOVE_ITEMS = 4_096


@dataclass
class SASRecConfig(JsonConfig):
    n_items: int
    max_history: int = option(50, help="Items of history SASRec attends to.", ge=1)
    d_model: int = option(64, help="Embedding width.", ge=1)
    n_layers: int = option(2, help="Self-attention blocks.", ge=1)
    n_heads: int = option(2, help="Attention heads.", ge=1)
    dropout: float = option(0.2, help="Dropout rate.", ge=0, lt=1)
    # How it trains; None: chosen from the catalogue's size by `resolved` (a saved config holds the choice).
    negatives: int | None = option(None, ge=0, help="Sampled softmax with N negatives shared by each batch; 0: full "
                                   f"softmax over every item. Default: full softmax up to {FULL_SOFTMAX_MAX_ITEMS:,} "
                                   f"items, {DEFAULT_NEGATIVES} negatives above.")
    negative_sampler: str = option("uniform", choices=NEGATIVE_SAMPLERS, help="How negatives are drawn: uniform "
                                   "(from the catalogue), or popularity (in proportion to each item's training "
                                   "count, with the logQ correction).")
    pack: bool | None = option(None, flag="--pack/--no-pack", help="Pack short training windows into shared rows so "
                               "that no compute goes to padding (the same loss). Default: on above "
                               f"{PACK_ABOVE_ITEMS:,} items or with sampled softmax.")
    model_type: str = "sasrec"

    def check(self) -> None:
        """The options, each refused with its flag named, before anything is read."""
        check_attention(self.d_model, self.n_heads, self.dropout)
        check_fields(self)

    def resolved(self, n_items: int) -> SASRecConfig:
        """This config for a catalogue of `n_items`, what was left to choose chosen: full softmax up to
        FULL_SOFTMAX_MAX_ITEMS items, DEFAULT_NEGATIVES sampled negatives above; windows packed above
        PACK_ABOVE_ITEMS items or with sampled softmax (smaller catalogues keep the results of mscg before packing)."""
        negatives = self.negatives
        if negatives is None:
            negatives = 0 if n_items <= FULL_SOFTMAX_MAX_ITEMS else DEFAULT_NEGATIVES
        pack = (negatives > 0 or n_items > PACK_ABOVE_ITEMS) if self.pack is None else self.pack
        return replace(self, n_items=n_items, negatives=negatives, pack=pack)
