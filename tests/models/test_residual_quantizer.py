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


