"""RQ-DINO, the model: loss, EMA teacher, centring, dead codes, codes from the teacher (tiny synthetic images)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from mscg.encoders.augment import MultiCrop
from mscg.encoders.image import efficientnet_lite0
from mscg.models.rq_dino import RQDINO, RQDINOConfig
from tests.helpers import uint8_images

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
    if backbone == "efficientnet-lite0":
        model.load_pretrained_backbone(efficientnet_lite0(pretrained=True))
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
