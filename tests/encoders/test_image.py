"""Image reading, multi-crop augmentation and `embed --modality image` (EfficientNet-Lite0 / HF models)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mscg.data.items import load_catalogue
from mscg.encoders import augment
from mscg.encoders.image import CatalogueImages, embed_images, read_image
from mscg.errors import DataError
from tests.conftest import SHARED_DATA
from tests.helpers import bad_files, image_catalogue, pattern_image, uint8_images

os.environ.setdefault("HF_HUB_OFFLINE", "1")

POSTERS = SHARED_DATA / "ml-100k-posters" / "posters"
CPU = torch.device("cpu")


# ---- reading ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,suffix", [("L", "png"), ("P", "png"), ("L", "jpg"), ("RGBA", "png"), ("RGB", "jpg")])
def test_every_image_mode_is_read_as_rgb(tmp_path: Path, mode: str, suffix: str):
    img = pattern_image(2, size=(30, 20))
    img = img.convert(mode) if mode != "P" else img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path = tmp_path / f"x.{suffix}"
    img.save(path)
    out = read_image(path, "x")
    assert out.mode == "RGB" and out.size == (30, 20)


@pytest.mark.parametrize("item_id,reason", [("missing", "does not exist"), ("empty", "empty (0 bytes)"),
                                            ("corrupt", "cannot be read")])
def test_bad_image_names_item_path_and_fix(tmp_path: Path, item_id: str, reason: str):
    data = tmp_path / "data"
    records = [r for r in bad_files(data) if r["item_id"] == item_id]
    data = image_catalogue(tmp_path, 2, extra=records)
    catalogue = load_catalogue(data / "items.jsonl")
    with pytest.raises(DataError) as e:
        embed_images(catalogue, None, CPU, batch_size=4)
    message = str(e.value)
    assert repr(item_id) in message and str(catalogue.images[catalogue.index[item_id]]) in message
    assert reason in message and "--skip-bad-images" in message


def test_skip_bad_images_counts_and_leaves_them_out(tmp_path: Path):
    data = image_catalogue(tmp_path, 3, extra=bad_files(tmp_path / "data"))
    catalogue = load_catalogue(data / "items.jsonl")
    rows, vectors, skipped, source = embed_images(catalogue, None, CPU, batch_size=2, skip_bad_images=True)
    assert rows == [0, 1, 2]  # catalogue order; the item without an image and the 3 bad ones have no row
    assert skipped == 3 and source["skipped_unreadable"] == 3
    assert vectors.shape == (3, 1280) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    json.dumps(source)


def test_no_image_at_all_is_a_data_error(tmp_path: Path):
    data = image_catalogue(tmp_path, 0, without_image=2)
    with pytest.raises(DataError, match="no item has an \"image\" field"):
        CatalogueImages(load_catalogue(data / "items.jsonl"))


def test_all_unreadable_is_a_data_error(tmp_path: Path):
    data = image_catalogue(tmp_path, 0, extra=bad_files(tmp_path / "data"))
    with pytest.raises(DataError, match="none of the 3 referenced images"):
        embed_images(load_catalogue(data / "items.jsonl"), None, CPU, skip_bad_images=True)


def test_embed_with_a_local_hugging_face_model(tmp_path: Path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    model_dir = tmp_path / "tiny-vit"
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8)).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    data = image_catalogue(tmp_path, 5)
    rows, vectors, skipped, source = embed_images(load_catalogue(data / "items.jsonl"), model_dir, CPU, batch_size=2)
    assert rows == [0, 1, 2, 3, 4] and skipped == 0 and vectors.shape == (5, 16)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    assert source["encoder"] == str(model_dir)


def test_a_directory_without_config_is_refused(tmp_path: Path):
    data = image_catalogue(tmp_path, 1)
    with pytest.raises(DataError, match="not a Hugging Face model directory"):
        embed_images(load_catalogue(data / "items.jsonl"), tmp_path / "nothing", CPU)


def test_real_posters_embed_near_their_own_copies(tmp_path: Path):
    """A poster, its mirror image and a resized copy are each other's nearest neighbours among posters."""
    if not POSTERS.is_dir():
        pytest.skip(f"MovieLens-100K posters not found at {POSTERS} (they live in ../shared/data next to the repo)")
    data = tmp_path / "data"
    (data / "posters").mkdir(parents=True)
    ids = sorted((p.stem for p in POSTERS.glob("*.jpg")), key=int)[:12]
    for i in ids:  # images are read only inside the dataset folder
        shutil.copyfile(POSTERS / f"{i}.jpg", data / "posters" / f"{i}.jpg")
    records = [{"item_id": i, "image": f"posters/{i}.jpg"} for i in ids]
    poster = Image.open(POSTERS / f"{ids[3]}.jpg").convert("RGB")
    poster.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(data / "flipped.jpg")
    poster.resize((poster.width * 2 // 3, poster.height * 2 // 3)).save(data / "small.png")
    records += [{"item_id": "flipped", "image": "flipped.jpg"}, {"item_id": "small", "image": "small.png"}]
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    rows, vectors, _, _ = embed_images(load_catalogue(data / "items.jsonl"), None, CPU, batch_size=16)
    sims = vectors @ vectors.T
    sims.fill_diagonal_(-1)
    original, flipped, small = 3, len(ids), len(ids) + 1
    assert set(sims[original].topk(2).indices.tolist()) == {flipped, small}
    assert int(sims[flipped].argmax()) in (original, small)
    assert int(sims[small].argmax()) in (original, flipped)


# ---- augmentation ------------------------------------------------------------------------------------

def test_multi_crop_shapes_ranges_and_seed():
    crop = augment.MultiCrop(global_size=32, local_size=16, n_local=3)
    images = uint8_images()
    g1, l1 = crop(images, generator=torch.Generator().manual_seed(7))
    g2, l2 = crop(images, generator=torch.Generator().manual_seed(7))
    g3, _ = crop(images, generator=torch.Generator().manual_seed(8))
    assert g1.shape == (3, 2, 3, 32, 32) and l1.shape == (3, 3, 3, 16, 16)
    assert g1.dtype == l1.dtype == torch.float32
    assert float(g1.min()) >= 0 and float(g1.max()) <= 1 and float(l1.min()) >= 0 and float(l1.max()) <= 1
    assert torch.equal(g1, g2) and torch.equal(l1, l2)
    assert not torch.equal(g1, g3)
    assert not torch.equal(g1[:, 0], g1[:, 1])  # two different global views


def test_multi_crop_uses_the_global_rng_without_a_generator():
    crop = augment.MultiCrop(global_size=24, local_size=16, n_local=0)
    torch.manual_seed(3)
    a, la = crop(uint8_images())
    torch.manual_seed(3)
    b, _ = crop(uint8_images())
    assert torch.equal(a, b) and la.shape == (3, 0, 3, 16, 16)


OPS = {
    "hflip": lambda x, g: augment.hflip(x, 1.0, generator=g),
    "color_jitter": lambda x, g: augment.color_jitter(x, p=1.0, generator=g),
    "random_grayscale": lambda x, g: augment.random_grayscale(x, 1.0, generator=g),
    "gaussian_blur": lambda x, g: augment.gaussian_blur(x, 1.0, generator=g),
    "solarize": lambda x, g: augment.solarize(x, 1.0, generator=g),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_photometric_op_keeps_shape_and_range(op: str):
    x = torch.stack([augment.centre_view(img, 24) for img in uint8_images(4)])  # (4, 3, 24, 24)
    y = OPS[op](x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(y, x)
    assert torch.equal(y, OPS[op](x, torch.Generator().manual_seed(0)))
    if op == "hflip":
        assert torch.equal(y, x.flip(-1))
    if op == "random_grayscale":
        assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])
    if op == "gaussian_blur":  # blurring lowers the pixel-to-pixel variation
        assert y.diff(dim=-1).abs().mean() < x.diff(dim=-1).abs().mean()


def test_hue_rotation_by_a_full_turn_is_the_identity():
    x = torch.stack([augment.centre_view(img, 16) for img in uint8_images(2)])
    assert torch.allclose(augment.rotate_hue(x, torch.tensor([0.0, 1.0])), x, atol=1e-4)


def test_centre_view_is_deterministic_and_square():
    img = uint8_images(1)[0]  # (3, 56, 40)
    v = augment.centre_view(img, 32)
    assert v.shape == (3, 32, 32) and torch.equal(v, augment.centre_view(img, 32))


def test_crop_boxes_stay_inside_the_image():
    g = torch.Generator().manual_seed(0)
    for h, w in [(56, 40), (20, 200), (200, 20), (17, 17)]:
        for scale in [(0.05, 0.4), (0.4, 1.0)]:
            for _ in range(50):
                top, left, ch, cw = augment.crop_box(h, w, scale, generator=g)
                assert 0 <= top and 0 <= left and ch >= 1 and cw >= 1 and top + ch <= h and left + cw <= w
