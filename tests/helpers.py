"""Helpers shared by the CLI tests: tiny model flags, `invoke`/`ok`, a tiny pipeline, and `assert_refused`.

`one_thread` is a module-scoped autouse fixture: a test module that imports it runs on one torch thread.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mscg.artifacts.atomic import partial_path
from mscg.cli import app
from mscg.encoders.image import to_uint8_tensor
from tests.conftest import synthetic_dataset

runner = CliRunner()

TINY_SASREC = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--epochs", "1", "--max-history", "10",
               "--device", "cpu"]
TINY_GENERATOR = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--epochs", "1",
                  "--batch-size", "64", "--max-history", "5", "--valid-users", "10", "--beam-size", "10",
                  "--device", "cpu"]


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def ok(*args) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result.output


@dataclass
class Pipeline:
    data: Path
    work: Path

    def __getattr__(self, name: str) -> Path:  # pipe.codes -> work/codes
        return self.work / name


def structured_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Vectors in four clusters (the synthetic genres), so that k-means codes mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim))
    return (centres[np.arange(n) % 4] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def build_tiny_pipeline(root: Path, *, generator: bool = True, sasrec: bool = True,
                        generator_args: tuple[str, ...] = ()) -> Pipeline:
    """A cheap pipeline: imported text/collab vectors -> rq-kmeans -> codes (-> generator, SASRec), ~1 epoch.
    `generator_args`: flags added to the generator's `train`."""
    data = synthetic_dataset(root)
    work = root / "work"
    work.mkdir()
    ids = [json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()]
    (work / "ids.txt").write_text("\n".join(ids) + "\n")
    for seed, modality in enumerate(("text", "collab")):
        np.save(work / f"{modality}.npy", structured_vectors(len(ids), 8, seed))
        ok("import-embeddings", "-d", data, "--vectors", work / f"{modality}.npy", "--ids", work / "ids.txt",
           "--modality", modality, "-o", work / f"emb_{modality}")
        ok("quantize", "--modality", modality, "--embeddings", work / f"emb_{modality}", "-o", work / f"q_{modality}",
           "--n-levels", "2", "--device", "cpu")
    ok("assign-codes", "-d", data, "-q", work / "q_text", "-q", work / "q_collab", "-o", work / "codes",
       "--device", "cpu")
    if generator:
        ok("train", "-d", data, "--codes", work / "codes", "-o", work / "generator", *TINY_GENERATOR,
           *generator_args)
    if sasrec:
        ok("collab", "-d", data, "-o", work / "emb_sasrec", "--model-out", work / "sasrec", *TINY_SASREC)
    return Pipeline(data, work)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest (and least disturbed by other jobs) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_refused(result, code: int, *needles: str, output: Path | None = None) -> str:
    """Exit `code`, exactly one `error:` line (the last on stderr) holding every needle, no traceback,
    and nothing at `output` (nor its partial sibling)."""
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    if output is not None:
        assert not output.exists(), f"{output} was left behind"
        assert not partial_path(output).exists(), f"{partial_path(output)} was left behind"
    return errors[0]


def set_line(path: Path, line_no: int, text: str | bytes) -> Path:
    """Replace line `line_no` (1-based) of a JSONL file."""
    lines = path.read_bytes().splitlines()
    lines[line_no - 1] = text.encode() if isinstance(text, str) else text
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


class Evil:
    """A pickle that, when loaded, creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- images ---------------------------------------------------------------------------------------

def pattern_image(kind: int, *, size: tuple[int, int] = (40, 56), seed: int = 0) -> Image.Image:
    """A small RGB image of one of 4 kinds (stripes, columns, checks, blobs) with seeded noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = [np.sin(yy / 3.0), np.sin(xx / 3.0), np.sign(np.sin(xx / 4.0) * np.sin(yy / 4.0)),
            np.exp(-((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (0.1 * w * h))][kind % 4]
    colour = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0], [1.0, 1.0, 0.2]])[kind % 4]
    pixels = (0.5 + 0.4 * base)[..., None] * colour + 0.05 * rng.standard_normal((h, w, 3))
    return Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8), "RGB")


def image_catalogue(root: Path, n: int = 8, *, extra: list[dict] | None = None, without_image: int = 1) -> Path:
    """DATA/items.jsonl with `n` small JPEG/PNG images (relative paths), items without an image, and `extra`."""
    data = root / "data"
    (data / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for k in range(n):
        name = f"img/{k}.{'png' if k % 3 == 0 else 'jpg'}"
        pattern_image(k, seed=k).save(data / name)
        records.append({"item_id": f"i{k}", "text": f"item {k}", "image": name})
    for k in range(without_image):
        records.append({"item_id": f"noimg{k}", "text": "no picture"})
    records.extend(extra or [])
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (data / "interactions.jsonl").write_text("", encoding="utf-8")
    return data


def bad_files(data: Path) -> list[dict]:
    """A missing, a zero-byte and a corrupt (truncated JPEG) image, as items.jsonl records."""
    (data / "img").mkdir(parents=True, exist_ok=True)
    (data / "img" / "empty.jpg").write_bytes(b"")
    good = data / "img" / "whole.jpg"
    pattern_image(1, size=(64, 64)).save(good, quality=95)
    (data / "img" / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    return [{"item_id": "missing", "image": "img/nope.jpg"}, {"item_id": "empty", "image": "img/empty.jpg"},
            {"item_id": "corrupt", "image": "img/truncated.jpg"}]


def uint8_images(n: int = 3) -> list[torch.Tensor]:
    return [to_uint8_tensor(pattern_image(k, size=(40 + 7 * k, 56), seed=k)) for k in range(n)]


class CaseContext:
    """What a bad-input case sees: `tmp`, the fixtures by name (`pipe`, `data`, ...), requested on first use,
    and whatever its setup stores; `fill` puts them into a command template."""

    def __init__(self, request, tmp: Path):
        self._request, self.tmp = request, tmp

    def __getattr__(self, name: str):  # called only for names not yet set: a fixture
        if name.startswith("_"):
            raise AttributeError(name)
        value = self._request.getfixturevalue(name)
        setattr(self, name, value)
        return value

    def __getitem__(self, name: str):  # for str.format_map
        return getattr(self, name)

    def fill(self, template: str) -> str:
        """'{pipe.codes}/meta.json' -> '/tmp/.../work/codes/meta.json'"""
        return template.format_map(self)
