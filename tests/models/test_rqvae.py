"""RQ-VAE, the model: encode/decode round trips, normalisation, loss, dead-code restarts, the registry."""

from __future__ import annotations

import json

import pytest
import torch

from mscg.artifacts.embeddings import Embeddings
from mscg.errors import DataError
from mscg.models.rqvae import RQVAE, RQVAEConfig
from mscg.training.rqvae import restart_dead_codewords

SMALL = {"hidden_dims": [32, 16], "latent_dim": 8}


def clusters(n_clusters: int = 8, per_cluster: int = 16, dim: int = 12, noise: float = 0.01, seed: int = 0):
    """Well-separated clusters: (n_clusters * per_cluster, dim) vectors and their cluster labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 3
    labels = torch.arange(n_clusters).repeat_interleave(per_cluster)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=g), labels


def embeddings(x: torch.Tensor) -> Embeddings:
    return Embeddings("text", [f"i{k}" for k in range(len(x))], x)


def small_model(dim: int = 12, sizes=(8, 4), seed: int = 0, **kwargs) -> RQVAE:
    torch.manual_seed(seed)
    return RQVAE(RQVAEConfig(dim=dim, codebook_sizes=list(sizes), **{**SMALL, **kwargs}))


# ----- residual quantizer ------------------------------------------------------------------------


# ----- model -------------------------------------------------------------------------------------

def test_encode_decode_round_trip_matches_training_path():
    x, _ = clusters()
    model = small_model()
    model.init_codebooks(x, seed=0)
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (len(x), 2) and codes.dtype == torch.long
    recon = model.decode_codes(codes)  # (N, dim)
    assert recon.shape == x.shape
    # The training forward pass quantizes to the same codes and decodes to the same vectors.
    target = model.prepare(x)
    quantized, indices, _ = model.rq(model.latent(target))
    assert torch.equal(indices, codes)
    assert torch.allclose(model.decoder(quantized) * model.input_scale, recon, atol=1e-5)
    expected = float((target - recon).pow(2).sum(1).mean())
    assert model.reconstruction_error(x) == pytest.approx(expected, rel=1e-5)
    assert torch.equal(model.encode(x, chunk=7), codes)  # chunking changes nothing


def test_normalize_puts_inputs_on_the_unit_sphere():
    x, _ = clusters()
    model = small_model()
    assert torch.allclose(model.prepare(x).norm(dim=1), torch.ones(len(x)))
    raw = small_model(normalize=False)
    raw.init_codebooks(x * 50, seed=0)
    assert raw.input_scale.item() == pytest.approx(float((x * 50).norm(dim=1).mean()), rel=1e-5)


def test_loss_decreases_on_a_fixed_batch():
    x, _ = clusters()
    model = small_model()
    model.init_codebooks(x, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(x)
        assert loss.ndim == 0 and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_dead_code_restart_revives_unused_codewords():
    x, _ = clusters(n_clusters=8)
    model = small_model(sizes=(8, 4))
    model.init_codebooks(x, seed=0)
    assert restart_dead_codewords(model, x, seed=0) == 0  # after k-means every codeword is used
    with torch.no_grad():
        model.rq.codebooks[0].data[4:] = 1e3  # four codewords nobody is near
    assert len(model.encode(x)[:, 0].unique()) <= 4
    model.train()
    assert restart_dead_codewords(model, x, seed=0) >= 4
    assert model.training  # the mode is restored
    assert model.rq.codebooks[0].data.abs().max() < 1e3
    assert len(model.encode(x)[:, 0].unique()) > 4


def test_config_round_trips_through_json_and_the_registry(tmp_path):
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.quantizers import build_quantizer, load_quantizer

    config = RQVAEConfig(dim=12, codebook_sizes=[8, 4], normalize=False, modality="collab", **SMALL)
    as_json = json.loads(json.dumps(config.to_json()))
    assert as_json["model_type"] == "rq-vae"
    assert RQVAEConfig(**as_json) == config
    assert isinstance(build_quantizer(as_json), RQVAE)
    with pytest.raises(DataError):
        build_quantizer({**as_json, "n_heads": 2})

    x, _ = clusters()
    model = RQVAE(config)
    model.init_codebooks(x, seed=0)
    save_model_dir(tmp_path, "quantizer", model, config.to_json(), modality="collab", method="rq-vae")
    loaded, loaded_config, _ = load_quantizer(tmp_path)
    assert loaded_config == config.to_json()
    assert loaded.input_scale.item() == pytest.approx(model.input_scale.item())
    assert torch.equal(loaded.encode(x), model.eval().encode(x))


def test_kmeans_init_gives_full_usage_on_separated_clusters():
    x, labels = clusters(n_clusters=8)
    model = small_model(sizes=(8, 4))
    model.init_codebooks(x, seed=0)
    codes = model.encode(x)
    assert len(codes[:, 0].unique()) == 8
    # One first-level codeword per cluster.
    assert all(len(codes[labels == c, 0].unique()) == 1 for c in range(8))
