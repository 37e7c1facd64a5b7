"""Which torch device a command runs on: `--device auto|cpu|cuda|cuda:N`, for inference and training alike."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """`auto` picks the GPU when one is present."""
    from mscg.errors import UsageError

    if name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no GPU is visible; use --device cpu or auto")
    return device
