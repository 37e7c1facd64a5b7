"""Turning item-index sequences into padded tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def left_pad(sequences: Sequence[np.ndarray], length: int, *, pad: int, offset: int = 0) -> torch.Tensor:
    """The last `length` entries of each sequence (+ offset), right-aligned: (B, length) int64."""
    out = np.full((len(sequences), length), pad, dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = np.asarray(seq[-length:], dtype=np.int64) if length > 0 else np.zeros(0, dtype=np.int64)
        if len(tail):
            out[row, length - len(tail):] = tail + offset
    return torch.from_numpy(out)


def seen_items(histories: Sequence[np.ndarray], keep: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per user, the items of the history, less `keep[row]` (an evaluation target stays rankable)."""
    out = []
    for row, history in enumerate(histories):
        items = torch.as_tensor(np.asarray(history), dtype=torch.long)
        out.append(items[items != keep[row]] if keep is not None else items)
    return out
