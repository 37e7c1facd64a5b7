"""The residual quantizer: encode/decode round trips, k-means initialisation."""

from __future__ import annotations

import torch

from mscg.models.residual_quantizer import ResidualQuantizer
from tests.models.test_rqvae import clusters


def test_residual_quantizer_decode_inverts_encode():
    rq = ResidualQuantizer(dim=8, codebook_sizes=[5, 5, 5])
    x = torch.randn(50, 8)
    rq.init_kmeans(x, seed=0)
    codes = rq.encode(x)
    manual = sum(rq.codebooks[level][codes[:, level]] for level in range(3))
    assert torch.allclose(rq.decode(codes), manual)
    assert (x - rq.decode(codes)).norm(dim=1).mean() < x.norm(dim=1).mean()
    quantized, indices, losses = rq(x)
    assert torch.equal(indices, codes)
    assert torch.allclose(quantized, rq.decode(codes), atol=1e-5)
    assert set(losses) == {"codebook", "commitment"}


def test_residual_quantizer_decode_inverts_encode_up_to_quantization():
    z, _ = clusters(dim=6)
    rq = ResidualQuantizer(dim=6, codebook_sizes=[8, 8])
    rq.init_kmeans(z, seed=0)
    codes = rq.encode(z)  # (N, 2)
    assert codes.shape == (len(z), 2) and codes.dtype == torch.long
    decoded = rq.decode(codes)
    manual = rq.codebooks[0][codes[:, 0]] + rq.codebooks[1][codes[:, 1]]
    assert torch.allclose(decoded, manual)
    # Error well below the clusters' spread, and re-encoding the reconstruction gives the same first level.
    assert (decoded - z).pow(2).sum(1).mean() < 0.01 * z.pow(2).sum(1).mean()
    assert torch.equal(rq.encode(decoded)[:, 0], codes[:, 0])




def test_balanced_assignment_evens_out_codeword_use():
    from mscg.models.residual_quantizer import balanced_assignment

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 8, generator=g)
    x[:600] *= 0.1  # a crowded region: nearest-codeword assignment piles it onto few codewords
    codebook = torch.randn(16, 8, generator=g)
    nearest = torch.bincount(ResidualQuantizer.nearest(x, codebook), minlength=16)
    balanced = torch.bincount(balanced_assignment(x, codebook), minlength=16)
    assert balanced.max() < nearest.max() / 2 and balanced.min() > nearest.min()
    assert torch.equal(balanced_assignment(x, codebook), balanced_assignment(x, codebook))


def test_balance_changes_the_last_level_only():
    z, _ = clusters(dim=6)
    rq = ResidualQuantizer(dim=6, codebook_sizes=[8, 8])
    rq.init_kmeans(z, seed=0)
    plain, balanced = rq.encode(z), rq.encode(z, balance_last=True)
    assert torch.equal(plain[:, 0], balanced[:, 0])
    assert torch.bincount(balanced[:, 1], minlength=8).max() <= torch.bincount(plain[:, 1], minlength=8).max()
