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


def test_quantize_balanced_last_level_is_recorded_and_used_by_assign_codes(tmp_path):
    import json

    from tests.helpers import build_tiny_pipeline, ok

    pipe = build_tiny_pipeline(tmp_path, generator=False, sasrec=False)
    ok("quantize", "--modality", "collab", "--embeddings", pipe.emb_collab, "-o", pipe.work / "q_bal",
       "--n-levels", "2", "--balanced-last-level")
    config = json.loads((pipe.work / "q_bal" / "config.json").read_text())
    assert config["balanced_last_level"] is True
    ok("assign-codes", "-d", pipe.data, "-q", pipe.q_text, "-q", pipe.work / "q_bal", "-o", pipe.work / "codes_bal")
    meta = json.loads((pipe.work / "codes_bal" / "meta.json").read_text())
    stats = {m["name"]: m["stats"] for m in meta["modalities"]}["collab"]
    quantizer = json.loads((pipe.work / "q_bal" / "meta.json").read_text())["stats"]
    assert stats["collision_rate"] == quantizer["collision_rate"]  # the same balanced codes
