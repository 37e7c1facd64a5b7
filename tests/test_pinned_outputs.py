"""Pinned outputs: a tiny pipeline through every trained stage gives the codes and metrics it gave
before the code was reorganised (issue "One shape for every stage": moving code must change no result).

The digests and metrics below were recorded with the layout of 0.1.0 (commit 825c3bf) on the project's
2-core CPU machine. A change that moves a digest changed a result: say so, and re-pin only on purpose.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import build_tiny_pipeline, image_catalogue, ok, one_thread  # noqa: F401 (one_thread: a fixture)

TINY_DINO = ["--modality", "image", "--method", "rq-dino", "--image-size", "32", "--epochs", "2", "--batch-size",
             "4", "--n-levels", "2", "--codebook-size", "4", "--device", "cpu"]

# `mscg train`'s regime when the generator's metrics were pinned (its defaults changed since, on purpose)
PINNED_GENERATOR_REGIME = ("--samples", "prefix", "--dropout", "0.1", "--weight-decay", "0.01", "--warmup-steps", "1",
                           "--patience", "5", "--validate-every", "1")

PINNED = {
    "codes": "d59e167af83c425193d08de3fc4ff735f32e3c72148f6394ca45ff9b6147ba18",
    "codes_dino_effnet": "246ea910ac7fb6e5bd3373e1c8f0dee291a24bfab378538bf62698ec10ece52e",
    "codes_dino_vit": "9b29e369099d976d00134525676ad8ff6442b02c703e7d4114e4d16245b4129f",
    "codes_sasrec_rqvae": "47d03e0af8f63f4c867402b87dbfd4096c781eb53852fbfc7f1786ba89bdb043",
    "generator": {"recall@5": 0.1, "ndcg@5": 0.059854, "recall@10": 0.25, "ndcg@10": 0.107087},
    "sasrec": {"recall@5": 0.083333, "ndcg@5": 0.041104, "recall@10": 0.216667, "ndcg@10": 0.081663},
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metrics(path: Path) -> dict[str, float]:
    return {k: v for k, v in json.loads(path.read_text()).items() if k.startswith(("recall@", "ndcg@"))}


def pinned_run(root: Path) -> dict:
    """Every trained stage once, through the CLI: rq-kmeans, rq-vae, SASRec, the generator, rq-dino (both
    backbones), assign-codes and evaluate. Returns the codes' digests and the metrics."""
    pipe = build_tiny_pipeline(root, generator_args=PINNED_GENERATOR_REGIME)
    work = pipe.work
    ok("quantize", "--modality", "collab", "--embeddings", work / "emb_sasrec", "-o", work / "q_sasrec",
       "--n-levels", "2", "--device", "cpu")
    ok("quantize", "--modality", "text", "--method", "rq-vae", "--embeddings", work / "emb_text", "-o",
       work / "q_text_vae", "--n-levels", "2", "--codebook-size", "4", "--epochs", "2", "--device", "cpu")
    ok("assign-codes", "-d", pipe.data, "-q", work / "q_text_vae", "-q", work / "q_sasrec", "-o",
       work / "codes_sasrec_rqvae", "--device", "cpu")
    images = image_catalogue(root / "images", 12)
    out = {}
    for backbone, name in (("efficientnet-lite0", "dino_effnet"), ("vit-small", "dino_vit")):
        ok("quantize", *TINY_DINO, "-d", images, "--backbone", backbone, "-o", work / f"q_{name}")
        ok("assign-codes", "-d", images, "-q", work / f"q_{name}", "-o", work / f"codes_{name}", "--device", "cpu")
        out[f"codes_{name}"] = digest(work / f"codes_{name}" / "codes.safetensors")
    for model in ("generator", "sasrec"):
        ok("evaluate", work / model, "-d", pipe.data, "-o", work / f"{model}.json", "--device", "cpu")
        out[model] = metrics(work / f"{model}.json")
    out["codes"] = digest(work / "codes" / "codes.safetensors")
    out["codes_sasrec_rqvae"] = digest(work / "codes_sasrec_rqvae" / "codes.safetensors")
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    return pinned_run(tmp_path_factory.mktemp("pinned"))


@pytest.mark.parametrize("name", sorted(PINNED))
def test_outputs_are_the_pinned_ones(run, name):
    assert run[name] == PINNED[name]
