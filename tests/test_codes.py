import numpy as np
import torch

from mscg.artifacts.codes import Vocabulary, code_statistics, collision_level
from mscg.commands.quantize import auto_codebook_size
from mscg.models.rq_kmeans import RQKMeans, RQKMeansConfig
from mscg.models.residual_quantizer import ResidualQuantizer


def test_collision_level_numbers_shared_codes_in_row_order():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    suffix, size = collision_level(codes)
    assert suffix.tolist() == [0, 0, 1, 2, 0]
    assert size == 3
    full = np.concatenate([codes, suffix[:, None]], axis=1)
    assert len(np.unique(full, axis=0)) == len(codes)


def test_collision_level_without_collisions_has_size_one():
    suffix, size = collision_level(np.array([[0], [1], [2]]))
    assert suffix.tolist() == [0, 0, 0] and size == 1


def test_code_statistics():
    stats = code_statistics(np.array([[0, 1], [0, 1], [1, 0]]), [2, 4])
    assert stats["collision_rate"] == 2 / 3
    assert stats["codebook_usage"] == [1.0, 0.5]
    assert stats["unique_codes"] == 2


def test_vocabulary_layout_is_disjoint_and_round_trips():
    vocab = Vocabulary.build({"text": [8, 8, 3], "collab": [4, 4, 2]})
    ranges = [set(range(s.offset, s.offset + s.size)) for s in vocab.slots]
    assert all(a.isdisjoint(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    assert min(min(r) for r in ranges) == 2 + 2  # after pad, decoder start and 2 mask tokens
    assert vocab.size == 4 + 8 + 8 + 3 + 4 + 4 + 2
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_rq_kmeans_separates_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    x = centres.repeat_interleave(25, dim=0) + 0.01 * torch.randn(100, 16, generator=g)
    a = RQKMeans(RQKMeansConfig(dim=16, codebook_sizes=[4, 8], normalize=False))
    a.fit(x, seed=3)
    b = RQKMeans(RQKMeansConfig(dim=16, codebook_sizes=[4, 8], normalize=False))
    b.fit(x, seed=3)
    codes = a.encode(x)
    assert torch.equal(codes, b.encode(x))
    first = codes[:, 0].view(4, 25)
    assert all(len(set(row.tolist())) == 1 for row in first)  # one first-level code per cluster
    assert len(set(first[:, 0].tolist())) == 4
    assert a.reconstruction_error(x) < 0.01


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


def test_auto_codebook_size():
    assert auto_codebook_size(30) == 8
    assert auto_codebook_size(1682) == 64
    assert auto_codebook_size(400_000) == 256
    assert auto_codebook_size(1) == 2
