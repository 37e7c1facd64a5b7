"""Reading precomputed feature files: .npy, .safetensors, or raw float32 with a known dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mscg.errors import DataError, UsageError


def read_vectors(path: Path, *, dim: int | None = None, key: str | None = None) -> torch.Tensor:
    """(N, D) float32 from `path`. Never unpickles (`allow_pickle=False`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--vectors {path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - a damaged header raises anything from ValueError to TokenError
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{path} is not a plain .npy array ({reason}); save it with numpy.save") from None
    elif suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise DataError(f"{path} is not a valid safetensors file ({e})") from None
        if key is None:
            if len(tensors) != 1:
                raise UsageError(f"{path} holds tensors {', '.join(sorted(tensors))}; choose one with --key")
            key = next(iter(tensors))
        if key not in tensors:
            raise UsageError(f"{path} has no tensor {key!r}; it holds {', '.join(sorted(tensors))}")
        array = tensors[key].float().numpy()
    else:
        if dim is None:
            raise UsageError(f"{path} is read as raw float32: pass --dim (the vector length)")
        if dim < 1:
            raise UsageError(f"--dim {dim} must be at least 1 (the vector length of {path})")
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size % dim:
            raise DataError(f"{path} holds {raw.size:,} float32 values, not a multiple of --dim {dim}; check --dim")
        array = raw.reshape(-1, dim)
    if array.ndim != 2:
        raise DataError(f"{path} holds an array of shape {array.shape}; expected (items, dim)")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path} holds {array.dtype} values; expected floating-point features")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def read_ids(path: Path, n_rows: int) -> list[str]:
    """Item id of each row: one id per line, or `id<TAB>row` lines (e.g. RecBole's item2index)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--ids {path} does not exist; check the path")
    try:
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"--ids {path} is not valid UTF-8 text; write one item id per line, saved as UTF-8") from None
    ids: list[str | None] = [None] * n_rows
    for position, (line_no, line) in enumerate(lines):
        parts = line.split("\t")
        if len(parts) == 1:
            row, item_id = position, parts[0].strip()
        elif len(parts) == 2 and parts[1].strip().isascii() and parts[1].strip().isdigit():
            row, item_id = int(parts[1]), parts[0].strip()
        else:
            raise DataError(f"{path} line {line_no}: expected `item_id` or `item_id<TAB>row`; fix the line")
        if not item_id:
            raise DataError(f"{path} line {line_no}: the item id is empty; give every row a non-empty id")
        if row >= n_rows:
            raise DataError(f"{path} line {line_no}: row {row} but the vectors have only {n_rows:,} rows")
        if ids[row] is not None:
            raise DataError(f"{path} line {line_no}: row {row} is given twice; give each row one id")
        ids[row] = item_id
    missing = [r for r, i in enumerate(ids) if i is None]
    if missing:
        raise DataError(f"{path} names no item for {len(missing):,} of the {n_rows:,} vector rows (e.g. row "
                        f"{missing[0]}); give one id per row")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path} gives the same item id to two rows; ids must be unique")
    return ids  # type: ignore[return-value]
