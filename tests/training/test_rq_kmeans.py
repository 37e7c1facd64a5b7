"""Fitting residual k-means (`quantize --method rq-kmeans`)."""

from __future__ import annotations

import torch

from mscg.console import render
from mscg.models.rq_kmeans import RQKMeansConfig
from mscg.training.rq_kmeans import fit_rq_kmeans


def test_rq_kmeans_separates_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    x = centres.repeat_interleave(25, dim=0) + 0.01 * torch.randn(100, 16, generator=g)
    config = RQKMeansConfig(dim=16, codebook_sizes=[4, 8], normalize=False)
    a, _ = render(fit_rq_kmeans(config, None, x, [], seed=3), "test", quiet=True)
    b, _ = render(fit_rq_kmeans(config, None, x, [], seed=3), "test", quiet=True)
    codes = a.encode(x)
    assert torch.equal(codes, b.encode(x))
    first = codes[:, 0].view(4, 25)
    assert all(len(set(row.tolist())) == 1 for row in first)  # one first-level code per cluster
    assert len(set(first[:, 0].tolist())) == 4
    assert a.reconstruction_error(x) < 0.01
