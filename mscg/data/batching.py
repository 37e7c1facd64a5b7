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


def excluded_items(histories: Sequence[np.ndarray], n_items: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n_items) bool: the items a ranking that leaves the history out must not return, each history's own,
    less `keep[row]` (an evaluation target stays rankable). Every recommender excludes through this mask."""
    excluded = torch.zeros(len(histories), n_items, dtype=torch.bool)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if len(histories) else rows
    excluded[torch.from_numpy(rows), torch.from_numpy(items)] = True
    if keep is not None:
        excluded[torch.arange(len(histories)), keep.cpu()] = False
    return excluded
