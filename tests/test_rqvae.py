"""RQ-VAE (`quantize --method rq-vae`): model, residual quantizer round trips, training and artifacts."""

from __future__ import annotations

import json

import pytest
import torch

from mscg.artifacts.embeddings import Embeddings
from mscg.errors import DataError, UsageError
from mscg.models.residual_quantizer import ResidualQuantizer
from mscg.models.rqvae import RQVAE, RQVAEConfig, default_batch_size, fit_rqvae, restart_dead_codewords, schedule

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


def test_kmeans_init_gives_full_usage_on_separated_clusters():
    x, labels = clusters(n_clusters=8)
    model = small_model(sizes=(8, 4))
    model.init_codebooks(x, seed=0)
    codes = model.encode(x)
    assert len(codes[:, 0].unique()) == 8
    # One first-level codeword per cluster.
    assert all(len(codes[labels == c, 0].unique()) == 1 for c in range(8))


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
    from mscg.models.quantizers import build_quantizer, load_quantizer

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


# ----- training ----------------------------------------------------------------------------------

def test_defaults_scale_with_the_catalogue():
    assert default_batch_size(300) == 256 and default_batch_size(1_000_000) == 1024
    for n in (2, 300, 1_682, 50_000, 400_000):
        bs = default_batch_size(n)
        epochs, repeats = schedule(n, bs)
        assert epochs >= 20 and epochs % repeats == 0
        loop_epochs, steps_per_loop_epoch = epochs // repeats, -(-n * repeats // bs)
        assert 3_000 <= loop_epochs * steps_per_loop_epoch <= 10_000
        assert loop_epochs <= 50  # small catalogues are not checkpointed after every pass
    assert schedule(1_682, 256, 429) == (429, 13)  # --epochs is honoured exactly


def fit(x, sizes=(8, 4), **kwargs):
    kwargs.setdefault("options", {"epochs": 3, "batch_size": 32})
    return fit_rqvae(embeddings(x), list(sizes), seed=kwargs.pop("seed", 0), device="cpu", **kwargs)


def test_codes_are_deterministic_for_a_seed():
    x, _ = clusters()
    first, config, training = fit(x)
    second, _, _ = fit(x)
    assert torch.equal(first.eval().encode(x), second.eval().encode(x))
    assert config.codebook_sizes == [8, 4] and config.dim == 12
    json.dumps(training)
    assert training["epochs_run"] == 3 and training["batch_size"] == 32


def test_fit_keeps_a_resume_checkpoint_in_the_partial_directory(tmp_path):
    from mscg.artifacts.atomic import partial_path

    x, _ = clusters()
    out = tmp_path / "q"
    model, _, _ = fit(x, output=out)
    checkpoint = partial_path(out) / "resume.pt"
    assert checkpoint.exists() and not out.exists()
    # Resuming a finished run trains no further and gives the same model.
    resumed, _, _ = fit(x, output=out, resume=True)
    assert torch.equal(resumed.eval().encode(x), model.eval().encode(x))
    # Other settings cannot resume that checkpoint.
    with pytest.raises(UsageError):
        fit(x, output=out, resume=True, options={"epochs": 4, "batch_size": 32})
    # A fresh (non-resumed) run starts from a clean partial directory.
    (partial_path(out) / "stale.txt").write_text("x")
    fit(x, output=out)
    assert not (partial_path(out) / "stale.txt").exists()


def test_resume_is_exact_across_dead_code_restarts(tmp_path, monkeypatch):
    import mscg.models.rqvae as rqvae

    monkeypatch.setattr(rqvae, "RESTART_EVERY", 2)
    monkeypatch.setenv("MSCG_CHECKPOINT_SECONDS", "0")  # a checkpoint after every step
    x = torch.randn(128, 12, generator=torch.Generator().manual_seed(0))
    options = {"epochs": 4, "batch_size": 32}  # 16 steps
    reference, _, training = fit(x, output=tmp_path / "ref", options=options, sizes=[32, 16])
    assert training["steps"] == 16 and training["dead_code_restarts"] > 0

    restart = rqvae.restart_dead_codewords

    def crash_at_step_8(model, vectors, *, seed):
        if seed == 8:  # seed 0: the restart seed is the step
            raise RuntimeError("killed")
        return restart(model, vectors, seed=seed)

    monkeypatch.setattr(rqvae, "restart_dead_codewords", crash_at_step_8)
    with pytest.raises(RuntimeError, match="killed"):
        fit(x, output=tmp_path / "q", options=options, sizes=[32, 16])
    monkeypatch.setattr(rqvae, "restart_dead_codewords", restart)
    resumed, _, _ = fit(x, output=tmp_path / "q", resume=True, options=options, sizes=[32, 16])
    expected = reference.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.state_dict().items())


def test_fit_rejects_bad_inputs():
    x, _ = clusters()
    with pytest.raises(UsageError, match="--image-size"):
        fit(x, options={"image_size": 224})
    with pytest.raises(UsageError, match="--epochs"):
        fit(x, options={"epochs": 0})
    with pytest.raises(DataError):
        fit(x[:1])


def test_quantize_command_writes_a_loadable_rq_vae(tmp_path):
    from mscg.artifacts.embeddings import save_embeddings
    from mscg.commands.quantize import quantize
    from mscg.models.quantizers import load_quantizer

    x, _ = clusters()
    emb_dir = tmp_path / "emb"
    emb_dir.mkdir()
    save_embeddings(emb_dir, embeddings(x), source={}, provenance={})
    out = tmp_path / "q"
    result = quantize(out, modality="text", method="rq-vae", embeddings=emb_dir, n_levels=2, codebook_size="8",
                      options={"epochs": 2, "batch_size": 32})
    assert result.stats["items"] == len(x) and "reconstruction_mse" in result.stats
    model, config, meta = load_quantizer(out)
    assert config["model_type"] == "rq-vae" and meta["training"]["epochs_run"] == 2
    assert model.encode(x).shape == (len(x), 2)
    assert not (out / "resume.pt").exists()
