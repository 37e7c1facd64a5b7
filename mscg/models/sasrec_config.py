"""SASRec's config (`mscg collab`'s defaults), free of torch: `mscg collab --help` reads it without importing
torch. The model is in sasrec.py."""

from __future__ import annotations

from dataclasses import dataclass

from mscg.models.config import JsonConfig


@dataclass
class SASRecConfig(JsonConfig):
    n_items: int
    max_history: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    model_type: str = "sasrec"
