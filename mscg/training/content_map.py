"""A map from an item's content (text and/or image embeddings) to its collab (SASRec) embedding.

Fitted on the items SASRec trained (ridge regression, its penalty chosen by efficient leave-one-out on the
fitting items), measured on a seeded share of them held out, then refitted on all of them; it predicts the
collab embedding of items that have content but no training interactions (new or withheld items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mscg.artifacts.embeddings import Embeddings

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)  # ridge penalties tried (features are unit-norm per modality)
HOLDOUT_SHARE = 0.1
MIN_FIT_ITEMS = 10


def load_contents(paths: list[Path], flag: str, catalogue, items_path: Path) -> list[Embeddings]:
    """Text and/or image embeddings of catalogue items, one artifact per modality (DataError/UsageError naming
    `flag` and the fix otherwise)."""
    from mscg.artifacts.embeddings import load_embeddings
    from mscg.errors import DataError, UsageError

    content = [load_embeddings(p, flag) for p in paths]
    modalities = [e.modality for e in content]
    for path, emb in zip(paths, content):
        if emb.modality == "collab":
            raise DataError(f"{flag} {path} holds collab embeddings; pass text or image embeddings")
        if modalities.count(emb.modality) > 1:
            raise UsageError(f"two {flag} artifacts of the {emb.modality} modality; pass one per modality")
        unknown = next((i for i in emb.item_ids if i not in catalogue.index), None)
        if unknown is not None:
            raise DataError(f"{flag} {path} has item {unknown!r}, which is not in {items_path}; make the "
                            "embeddings from the same items.jsonl")
    return content


def content_features(contents: list[Embeddings], item_ids: list[str]) -> np.ndarray:
    """(N, sum of dims + one indicator per modality) float64: each modality's vector scaled to unit length, zeros
    and indicator 0 where an item lacks it."""
    blocks = []
    for emb in contents:
        rows = emb.row_of()
        vectors = torch.nn.functional.normalize(emb.vectors.double(), dim=1).numpy()
        block = np.zeros((len(item_ids), emb.dim + 1))
        for n, item_id in enumerate(item_ids):
            row = rows.get(item_id)
            if row is not None:
                block[n, :-1] = vectors[row]
                block[n, -1] = 1.0
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


@dataclass
class ContentMap:
    weights: np.ndarray  # (F, D)
    bias: np.ndarray  # (D,)
    alpha: float
    quality: dict[str, float] = field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights + self.bias


def _ridge(features: np.ndarray, targets: np.ndarray):
    from sklearn.linear_model import RidgeCV

    return RidgeCV(alphas=ALPHAS).fit(features, targets)


def fit_content_map(features: np.ndarray, targets: np.ndarray, seed: int) -> ContentMap:
    """Ridge from content `features` (N, F) to collab `targets` (N, D) of the trained items. `quality` is
    measured on a seeded HOLDOUT_SHARE of them that the measuring fit never saw: R² (all dimensions pooled),
    mean cosine of prediction and truth, and the share of held-out items whose nearest held-out collab
    embedding (by cosine) to the prediction is their own (a retrieval check; chance is 1 / held-out items)."""
    n = len(features)
    if n < MIN_FIT_ITEMS:
        from mscg.errors import DataError

        raise DataError(f"only {n} items have both content and a trained collab embedding; the content map needs "
                        f"at least {MIN_FIT_ITEMS}")
    order = np.random.default_rng(seed).permutation(n)
    held = order[: max(1, round(HOLDOUT_SHARE * n))]
    fit = order[len(held):]
    measuring = _ridge(features[fit], targets[fit])
    predicted = measuring.predict(features[held])
    truth = targets[held]
    residual = ((predicted - truth) ** 2).sum()
    total = ((truth - truth.mean(axis=0)) ** 2).sum()
    unit_p = predicted / np.maximum(np.linalg.norm(predicted, axis=1, keepdims=True), 1e-12)
    unit_t = truth / np.maximum(np.linalg.norm(truth, axis=1, keepdims=True), 1e-12)
    cosine = (unit_p * unit_t).sum(axis=1)
    nearest = (unit_p @ unit_t.T).argmax(axis=1)
    final = _ridge(features, targets)
    quality = {"holdout_items": int(len(held)), "holdout_r2": round(float(1 - residual / max(total, 1e-12)), 4),
               "holdout_cosine": round(float(cosine.mean()), 4),
               "holdout_nearest_is_self": round(float((nearest == np.arange(len(held))).mean()), 4),
               "fit_items": int(n)}
    return ContentMap(weights=np.asarray(final.coef_).T, bias=np.asarray(final.intercept_), alpha=float(final.alpha_),
                      quality=quality)
