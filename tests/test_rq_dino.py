"""RQ-DINO: the model (loss, EMA teacher, codes) and `quantize --method rq-dino` on tiny synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mscg.data.items import load_catalogue
from mscg.encoders.augment import MultiCrop
from mscg.errors import DataError, UsageError
from mscg.models.rq_dino import RQDINO, RQDINOConfig
from tests.test_image import bad_files, image_catalogue, uint8_images

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CPU = torch.device("cpu")
TINY = {"backbone": "vit-small", "vit_dim": 32, "vit_layers": 1, "vit_heads": 2, "patch_size": 8, "image_size": 32,
        "local_size": 16, "n_local": 2, "latent_dim": 16, "hidden_dim": 32, "head_hidden_dim": 32,
        "head_bottleneck_dim": 16, "n_prototypes": 64}
TINY_RUN = {**TINY, "epochs": 2, "batch_size": 4}


def tiny_model(seed: int = 0, **overrides) -> RQDINO:
    torch.manual_seed(seed)
    return RQDINO(RQDINOConfig(codebook_sizes=[4, 4], **{**TINY, **overrides}))


def fixed_batch(config: RQDINOConfig) -> dict[str, torch.Tensor]:
    crop = MultiCrop(global_size=config.image_size, local_size=config.local_size, n_local=config.n_local)
    g, l = crop(uint8_images(4), generator=torch.Generator().manual_seed(0))
    return {"globals": g, "locals": l}


def step(model: RQDINO, batch: dict, lr: float = 1e-3) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss = model(**batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# ---- the model ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["vit-small", "efficientnet-lite0"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(backbone: str):
    extra = {"center_momentum": 1.0}  # a fixed centre, so the loss before and after is the same function
    if backbone == "efficientnet-lite0":
        extra |= {"backbone": backbone, "train_blocks": 1}
    model = tiny_model(**extra)
    model.load_pretrained_backbone()
    batch = fixed_batch(model.config)
    with torch.no_grad():
        before = float(model.eval()(**batch))
    step(model, batch)
    with torch.no_grad():
        after = float(model.eval()(**batch))
    assert np.isfinite(before) and after < before


def test_the_teacher_gets_no_gradient_and_follows_the_student_by_ema():
    model = tiny_model()
    batch = fixed_batch(model.config)
    teacher_before = [p.detach().clone() for p in model.teacher.parameters()]
    step(model, batch)
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, model.teacher.parameters()))  # only EMA moves it
    assert any(p.grad is not None for p in model.student.rq.codebooks)  # codebook term trains the student's
    model.update_teacher(0.9)
    for old, t, s in zip(teacher_before, model.teacher.parameters(), model.student.parameters()):
        assert torch.allclose(t, 0.9 * old + 0.1 * s.detach(), atol=1e-6)
    model.update_teacher(0.0)
    assert all(torch.equal(t, s) for t, s in zip(model.teacher.parameters(), model.student.parameters()))


def test_training_mode_keeps_teacher_and_frozen_parts_in_eval():
    model = tiny_model(backbone="efficientnet-lite0", train_blocks=2).train()
    assert model.training and model.student.training and not model.teacher.training and not model.trunk.training
    assert not any(p.requires_grad for p in model.trunk.parameters())
    assert all(not m.training for m in model.student.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_centre_moves_towards_the_teacher_outputs_in_training_only():
    model = tiny_model()
    batch = fixed_batch(model.config)
    with torch.no_grad():
        model.eval()(**batch)
        assert torch.equal(model.center, torch.zeros_like(model.center))
        model.train()(**batch)
    assert model.center.abs().sum() > 0
    assert sum(float(getattr(model, f"hits_{level}").sum()) for level in range(2)) == 2 * 4 * (2 + 2)


def test_dead_codes_are_restarted_in_student_and_teacher():
    model = tiny_model()
    model.train()(**fixed_batch(model.config))
    model.hits_0.zero_()
    model.hits_0[0] = 5  # every other level-0 codeword counts as unused
    model.teacher.rq.codebooks[0].data.add_(1.0)
    restarted = model.restart_dead_codes()
    assert restarted >= 3
    student, teacher = model.student.rq.codebooks[0], model.teacher.rq.codebooks[0]
    assert torch.equal(student[1:], teacher[1:]) and not torch.equal(student[0], teacher[0])
    assert float(model.hits_0.sum()) == 0


def test_codes_are_deterministic_and_come_from_the_teacher():
    a, b = tiny_model(seed=1), tiny_model(seed=1)
    views = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.eval().encode(views), b.eval().encode(views))
    codes = a.encode(views)
    assert codes.shape == (5, 2) and codes.dtype == torch.int64
    assert torch.equal(codes, a.teacher.rq.encode(a.teacher_latents(views)))


def test_config_round_trips_through_json():
    config = RQDINOConfig(codebook_sizes=[8, 8, 8], **TINY)
    assert RQDINOConfig.from_json(config.to_json()) == config
    with pytest.raises(TypeError):
        RQDINOConfig.from_json({**config.to_json(), "surprise": 1})


# ---- quantize --method rq-dino ------------------------------------------------------------------------

def run(tmp_path: Path, name: str, data: Path, **kwargs):
    from mscg.commands.quantize import quantize

    kwargs.setdefault("options", dict(TINY_RUN))
    return quantize(tmp_path / name, modality="image", method="rq-dino", data=data, n_levels=2, codebook_size="4",
                    seed=kwargs.pop("seed", 0), device="cpu", **kwargs)


@pytest.fixture(scope="module")
def images_data(tmp_path_factory) -> Path:
    return image_catalogue(tmp_path_factory.mktemp("img"), 12)


def test_quantize_writes_a_directory_that_assign_codes_can_load(tmp_path: Path, images_data: Path):
    from mscg.models.quantizers import load_quantizer

    result = run(tmp_path, "q", images_data)
    assert result.method == "rq-dino" and result.modality == "image" and result.items == 12
    assert result.codebook_sizes == [4, 4] and len(result.stats["codebook_usage"]) == 2
    model, config, meta = load_quantizer(tmp_path / "q")
    assert config["model_type"] == "rq-dino" and meta["modality"] == "image" and meta["method"] == "rq-dino"
    assert meta["training"]["epochs_run"] == 2 and "history" in meta["training"]
    assert not (tmp_path / "q" / "resume.pt").exists()
    rows, codes = model.encode_catalogue(load_catalogue(images_data / "items.jsonl"), CPU)
    assert rows.dtype == codes.dtype == np.int64 and codes.shape == (12, 2)
    assert rows.tolist() == list(range(12))  # the 13th item has no image
    from mscg.artifacts.codes import code_statistics

    assert code_statistics(codes, [4, 4]) == {k: v for k, v in result.stats.items()
                                              if k not in ("skipped_unreadable", "before_refit")}


def test_codebooks_are_refitted_on_the_final_teacher_latents(tmp_path: Path, images_data: Path):
    from mscg.commands.quantize_dino import centre_pass, decode_images
    from mscg.models.quantizers import load_quantizer
    from mscg.models.residual_quantizer import ResidualQuantizer

    refitted = run(tmp_path, "refit", images_data)
    plain = run(tmp_path, "plain", images_data, options={**TINY_RUN, "refit_codebooks": False})
    assert "before_refit" in refitted.stats and "before_refit" not in plain.stats
    # Same training either way (the refit comes after it): the unrefitted run's codes are the "before" figures.
    assert refitted.stats["before_refit"]["collision_rate"] == plain.stats["collision_rate"]
    model, _, _ = load_quantizer(tmp_path / "refit")
    for t, s in zip(model.teacher.rq.codebooks, model.student.rq.codebooks):
        assert torch.equal(t, s)
    _, images, _ = decode_images(load_catalogue(images_data / "items.jsonl"), model.config.cache_size,
                                 skip_bad_images=False)
    z = centre_pass(model, images, CPU, what="teacher")
    expected = ResidualQuantizer(dim=z.shape[1], codebook_sizes=[4, 4], commitment=0.25)
    expected.init_kmeans(z, seed=0)
    for got, want in zip(model.teacher.rq.codebooks, expected.codebooks):
        assert torch.allclose(got, want, atol=1e-5)


def test_same_seed_same_quantizer(tmp_path: Path, images_data: Path):
    run(tmp_path, "a", images_data)
    run(tmp_path, "b", images_data)
    run(tmp_path, "c", images_data, seed=1)
    a, b, c = (load_file(str(tmp_path / n / "model.safetensors")) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_exactly(tmp_path: Path, images_data: Path, monkeypatch):
    import mscg.training.render as render_module

    run(tmp_path, "whole", images_data)
    real_render = render_module.render

    def interrupted(events, *args, **kwargs):  # Ctrl-C early in epoch 2, after the epoch-1 checkpoint
        epochs_done = 0
        for event in events:
            epochs_done += event.kind == "epoch"
            if epochs_done and event.kind == "step":
                raise KeyboardInterrupt

    monkeypatch.setattr(render_module, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut", images_data)
    assert (tmp_path / ".cut.partial" / "resume.pt").exists()
    monkeypatch.setattr(render_module, "render", real_render)
    run(tmp_path, "cut", images_data, resume=True)
    whole, cut = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


def test_bad_images_stop_quantize_unless_skipped(tmp_path: Path):
    data = image_catalogue(tmp_path, 6, extra=bad_files(tmp_path / "data"))
    with pytest.raises(DataError, match="'missing'.*--skip-bad-images"):
        run(tmp_path, "q", data)
    result = run(tmp_path, "q", data, options={**TINY_RUN, "skip_bad_images": True})
    assert result.items == 6 and result.stats["skipped_unreadable"] == 3
    from mscg.models.quantizers import load_quantizer

    model, _, _ = load_quantizer(tmp_path / "q")
    catalogue = load_catalogue(data / "items.jsonl")
    with pytest.raises(DataError, match="--skip-bad-images"):
        model.encode_catalogue(catalogue, CPU)
    rows, codes = model.encode_catalogue(catalogue, CPU, skip_bad_images=True)
    assert rows.tolist() == list(range(6)) and codes.shape == (6, 2)


def test_unknown_options_and_bad_backbones_are_usage_errors(tmp_path: Path, images_data: Path):
    with pytest.raises(UsageError, match="does not take"):
        run(tmp_path, "q", images_data, options={"colour": "blue"})
    with pytest.raises(UsageError, match="--backbone"):
        run(tmp_path, "q", images_data, options={"backbone": "resnet"})


def test_efficientnet_quantizer_loads_without_the_pretrained_weights(tmp_path: Path):
    """RQDINO(config) rebuilds exactly the saved module (trunk, student, teacher) from config.json alone."""
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.models.quantizers import load_quantizer

    model = tiny_model(backbone="efficientnet-lite0", train_blocks=1)
    model.load_pretrained_backbone()
    (tmp_path / "q").mkdir()
    save_model_dir(tmp_path / "q", "quantizer", model, model.config.to_json(), modality="image", method="rq-dino")
    loaded, _, _ = load_quantizer(tmp_path / "q")
    views = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.encode(views), model.eval().encode(views))
    assert torch.allclose(loaded.teacher_latents(views), model.teacher_latents(views))


def test_cli_quantize_then_assign_codes(tmp_path: Path, images_data: Path):
    from mscg.artifacts.codes import load_codes
    from mscg.cli import app

    runner = CliRunner()
    q = tmp_path / "q_image"
    result = runner.invoke(app, ["quantize", "--modality", "image", "--method", "rq-dino", "-d", str(images_data),
                                 "-o", str(q), "--backbone", "vit-small", "--image-size", "32", "--epochs", "1",
                                 "--batch-size", "6", "--n-levels", "2", "--codebook-size", "4"])
    assert result.exit_code == 0, result.output
    assert "rq-dino on 12 image items" in result.output
    result = runner.invoke(app, ["assign-codes", "-d", str(images_data), "-q", str(q), "-o", str(tmp_path / "codes")])
    assert result.exit_code == 0, result.output
    codes = load_codes(tmp_path / "codes")
    assert codes.vocab.modalities == ["image"] and codes.codes.shape[1] == 3  # 2 levels + collision level
    assert codes.codes[-1].tolist() == [-1, -1, -1]  # the item without an image
