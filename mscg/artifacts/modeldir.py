"""Model and quantizer directories: `config.json` (names `model_type`) + `model.safetensors` + `meta.json`.

The config is read and checked before any weight is loaded; `model_type` picks the class. A generator's
directory also holds a copy of the codes it was trained with (`codes/`, named relatively in meta.json), so
that the directory alone is enough to recommend, wherever it is copied or moved. A trained model also holds
`training_log.csv` (its training records, as in meta.json's `training`; see mscg.artifacts.training_log), and
every model directory (not a quantizer's) `README.md`, its model card (mscg.artifacts.modelcard), which no reader
opens.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from mscg.artifacts.meta import input_record, new_meta, read_json, read_meta, write_json
from mscg.artifacts.modelcard import write_model_card
from mscg.artifacts.training_log import write_training_log
from mscg.errors import DataError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CODES_DIR = "codes"  # a generator directory's own copy of its codes
ITEM_KEYS_FILE = "item_keys.safetensors"  # a generator's dense-head item keys (N, C), when it has the head


def copy_codes_into(out_dir: Path, codes_path: Path, sha256: str | None = None) -> str:
    """Copy a codes artifact into OUT_DIR/codes (the files its digest covers: every visible file) and return
    the path for meta.json, relative to OUT_DIR. With `sha256` (the digest read before training) the copy must
    have it: codes changed during training are refused rather than copied."""
    codes_path = Path(codes_path)
    dest = Path(out_dir) / CODES_DIR
    dest.mkdir()
    for child in sorted(codes_path.iterdir()):
        if child.is_file() and not child.name.startswith("."):
            shutil.copyfile(child, dest / child.name)
    if sha256 is not None and input_record(dest)["sha256"] != sha256:
        raise DataError(f"{codes_path} changed while the model trained (its SHA-256 differs from the one read at "
                        "the start); train again on codes that stay put")
    return CODES_DIR


def save_model_dir(out_dir: Path, kind: str, model: torch.nn.Module, config: dict[str, Any], **meta: Any) -> None:
    """OUT_DIR (the partial directory of an atomic output): model.safetensors, config.json, meta.json, the
    training records and, for a model (`kind` "model", not "quantizer"), its model card README.md."""
    out_dir = Path(out_dir)
    assert "model_type" in config
    save_weights(model, out_dir / WEIGHTS_FILE)
    write_json(out_dir / CONFIG_FILE, config)
    write_json(out_dir / "meta.json", new_meta(kind, model_type=config["model_type"], **meta))
    write_training_log(out_dir, meta.get("training"))  # training_log.csv, when the training left records
    if kind == "model":  # a quantizer gets none: its folder's digest, recorded by every codes artifact, stays as it was
        write_model_card(out_dir)  # README.md, from the config.json and meta.json just written


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """model.safetensors, byte-identical for identical weights.

    NOTE: safetensors drops the aliases of tied weights and names them in the header metadata, whose
    order changes from process to process; such files are rewritten without those names (loading
    does not need them), so that same inputs and seed give the same bytes.
    """
    bad = non_finite(model)
    if bad is not None:  # never an output that every later stage would refuse
        raise DataError(f"the weight {bad} holds NaN or infinite values, so the model was not written; train "
                        "again with a lower --lr")
    save_model(model, str(path), metadata={"format": "pt"})
    tensors = load_file(str(path))
    if len(tensors) < len(model.state_dict()):
        save_file(tensors, str(path), metadata={"format": "pt"})


def read_model_dir(path: Path, kind: str, flag: str,
                   model_types: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
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
    except (SafetensorError, OSError) as e:
        raise DataError(f"{path}/{WEIGHTS_FILE} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                        "re-create the directory") from None
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        reason = next((line for line in lines if "mismatch" in line), lines[0])  # "size mismatch for ...", if any
        raise DataError(f"{path}/{WEIGHTS_FILE} does not match {path}/{CONFIG_FILE} ({reason}); "
                        "re-create the directory") from None
    if missing or unexpected:
        raise DataError(f"{path}/{WEIGHTS_FILE} does not match its config (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}); re-create the directory")
    bad = non_finite(model)
    if bad is not None:
        raise DataError(f"{path}/{WEIGHTS_FILE}: {bad} holds NaN or infinite values, so every score would be "
                        "meaningless; re-create the directory (a run that diverged: train again with a lower --lr)")
    return model


def non_finite(model: torch.nn.Module) -> str | None:
    """The name of the first weight (parameter or buffer) of `model` with a NaN or infinite value, or None."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def save_item_keys(out_dir: Path, keys: torch.Tensor) -> None:
    save_file({"keys": keys.detach().float().contiguous().cpu()}, str(Path(out_dir) / ITEM_KEYS_FILE))


def load_item_keys(path: Path, n_items: int, dim: int) -> torch.Tensor:
    """A generator directory's (n_items, dim) dense-head item keys, checked."""
    file = Path(path) / ITEM_KEYS_FILE
    try:
        keys = load_file(str(file)).get("keys")
    except FileNotFoundError:
        raise DataError(f"{file} is missing (the model has a dense head); copy the whole directory, or re-create "
                        "it with `mscg train --dense-content`") from None
    except (SafetensorError, OSError) as e:
        raise DataError(f"{file} is not a readable safetensors file ({str(e).splitlines()[0]}); re-create the "
                        "directory") from None
    if keys is None or tuple(keys.shape) != (n_items, dim) or not bool(torch.isfinite(keys).all()):
        raise DataError(f"{file} does not hold finite keys of shape ({n_items}, {dim}) for the model's items; "
                        "re-create the directory with `mscg train --dense-content`")
    return keys.float()
