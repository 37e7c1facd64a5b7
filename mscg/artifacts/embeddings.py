"""Embeddings artifact: one vector per item that has the modality.

    DIR/embeddings.safetensors   {"embeddings": float32 (N, D)}
    DIR/meta.json                {"kind": "embeddings", "modality", "dim", "item_ids": [N ids, row order], ...}

Items without the modality (e.g. no image) are simply absent from `item_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mscg.artifacts.meta import MODALITIES, new_meta, read_meta, write_json
from mscg.errors import DataError

TENSORS_FILE = "embeddings.safetensors"


@dataclass
class Embeddings:
    modality: str
    item_ids: list[str]
    vectors: torch.Tensor  # (N, D) float32
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def row_of(self) -> dict[str, int]:
        return {item_id: row for row, item_id in enumerate(self.item_ids)}


def save_embeddings(out_dir: Path, emb: Embeddings, *, source: dict[str, Any], provenance: dict[str, Any]) -> None:
    vectors = emb.vectors.detach().to(torch.float32).contiguous().cpu()
    assert vectors.ndim == 2 and vectors.shape[0] == len(emb.item_ids)
    if not bool(torch.isfinite(vectors).all()):  # never an output that every later stage would refuse
        raise DataError(f"the {emb.modality} embeddings hold NaN or infinite values, so they were not written; "
                        "check the model or features they came from (a run that diverged: a lower --lr)")
    save_file({"embeddings": vectors}, str(Path(out_dir) / TENSORS_FILE))
    meta = new_meta(
        "embeddings", modality=emb.modality, dim=int(vectors.shape[1]), count=len(emb.item_ids),
        source=source, provenance=provenance, item_ids=list(emb.item_ids),
    )
    write_json(Path(out_dir) / "meta.json", meta)


def load_embeddings(path: Path, flag: str = "--embeddings") -> Embeddings:
    path = Path(path)
    meta = read_meta(path, "embeddings", flag)
    item_ids = meta.get("item_ids")
    modality = meta.get("modality")
    if not isinstance(item_ids, list) or not all(isinstance(i, str) for i in item_ids):
        raise DataError(f"{path}/meta.json: item_ids must be a list of strings; re-create the artifact")
    if modality not in MODALITIES:
        raise DataError(f"{path}/meta.json: modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    try:
        vectors = load_file(str(path / TENSORS_FILE))["embeddings"]
    except FileNotFoundError:
        raise DataError(f"{path}/{TENSORS_FILE} is missing; re-create the artifact") from None
    except (SafetensorError, KeyError, OSError) as e:
        raise DataError(f"{path}/{TENSORS_FILE} is not a valid embeddings file ({e}); re-create the artifact") from None
    if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
        raise DataError(
            f"{path}: embeddings have shape {tuple(vectors.shape)} but meta.json lists {len(item_ids)} item ids; "
            "re-create the artifact"
        )
    if len(set(item_ids)) != len(item_ids):
        seen: set[str] = set()
        twice = next(i for i in item_ids if i in seen or seen.add(i))
        raise DataError(f"{path}/meta.json lists item id {twice!r} twice; re-create the artifact")
    vectors = vectors.to(torch.float32)
    finite = torch.isfinite(vectors).all(dim=1)
    if not bool(finite.all()):
        bad = item_ids[int((~finite).nonzero()[0, 0])]
        raise DataError(
            f"{path}: the embedding of item {bad!r} has NaN or infinite values "
            f"({int((~finite).sum())} rows in all); fix the source features and re-create the artifact"
        )
    return Embeddings(modality=modality, item_ids=item_ids, vectors=vectors, meta=meta, path=path)
