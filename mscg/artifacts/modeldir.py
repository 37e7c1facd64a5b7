"""Model and quantizer directories: `config.json` (names `model_type`) + `model.safetensors` + `meta.json`.

The config is read and checked before any weight is loaded; `model_type` picks the class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from mscg.artifacts.meta import new_meta, read_json, read_meta, write_json
from mscg.errors import DataError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_model_dir(out_dir: Path, kind: str, model: torch.nn.Module, config: dict[str, Any], **meta: Any) -> None:
    out_dir = Path(out_dir)
    assert "model_type" in config
    save_model(model, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    write_json(out_dir / CONFIG_FILE, config)
    write_json(out_dir / "meta.json", new_meta(kind, model_type=config["model_type"], **meta))


def read_model_dir(path: Path, kind: str, flag: str, model_types: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, meta) of a model/quantizer directory whose model_type is one of `model_types`."""
    path = Path(path)
    meta = read_meta(path, kind, flag)
    config = read_json(path / CONFIG_FILE, f"{path} lacks {CONFIG_FILE}; re-create it")
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in model_types:
        raise DataError(
            f"{flag} {path} holds a {model_type!r} {kind}, but this needs one of: {', '.join(model_types)}"
        )
    return config, meta


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    try:
        missing, unexpected = load_model(model, str(Path(path) / WEIGHTS_FILE), strict=False)
    except FileNotFoundError:
        raise DataError(f"{path}/{WEIGHTS_FILE} is missing; re-create the directory") from None
    except (SafetensorError, OSError, RuntimeError) as e:
        raise DataError(f"{path}/{WEIGHTS_FILE} does not match {path}/{CONFIG_FILE} ({str(e).splitlines()[0]}); "
                        "re-create the directory") from None
    if missing or unexpected:
        raise DataError(f"{path}/{WEIGHTS_FILE} does not match its config (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}); re-create the directory")
    return model
