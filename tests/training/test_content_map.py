"""The content -> collab map: recovers a collab embedding its content determines, and says how well it does."""

from __future__ import annotations

import numpy as np
import torch

from mscg.artifacts.embeddings import Embeddings
from mscg.training.content_map import content_features, fit_content_map


def test_a_map_recovers_collab_embeddings_that_content_determines():
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(300)]
    text = torch.from_numpy(rng.normal(size=(300, 12))).float()
    features = content_features([Embeddings("text", ids, text)], ids)
    truth = features @ rng.normal(size=(features.shape[1], 6)) + 0.5  # collab = a linear function of content
    content_map = fit_content_map(features[:250], truth[:250], seed=0)
    assert content_map.quality["holdout_r2"] > 0.95 and content_map.quality["holdout_nearest_is_self"] > 0.9
    predicted = content_map.predict(features[250:])  # items the map never saw
    assert np.abs(predicted - truth[250:]).max() < 0.1 * np.abs(truth).max()


def test_unrelated_content_is_reported_as_such():
    rng = np.random.default_rng(1)
    ids = [f"i{k}" for k in range(300)]
    features = content_features([Embeddings("text", ids, torch.randn(300, 12))], ids)
    content_map = fit_content_map(features, rng.normal(size=(300, 6)), seed=0)
    assert content_map.quality["holdout_r2"] < 0.2 and content_map.quality["holdout_nearest_is_self"] < 0.3


def test_features_mark_a_missing_modality():
    ids = ["a", "b", "c"]
    text = Embeddings("text", ["a", "b", "c"], torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]))
    image = Embeddings("image", ["b"], torch.tensor([[0.0, 5.0, 0.0]]))
    features = content_features([text, image], ids)
    assert features.shape == (3, 2 + 1 + 3 + 1)
    np.testing.assert_allclose(features[0], [0.6, 0.8, 1, 0, 0, 0, 0])  # unit length; no image: zeros, flag 0
    np.testing.assert_allclose(features[1], [1, 0, 1, 0, 1, 0, 1])
