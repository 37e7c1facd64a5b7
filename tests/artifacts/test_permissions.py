"""Every output file gets the mode a file made by `open` gets under the umask (0644 under 022), safetensors
weights included (safetensors itself writes them 0600)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from mscg.artifacts.atomic import AtomicDir, current_umask, honour_umask, write_text_atomic
from tests.conftest import synthetic_dataset
from tests.helpers import ok, one_thread  # noqa: F401 (fixture: tiny models on one thread)


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_artifact_files_honour_the_umask(tmp_path: Path, mask: int):
    data = synthetic_dataset(tmp_path)
    ids = [json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32))
    with umask(mask):
        assert current_umask() == mask
        ok("import-embeddings", "-d", data, "--vectors", tmp_path / "v.npy", "--ids", tmp_path / "ids.txt",
           "--modality", "text", "-o", tmp_path / "emb")
        ok("quantize", "--modality", "text", "--embeddings", tmp_path / "emb", "-o", tmp_path / "q", "--n-levels",
           "2", "--device", "cpu")
    want = 0o666 & ~mask
    emb, q = modes(tmp_path / "emb"), modes(tmp_path / "q")
    assert "embeddings.safetensors" in emb and "model.safetensors" in q
    assert set(emb.values()) == {want} and set(q.values()) == {want}, (oct(want), emb, q)


def test_one_file_outputs_honour_the_umask(tmp_path: Path):
    with umask(0o002):
        write_text_atomic(tmp_path / "metrics.json", "{}")
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o664


def test_links_are_neither_followed_nor_changed(tmp_path: Path):
    outside = tmp_path / "private"
    outside.write_text("secret")
    outside.chmod(0o600)
    with umask(0o022), AtomicDir(tmp_path / "out") as tmp:
        (tmp / "weights").write_text("w")
        (tmp / "weights").chmod(0o600)
        (tmp / "link").symlink_to(outside)
    assert stat.S_IMODE((tmp_path / "out" / "weights").stat().st_mode) == 0o644
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600
    honour_umask(tmp_path / "out")  # idempotent, and a dangling link is no error
    outside.unlink()
    honour_umask(tmp_path / "out")
