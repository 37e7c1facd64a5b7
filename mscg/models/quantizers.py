"""Quantizer registry: `config.json`'s `model_type` picks the class (rq-kmeans, rq-vae, rq-dino)."""

from __future__ import annotations

from pathlib import Path

from mscg.errors import DataError

EMBEDDING_METHODS = ("rq-kmeans", "rq-vae")
IMAGE_METHODS = ("rq-dino",)
METHODS = EMBEDDING_METHODS + IMAGE_METHODS


def build_quantizer(config: dict):
    try:
        return _build(config)
    except TypeError as e:
        raise DataError(f"quantizer config.json does not fit a {config.get('model_type')} quantizer ({e}); "
                        "re-create it with `mscg quantize`") from None


def _build(config: dict):
    model_type = config["model_type"]
    if model_type == "rq-kmeans":
        from mscg.models.rq_kmeans import RQKMeans, RQKMeansConfig

        return RQKMeans(RQKMeansConfig(**config))
    if model_type == "rq-vae":
        from mscg.models.rqvae import RQVAE, RQVAEConfig

        return RQVAE(RQVAEConfig(**config))
    if model_type == "rq-dino":
        from mscg.models.rq_dino import RQDINO, RQDINOConfig

        return RQDINO(RQDINOConfig.from_json(config))
    raise AssertionError(model_type)


def load_quantizer(path: Path, flag: str = "--quantizer"):
    """(module in eval mode, config, meta) of a quantizer directory."""
    from mscg.artifacts.modeldir import load_weights, read_model_dir

    config, meta = read_model_dir(path, "quantizer", flag, METHODS)
    model = build_quantizer(config)
    load_weights(model, path)
    return model.eval(), config, meta
