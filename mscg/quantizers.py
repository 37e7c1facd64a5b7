"""The quantizer registry: one row per `model_type` (config, module, fit), through which `quantize` trains
and every later stage loads a quantizer directory without flags.

    rq-kmeans  residual k-means on an embeddings artifact (no training loop)
    rq-vae     TIGER's RQ-VAE on an embeddings artifact
    rq-dino    DINO self-distillation with a residual quantizer inside, on DATA's item images
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mscg.artifacts.meta import QUANTIZER_METHODS
from mscg.errors import DataError
from mscg.models.rq_dino import RQDINO, RQDINOConfig
from mscg.models.rq_kmeans import RQKMeans, RQKMeansConfig
from mscg.models.rqvae import RQVAE, RQVAEConfig
from mscg.training.rq_dino import RQDINOTraining, fit_rq_dino
from mscg.training.rq_kmeans import fit_rq_kmeans
from mscg.training.rqvae import RQVAETraining, fit_rqvae


@dataclass(frozen=True)
class QuantizerType:
    config: type  # the config dataclass (config.json)
    module: type  # the nn.Module
    fit: Callable  # mscg.training.*: yields events, returns the trained module (and more)
    reads: str  # "embeddings" (an embeddings artifact) or "images" (the item images of DATA)
    training: type | None = None  # the dataclass of its training options (None: no training loop)
    fixed: tuple[str, ...] = ("codebook_sizes", "modality", "model_type")  # config fields no option sets
    tunable: tuple[str, ...] = ()  # config fields an option sets (embedding quantizers)

    def options(self) -> set[str]:
        """The names `quantize` accepts as options of this method: training options, the `tunable` config
        fields, and for image quantizers every config field (the architecture)."""
        names = {f.name for f in fields(self.training)} if self.training is not None else set()
        names |= set(self.tunable)
        if self.reads == "images":
            names |= {f.name for f in fields(self.config) if f.name not in self.fixed}
        return names


QUANTIZERS: dict[str, QuantizerType] = {
    "rq-kmeans": QuantizerType(RQKMeansConfig, RQKMeans, fit_rq_kmeans, "embeddings",
                               tunable=("balanced_last_level",)),
    "rq-vae": QuantizerType(RQVAEConfig, RQVAE, fit_rqvae, "embeddings", RQVAETraining),
    "rq-dino": QuantizerType(RQDINOConfig, RQDINO, fit_rq_dino, "images", RQDINOTraining),
}
METHODS = tuple(QUANTIZERS)
assert METHODS == QUANTIZER_METHODS, "mscg.artifacts.meta.QUANTIZER_METHODS names the quantizers, in this order"


def build_quantizer(config: dict[str, Any], path: Path | None = None) -> torch.nn.Module:
    """The module a quantizer's config.json describes (untrained weights), every field checked first."""
    qconfig = checked_config(config, path)
    try:
        return QUANTIZERS[config["model_type"]].module(qconfig)
    except ValueError as e:
        raise DataError(f"quantizer config.json does not fit a {config.get('model_type')} quantizer ({e}); "
                        "re-create it with `mscg quantize`") from None


def checked_config(config: dict[str, Any], path: Path | None = None):
    from mscg.artifacts.configcheck import check_config

    kind = QUANTIZERS[config["model_type"]]
    return check_config(Path(path) if path is not None else Path("quantizer"), config, kind.config, "`mscg quantize`")


def load_quantizer(path: Path, flag: str = "--quantizer") -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """(module in eval mode, config, meta) of a quantizer directory; its config is checked against the tensor
    shapes in model.safetensors' header before anything is built."""
    from mscg.artifacts.configcheck import check_weights
    from mscg.artifacts.modeldir import load_weights, read_model_dir

    config, meta = read_model_dir(path, "quantizer", flag, METHODS)
    qconfig = checked_config(config, path)
    check_weights(path, lambda: QUANTIZERS[config["model_type"]].module(qconfig))
    model = build_quantizer(config, path)
    load_weights(model, path)
    return model.eval(), config, meta


@torch.no_grad()
def encode_images(model: RQDINO, catalogue, device: torch.device, *, skip_bad_images: bool = False,
                  batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An image quantizer's codes of the catalogue's images: (rows with a readable image (n,), their codes
    (n, L)), both int64, in catalogue order."""
    from mscg.encoders.augment import centre_view
    from mscg.encoders.image import CatalogueImages, resize_short, to_uint8_tensor

    model.to(device=device, memory_format=torch.channels_last)
    images = CatalogueImages(catalogue, skip_bad_images=skip_bad_images)
    size = model.config.image_size

    def transform(img) -> torch.Tensor:
        return centre_view(to_uint8_tensor(resize_short(img, model.config.cache_size)), size)

    rows, codes = [], []
    for batch_rows, views in images.batches(transform, batch_size=batch_size, description="image codes"):
        rows.extend(batch_rows)
        codes.append(model.encode(torch.stack(views).to(device)).cpu())
    if not rows:
        raise images.none_readable("code")
    return np.asarray(rows, dtype=np.int64), torch.cat(codes).numpy().astype(np.int64)
