"""`mscg quantize` as a function: codebook sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mscg.commands.quantize import auto_codebook_size
from tests.conftest import synthetic_dataset
from tests.helpers import invoke, ok


def test_auto_codebook_size():
    assert auto_codebook_size(30) == 8
    assert auto_codebook_size(1682) == 64
    assert auto_codebook_size(400_000) == 256
    assert auto_codebook_size(1) == 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # k-means on identical points
def test_vectors_without_signal_get_a_warning(tmp_path):
    """Vectors that are all the same (a diverged collab run writes such) get one code for every item: quantize says
    so instead of passing it on in silence."""
    pipe_root = tmp_path / "p"
    data = synthetic_dataset(pipe_root)
    ids = [json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    np.save(tmp_path / "v.npy", np.ones((len(ids), 8), dtype=np.float32))
    ok("import-embeddings", "-d", data, "--vectors", tmp_path / "v.npy", "--ids", tmp_path / "ids.txt",
       "--modality", "collab", "-o", tmp_path / "emb")
    result = invoke("quantize", "--modality", "collab", "--embeddings", tmp_path / "emb", "-o", tmp_path / "q",
                    "--n-levels", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"warning: all {len(ids)} items got the same code" in result.stderr
