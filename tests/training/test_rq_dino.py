"""Training RQ-DINO (`fit_rq_dino`, `quantize --method rq-dino`): artifacts, refit, seeds, resume, bad images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mscg.data.items import load_catalogue
from mscg.encoders.image import efficientnet_lite0
from mscg.errors import DataError, UsageError
from mscg.quantizers import encode_images
from tests.helpers import bad_files, image_catalogue
from tests.models.test_rq_dino import CPU, TINY_RUN, tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(tmp_path: Path, name: str, data: Path, **kwargs):
    from mscg.commands.quantize import quantize

    kwargs.setdefault("options", dict(TINY_RUN))
    return quantize(tmp_path / name, modality="image", method="rq-dino", data=data, n_levels=2, codebook_size="4",
                    seed=kwargs.pop("seed", 0), device="cpu", **kwargs)


@pytest.fixture(scope="module")
def images_data(tmp_path_factory) -> Path:
    return image_catalogue(tmp_path_factory.mktemp("img"), 12)


def test_quantize_writes_a_directory_that_assign_codes_can_load(tmp_path: Path, images_data: Path):
    from mscg.quantizers import load_quantizer

    result = run(tmp_path, "q", images_data)
    assert result.method == "rq-dino" and result.modality == "image" and result.items == 12
    assert result.codebook_sizes == [4, 4] and len(result.stats["codebook_usage"]) == 2
    model, config, meta = load_quantizer(tmp_path / "q")
    assert config["model_type"] == "rq-dino" and meta["modality"] == "image" and meta["method"] == "rq-dino"
    assert meta["training"]["epochs_run"] == 2 and "history" in meta["training"]
    assert not (tmp_path / "q" / "resume.pt").exists()
    rows, codes = encode_images(model, load_catalogue(images_data / "items.jsonl"), CPU)
    assert rows.dtype == codes.dtype == np.int64 and codes.shape == (12, 2)
    assert rows.tolist() == list(range(12))  # the 13th item has no image
    from mscg.artifacts.codes import code_statistics

    assert code_statistics(codes, [4, 4]) == {k: v for k, v in result.stats.items()
                                              if k not in ("skipped_unreadable", "before_refit")}


def test_codebooks_are_refitted_on_the_final_teacher_latents(tmp_path: Path, images_data: Path):
    from mscg.console import render
    from mscg.encoders.image import decode_images
    from mscg.models.residual_quantizer import ResidualQuantizer
    from mscg.quantizers import load_quantizer
    from mscg.training.rq_dino import centre_pass

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
    z = render(centre_pass(model, images, CPU, what="teacher"), "test", quiet=True)
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
    import mscg.commands.quantize as render_module

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
    from mscg.quantizers import load_quantizer

    model, _, _ = load_quantizer(tmp_path / "q")
    catalogue = load_catalogue(data / "items.jsonl")
    with pytest.raises(DataError, match="--skip-bad-images"):
        encode_images(model, catalogue, CPU)
    rows, codes = encode_images(model, catalogue, CPU, skip_bad_images=True)
    assert rows.tolist() == list(range(6)) and codes.shape == (6, 2)


def test_unknown_options_and_bad_backbones_are_usage_errors(tmp_path: Path, images_data: Path):
    with pytest.raises(UsageError, match="--colour does not apply to --method rq-dino"):
        run(tmp_path, "q", images_data, options={"colour": "blue"})
    with pytest.raises(UsageError, match="--backbone"):
        run(tmp_path, "q", images_data, options={"backbone": "resnet"})


def test_efficientnet_quantizer_loads_without_the_pretrained_weights(tmp_path: Path):
    """RQDINO(config) rebuilds exactly the saved module (trunk, student, teacher) from config.json alone."""
    from mscg.artifacts.modeldir import save_model_dir
    from mscg.quantizers import load_quantizer

    model = tiny_model(backbone="efficientnet-lite0", train_blocks=1)
    model.load_pretrained_backbone(efficientnet_lite0(pretrained=True))
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
