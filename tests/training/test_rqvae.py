"""Training the RQ-VAE (`fit_rqvae`, `quantize --method rq-vae`): schedule, determinism, resume, artifacts."""

from __future__ import annotations

import json

import pytest
import torch

from mscg.console import render
from mscg.errors import DataError, UsageError
from mscg.models.rqvae import RQVAEConfig
from mscg.training.rqvae import RQVAETraining, default_batch_size, fit_rqvae, schedule
from tests.models.test_rqvae import clusters, embeddings

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


def fit(x, sizes=(8, 4), options=None, seed=0, **kwargs):
    """(model, training summary) of fit_rqvae on the vectors x, its events drained."""
    config = RQVAEConfig(dim=x.shape[1], codebook_sizes=list(sizes))
    training = RQVAETraining(**(options or {"epochs": 3, "batch_size": 32}))
    return render(fit_rqvae(config, training, x, [f"i{k}" for k in range(len(x))], seed=seed, **kwargs), "test",
                  quiet=True)


def test_codes_are_deterministic_for_a_seed():
    x, _ = clusters()
    first, training = fit(x)
    second, _ = fit(x)
    assert torch.equal(first.eval().encode(x), second.eval().encode(x))
    assert first.config.codebook_sizes == [8, 4] and first.config.dim == 12
    json.dumps(training)
    assert training["epochs_run"] == 3 and training["batch_size"] == 32


def test_fit_keeps_a_resume_checkpoint_in_its_checkpoint_directory(tmp_path):
    x, _ = clusters()
    model, _ = fit(x, checkpoint_dir=tmp_path)
    assert (tmp_path / "resume.pt").exists()
    # Resuming a finished run trains no further and gives the same model.
    resumed, _ = fit(x, checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(resumed.eval().encode(x), model.eval().encode(x))
    # Other settings cannot resume that checkpoint.
    with pytest.raises(UsageError):
        fit(x, checkpoint_dir=tmp_path, resume=True, options={"epochs": 4, "batch_size": 32})


def test_resume_is_exact_across_dead_code_restarts(tmp_path, monkeypatch):
    import mscg.training.rqvae as rqvae

    monkeypatch.setattr(rqvae, "RESTART_EVERY", 2)
    monkeypatch.setenv("MSCG_CHECKPOINT_SECONDS", "0")  # a checkpoint after every step
    x = torch.randn(128, 12, generator=torch.Generator().manual_seed(0))
    options = {"epochs": 4, "batch_size": 32}  # 16 steps
    (tmp_path / "ref").mkdir()
    (tmp_path / "q").mkdir()
    reference, training = fit(x, checkpoint_dir=tmp_path / "ref", options=options, sizes=[32, 16])
    assert training["optimizer_steps"] == 16 and training["dead_code_restarts"] > 0

    restart = rqvae.restart_dead_codewords

    def crash_at_step_8(model, vectors, *, seed):
        if seed == 8:  # seed 0: the restart seed is the step
            raise RuntimeError("killed")
        return restart(model, vectors, seed=seed)

    monkeypatch.setattr(rqvae, "restart_dead_codewords", crash_at_step_8)
    with pytest.raises(RuntimeError, match="killed"):
        fit(x, checkpoint_dir=tmp_path / "q", options=options, sizes=[32, 16])
    monkeypatch.setattr(rqvae, "restart_dead_codewords", restart)
    resumed, _ = fit(x, checkpoint_dir=tmp_path / "q", resume=True, options=options, sizes=[32, 16])
    expected = reference.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.state_dict().items())


def test_fit_rejects_bad_inputs():
    x, _ = clusters()
    with pytest.raises(UsageError, match="--epochs"):
        fit(x, options={"epochs": 0})
    with pytest.raises(DataError, match="at least 2 items"):
        fit(x[:1])


def test_quantize_command_writes_a_loadable_rq_vae(tmp_path):
    from mscg.artifacts.atomic import partial_path
    from mscg.artifacts.embeddings import save_embeddings
    from mscg.commands.quantize import quantize
    from mscg.quantizers import load_quantizer

    x, _ = clusters()
    emb_dir = tmp_path / "emb"
    emb_dir.mkdir()
    save_embeddings(emb_dir, embeddings(x), source={}, provenance={})
    out = tmp_path / "q"
    with pytest.raises(UsageError, match="--image-size does not apply to --method rq-vae"):
        quantize(out, modality="text", method="rq-vae", embeddings=emb_dir, options={"image_size": 224})
    stale = partial_path(out) / "stale.txt"  # a fresh (non-resumed) run starts from a clean partial directory
    stale.parent.mkdir()
    stale.write_text("x")
    result = quantize(out, modality="text", method="rq-vae", embeddings=emb_dir, n_levels=2, codebook_size="8",
                      options={"epochs": 2, "batch_size": 32})
    assert result.stats["items"] == len(x) and "reconstruction_mse" in result.stats
    model, config, meta = load_quantizer(out)
    assert config["model_type"] == "rq-vae" and meta["training"]["epochs_run"] == 2
    assert model.encode(x).shape == (len(x), 2)
    assert not (out / "resume.pt").exists() and not (out / "stale.txt").exists()
