"""Model and quantizer configs, checked before anything is built.

A config.json is read from disk, so it is input like any other: every field is checked for its type (an
integer is not a bool, nor a float) and a sane range (positive sizes, dropout in [0, 1), finite floats,
strings from the allowed sets), then the architecture it describes is built on PyTorch's `meta` device (no
memory) and its tensor shapes are compared with those recorded in the safetensors header (read without
the weights). Only a config that fits the file is built for real, so a model never allocates more than
its weights file holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from mscg.artifacts.meta import MODALITIES
from mscg.errors import DataError
from mscg.models import generator_config as generator_module
from mscg.models.rq_dino import BACKBONES, EFFICIENTNET_BLOCKS
from mscg.models.sasrec_config import NEGATIVE_SAMPLERS
from mscg.models.vocabulary import Vocabulary

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MAX_INT = 2**31 - 1
MAX_SIZE = 1 << 24  # widths, vocabularies, codebooks: far above any real model, far below an overflow
MAX_COUNT = 256  # layers and levels: what a constructor loops over

Rule = Callable[[Any], "str | None"]  # a value -> what is wrong with it (None: nothing)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def integer(low: int, high: int) -> Rule:
    def rule(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if not low <= value <= high:
            return f"must be between {low} and {high:,}"
        return None
    return rule


def real(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Rule:
    def rule(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
        if value < low or value > high or (open_low and value == low) or (open_high and value == high):
            return f"must be in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        return None
    return rule


def boolean(value) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def text(value) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def one_of(choices) -> Rule:
    def rule(value):
        return None if isinstance(value, str) and value in choices else f"must be one of: {', '.join(choices)}"
    return rule


def optional(inner: Rule) -> Rule:
    return lambda value: None if value is None else inner(value)


def int_list(low: int, high: int, min_len: int, max_len: int) -> Rule:
    item = integer(low, high)

    def rule(value):
        if not isinstance(value, list) or not min_len <= len(value) <= max_len:
            return f"must be a list of {min_len} to {max_len} integers"
        problem = next((p for p in map(item, value) if p), None)
        return f"must list integers between {low} and {high:,}" if problem else None
    return rule


def modality_list(value) -> str | None:
    if (not isinstance(value, list) or not value or len(set(map(str, value))) != len(value)
            or not all(isinstance(m, str) and m in MODALITIES for m in value)):
        return f"must be a non-empty list of distinct modalities ({', '.join(MODALITIES)})"
    return None


def vocabulary(value) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("slots"), list) or not value["slots"]:
        return "must be the vocabulary layout of a codes artifact"
    for slot in value["slots"]:
        if not isinstance(slot, dict) or integer(0, MAX_COUNT)(slot.get("level")) or \
                integer(1, MAX_SIZE)(slot.get("size")) or integer(0, MAX_INT)(slot.get("offset")) or \
                slot.get("modality") not in MODALITIES:
            return "holds a slot that is not {modality, level, offset, size} with sane values"
    try:
        Vocabulary.from_json(value)
    except (DataError, KeyError, TypeError, ValueError, AttributeError):
        return "is not the layout mscg derives from its slots"
    return None


POSITIVE = integer(1, MAX_SIZE)

# One rule per field name, shared by every config class that has the field.
RULES: dict[str, Rule] = {
    # sizes
    "n_items": integer(1, MAX_INT), "max_history": integer(1, 1 << 20), "d_model": integer(1, 1 << 16),
    "d_ff": POSITIVE, "n_heads": integer(1, 4096), "dim": POSITIVE, "latent_dim": POSITIVE, "hidden_dim": POSITIVE,
    "head_hidden_dim": POSITIVE, "head_bottleneck_dim": POSITIVE, "n_prototypes": POSITIVE,
    "vit_dim": integer(1, 1 << 16), "vit_heads": integer(1, 4096), "patch_size": integer(1, 4096),
    "image_size": integer(1, 8192), "local_size": integer(1, 8192),
    "codebook_sizes": int_list(1, MAX_SIZE, 1, 64), "hidden_dims": int_list(1, MAX_SIZE, 0, 64),
    # counts
    "n_layers": integer(1, MAX_COUNT), "n_decoder_layers": optional(integer(1, MAX_COUNT)),
    "vit_layers": integer(1, MAX_COUNT), "train_blocks": integer(0, EFFICIENTNET_BLOCKS), "n_local": integer(0, 64),
    # rates and weights
    "dropout": real(0, 1, open_high=True), "modality_mask_prob": real(0, 1, open_high=True),
    "commitment": real(0, 1e6), "rq_weight": real(0, 1e6), "center_momentum": real(0, 1),
    "student_temp": real(0, 100, open_low=True), "teacher_temp": real(0, 100, open_low=True),
    "cache_scale": real(0, 16, open_low=True),
    "dense_loss_weight": real(0, 1e6), "dense_temperature": real(0, 100, open_low=True),
    "dense_negatives": integer(1, MAX_INT), "dense_content_dim": integer(0, 1 << 20),
    "negatives": optional(integer(0, MAX_INT)),
    # switches and names
    "normalize": boolean, "dual_positions": boolean, "refit_codebooks": boolean, "pack": optional(boolean),
    "modality": one_of(MODALITIES), "decode_modality": one_of(MODALITIES), "backbone": one_of(BACKBONES),
    "constraint": one_of(generator_module.CONSTRAINTS), "history_encoding": one_of(generator_module.HISTORY_ENCODINGS),
    "samples": one_of(generator_module.SAMPLES), "train_trie": one_of(generator_module.TRAIN_TRIES),
    "negative_sampler": one_of(NEGATIVE_SAMPLERS), "modalities": modality_list, "vocabulary": vocabulary,
    "model_type": text,
}
# A field without a rule (added later) is still checked for the type its annotation names.
BY_ANNOTATION: dict[str, Rule] = {"int": integer(0, MAX_INT), "float": real(-1e12, 1e12), "bool": boolean,
                                  "str": text, "int | None": optional(integer(0, MAX_INT))}


def _refuse(path: Path, name: str, value: Any, problem: str, producer: str) -> DataError:
    return DataError(f"{path}/{CONFIG_FILE}: \"{name}\" {_shown(value)} {problem}; re-create it with {producer}")


def check_config(path: Path, config: Any, cls: type, producer: str):
    """The `cls` config of a config.json object, every field checked (DataError naming the field and the fix)."""
    path = Path(path)
    if not isinstance(config, dict):
        raise DataError(f"{path}/{CONFIG_FILE} is not a JSON object; re-create it with {producer}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(config) - set(known) - {"extra"})
    if unknown:
        raise DataError(f"{path}/{CONFIG_FILE} has fields this mscg does not know ({', '.join(unknown)[:80]}); "
                        f"re-create it with {producer}, or upgrade mscg")
    for name, f in known.items():
        if name not in config:
            if f.default is MISSING and f.default_factory is MISSING:
                raise DataError(f"{path}/{CONFIG_FILE} lacks \"{name}\"; re-create it with {producer}")
            continue
        rule = RULES.get(name) or BY_ANNOTATION.get(str(f.type))
        problem = rule(config[name]) if rule is not None else None
        if problem:
            raise _refuse(path, name, config[name], problem, producer)
    _check_together(path, {**{n: f.default for n, f in known.items() if f.default is not MISSING}, **config}, producer)
    try:
        return cls.from_json(dict(config))
    except (TypeError, ValueError, KeyError) as e:
        raise DataError(f"{path}/{CONFIG_FILE} does not fit {cls.__name__} ({e}); "
                        f"re-create it with {producer}") from None


def _check_together(path: Path, c: dict[str, Any], producer: str) -> None:
    """The fields that constrain each other."""
    if "n_heads" in c and "d_model" in c and c["d_model"] % c["n_heads"]:
        raise _refuse(path, "d_model", c["d_model"], f"must be divisible by n_heads ({c['n_heads']})", producer)
    if c.get("backbone") == "vit-small":
        if c["vit_dim"] % c["vit_heads"]:
            raise _refuse(path, "vit_dim", c["vit_dim"], f"must be divisible by vit_heads ({c['vit_heads']})",
                          producer)
        if c["patch_size"] > min(c["image_size"], c["local_size"]):
            raise _refuse(path, "patch_size", c["patch_size"], "must not exceed image_size and local_size", producer)
    if "vocabulary" in c and "modalities" in c:
        held = [s["modality"] for s in c["vocabulary"]["slots"]]
        for name in ("modalities", "decode_modality"):
            chosen = c[name] if isinstance(c[name], list) else [c[name]]
            if not set(chosen) <= set(held):
                raise _refuse(path, name, c[name], f"must be among the vocabulary's modalities "
                              f"({', '.join(dict.fromkeys(held))})", producer)


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from a safetensors file's header (no tensor data is read)."""
    file = Path(path) / WEIGHTS_FILE
    try:
        with safe_open(str(file), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except FileNotFoundError:
        raise DataError(f"{path}/{WEIGHTS_FILE} is missing; re-create the directory") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path}/{WEIGHTS_FILE} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                        "re-create the directory") from None


