"""Training SASRec: the content start of its item table (`collab --init-embeddings`)."""

from __future__ import annotations

import torch


def test_content_start_projects_by_pca_and_leaves_unknown_items_out():
    import numpy as np
    import pytest

    from mscg.artifacts.embeddings import Embeddings
    from mscg.errors import DataError
    from mscg.training.sasrec import content_start

    rng = np.random.default_rng(0)
    # 3 informative directions in 10-d: PCA to 4 keeps them, the 4th component is small
    basis = rng.normal(size=(3, 10))
    vectors = torch.from_numpy((rng.normal(size=(20, 3)) @ basis + 1e-3 * rng.normal(size=(20, 10))).astype("float32"))
    emb = Embeddings("text", [f"i{k}" for k in range(20)], vectors)
    catalogue = ["i3", "new", "i0"] + [f"i{k}" for k in range(4, 20)]
    start, known = content_start(emb, catalogue, d_model=4, seed=0)
    assert start.shape == (len(catalogue), 4)
    assert known.tolist() == [True, False] + [True] * 17
    assert torch.equal(start[1], torch.zeros(4))
    # distances between known items survive the projection (the data is ~3-dimensional)
    rows = [3, 0] + list(range(4, 20))
    orig = torch.cdist(vectors[rows].double(), vectors[rows].double())
    proj = torch.cdist(start[known].double(), start[known].double())
    assert torch.allclose(orig, proj, atol=1e-2)
    # fewer components than the model width: the last columns stay zero
    wide, _ = content_start(emb, catalogue, d_model=32, seed=0)
    assert torch.count_nonzero(wide[:, 10:]) == 0 and torch.count_nonzero(wide[:, :10]) > 0
    with pytest.raises(DataError, match="cover 0 of"):
        content_start(emb, ["x", "y", "z"], d_model=4, seed=0)
