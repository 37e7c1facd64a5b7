"""Codes artifact: every catalogue item's multimodal code and the token vocabulary they live in.

    DIR/codes.safetensors  {"codes": int64 (N, S)}  local code of each slot (0..size-1); -1 where the
                           item lacks that modality (it enters the generator as the modality's mask token)
    DIR/meta.json          {"kind": "codes", "item_ids", "modalities": [...], "vocabulary": {...}, ...}

A slot is one (modality, level). Each modality has `n_levels` quantizer levels plus one collision level
(suffix 0, 1, 2, ... for items sharing the same quantizer code, in catalogue order). Every slot owns a
disjoint range of token ids after the special tokens: 0 = pad, 1 = decoder start, 2.. = one mask token
per modality (in modality order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mscg.artifacts.meta import new_meta, read_meta, write_json
from mscg.errors import DataError
from mscg.models.vocabulary import BOS, PAD, Slot, Vocabulary  # noqa: F401 (part of this artifact's API)

TENSORS_FILE = "codes.safetensors"


@dataclass
class Codes:
    item_ids: list[str]
    codes: torch.Tensor  # (N, S) int64 local codes, -1 = modality missing
    vocab: Vocabulary
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def present(self, modality: str) -> torch.Tensor:
        """(N,) bool: which items have this modality."""
        return self.codes[:, self.vocab.columns_of(modality)[0]] >= 0

    def tokens(self) -> torch.Tensor:
        """(N, S) global token ids; a missing modality becomes its mask token in every slot."""
        offsets = torch.tensor([s.offset for s in self.vocab.slots], dtype=torch.long)
        masks = torch.tensor([self.vocab.mask_token(s.modality) for s in self.vocab.slots], dtype=torch.long)
        return torch.where(self.codes >= 0, self.codes + offsets, masks.expand_as(self.codes))

    def row_of(self) -> dict[str, int]:
        return {item_id: row for row, item_id in enumerate(self.item_ids)}


def collision_level(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Suffix that separates items sharing a code: the k-th item (in row order) with a code gets k.

    codes: (N, L) int. Returns (suffix (N,), collision_size = largest group, at least 1).
    """
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64), 1
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")  # groups together, row order kept inside a group
    group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    suffix = np.empty(len(codes), dtype=np.int64)
    suffix[order] = np.arange(len(codes)) - group_start[inverse[order]]
    return suffix, int(counts.max())


def code_statistics(codes: np.ndarray, codebook_sizes: list[int]) -> dict[str, Any]:
    """Codebook usage per level and how often items collide on their full quantizer code."""
    if len(codes) == 0:
        return {"items": 0}
    _, counts = np.unique(codes, axis=0, return_counts=True)
    colliding = int(counts[counts > 1].sum())
    return {
        "items": int(len(codes)),
        "unique_codes": int(len(counts)),
        "collision_rate": colliding / len(codes),
        "largest_collision_group": int(counts.max()),
        "codebook_usage": [
            len(np.unique(codes[:, level])) / size for level, size in enumerate(codebook_sizes)
        ],
    }


def save_codes(out_dir: Path, codes: Codes, *, modalities: list[dict[str, Any]], provenance: dict[str, Any]) -> None:
    save_file({"codes": codes.codes.to(torch.int64).contiguous()}, str(Path(out_dir) / TENSORS_FILE))
    meta = new_meta(
        "codes", count=len(codes.item_ids), modalities=modalities, vocabulary=codes.vocab.to_json(),
        provenance=provenance, item_ids=list(codes.item_ids),
    )
    write_json(Path(out_dir) / "meta.json", meta)


def load_codes(path: Path, flag: str = "--codes") -> Codes:
    path = Path(path)
    meta = read_meta(path, "codes", flag)
    try:
        vocab = Vocabulary.from_json(meta["vocabulary"])
        item_ids = meta["item_ids"]
        codes = load_file(str(path / TENSORS_FILE))["codes"]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DataError(f"{path}/meta.json lacks item_ids or vocabulary; re-run assign-codes") from None
    except FileNotFoundError:
        raise DataError(f"{path}/{TENSORS_FILE} is missing; re-run assign-codes") from None
    except (SafetensorError, OSError) as e:
        raise DataError(f"{path}/{TENSORS_FILE} is not a valid codes file ({e}); re-run assign-codes") from None
    if not isinstance(item_ids, list) or not all(isinstance(i, str) for i in item_ids):
        raise DataError(f"{path}/meta.json: item_ids must be a list of strings; re-run assign-codes")
    if codes.ndim != 2 or codes.shape != (len(item_ids), len(vocab.slots)):
        raise DataError(f"{path}: codes have shape {tuple(codes.shape)}, expected ({len(item_ids)}, "
                        f"{len(vocab.slots)}); re-run assign-codes")
    sizes = torch.tensor([s.size for s in vocab.slots])
    if bool(((codes >= sizes) | (codes < -1)).any()):
        raise DataError(f"{path}: some codes lie outside their slot's range; re-run assign-codes")
    return Codes(item_ids=item_ids, codes=codes.to(torch.int64), vocab=vocab, meta=meta, path=path)