def check_weights(path: Path, build: Callable[[], torch.nn.Module]) -> None:
    """Build the architecture on the meta device (no memory) and refuse it unless its tensors have exactly the
    shapes model.safetensors records: then building it for real allocates what the file holds, no more."""
    path = Path(path)
    stored = header_shapes(path)
    try:
        with torch.device("meta"):
            model = build()
    except Exception as e:  # noqa: BLE001 - whatever the constructor objects to, the config is at fault
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}/{CONFIG_FILE} does not describe a model mscg can build ({reason[:160]}); "
                        "re-create the directory") from None
    state = model.state_dict(keep_vars=True)
    tied: dict[int, set[str]] = {}  # tied weights are stored once, under one of their names
    for name, tensor in state.items():
        tied.setdefault(id(tensor), set()).add(name)
    for name, shape in stored.items():
        if name in state and tuple(state[name].shape) != shape:
            raise DataError(f"{path}/{WEIGHTS_FILE} does not match {path}/{CONFIG_FILE} (size mismatch for {name}: "
                            f"{list(shape)} in the file, {list(state[name].shape)} by the config); "
                            "re-create the directory")
    unexpected = sorted(set(stored) - set(state))
    missing = sorted(n for n in state if n not in stored and not tied[id(state[n])] & set(stored))
    if missing or unexpected:
        raise DataError(f"{path}/{WEIGHTS_FILE} does not match its config (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); re-create the directory")
