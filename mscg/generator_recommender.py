"""Loading a trained generator with its codes artifact, and recommending with constrained beam search."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mscg.artifacts.codes import Codes, load_codes
from mscg.artifacts.modeldir import load_weights
from mscg.data.batching import seen_items
from mscg.data.samples import HistoryTokens
from mscg.decoding.beam import beam_search
from mscg.decoding.trie import CodeTrie
from mscg.errors import DataError, UsageError
from mscg.metrics import ranks_from_lists
from mscg.models.generator import Generator, GeneratorConfig

DEFAULT_BEAM_SIZE = 20  # `mscg train --beam-size`: validation, and the default beam of evaluate and recommend


def generator_parts(codes: Codes, config: GeneratorConfig) -> tuple[HistoryTokens, torch.Tensor, CodeTrie]:
    """(history tokenizer, decode-modality codes (N, D), trie) for a model config over a codes artifact."""
    vocab = codes.vocab
    history = HistoryTokens(codes.tokens()[:, config.input_columns()], config.max_history)
    target_codes = codes.codes[:, vocab.columns_of(config.decode_modality)]
    trie = CodeTrie(target_codes, [s.size for s in vocab.slots_of(config.decode_modality)])
    return history, target_codes, trie


class GeneratorRecommender:
    kind = "mscg-generator"

    def __init__(self, model: Generator, codes: Codes, device: torch.device, beam_size: int, meta: dict | None = None):
        self.model = model.to(device).eval()
        self.item_ids = codes.item_ids
        self.device = device
        self.beam_size = beam_size  # the smallest beam searched; wider when more items are asked for
        self.meta = meta or {}
        self.history_tokens, self.target_codes, trie = generator_parts(codes, model.config)
        self.trie = trie.to(device)
        self.n_slots = codes.codes.shape[1]
        self.max_history = model.config.max_history

    @torch.no_grad()
    def search(self, histories: Sequence[np.ndarray], beam: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Trie-constrained beam search: (items (B, beam), scores (B, beam)) on the CPU, best first."""
        tokens = self.history_tokens(histories).to(self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            items, scores = beam_search(self.model, tokens, self.trie, beam)
        return items.cpu(), scores.float().cpu()

    @torch.no_grad()
    def top_k(self, histories: Sequence[np.ndarray], k: int, *, exclude_history: bool = False,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best items; with `exclude_history` the beam is widened by the history's length, so that
        k items remain once the history items (but `keep`) are dropped."""
        beam = max(self.beam_size, k)
        if not exclude_history:
            items, scores = self.search(histories, beam)
            return items[:, :k], scores[:, :k]
        seen = seen_items(histories, keep)
        beam = max(beam, min(k + max(len(s.unique()) for s in seen), len(self.item_ids)))
        items, scores = self.search(histories, beam)
        kept_items = torch.full((len(histories), k), -1, dtype=torch.long)
        kept_scores = torch.full((len(histories), k), float("-inf"))
        for row in range(len(histories)):
            wanted = (items[row] >= 0) & ~torch.isin(items[row], seen[row])
            n = min(k, int(wanted.sum()))
            kept_items[row, :n] = items[row][wanted][:n]
            kept_scores[row, :n] = scores[row][wanted][:n]
        return kept_items, kept_scores

    @torch.no_grad()
    def rank(self, histories: Sequence[np.ndarray], targets: torch.Tensor, *, k: int = 10,
             exclude_history: bool = False) -> torch.Tensor:
        """Ranks within the beam (at least `k` deep); targets outside it get beam + 1."""
        items, _ = self.top_k(histories, max(self.beam_size, k), exclude_history=exclude_history, keep=targets)
        return ranks_from_lists(items, targets)

    def memory_bytes_per_item(self) -> float:
        return float(self.n_slots)  # one byte per slot at codebooks of <= 256 codewords


def load_generator_recommender(path: Path, config: dict, meta: dict, device: torch.device, *,
                               beam_size: int | None, codes_path: Path | None) -> GeneratorRecommender:
    try:
        gconfig = GeneratorConfig.from_json(config)
    except TypeError as e:
        raise DataError(f"{path}/config.json does not fit an mscg generator ({e}); "
                        "re-create it with `mscg train`") from None
    codes_path = Path(codes_path) if codes_path is not None else Path(meta.get("codes", ""))
    codes = load_codes(codes_path, "--codes")
    if codes.vocab.to_json() != gconfig.vocabulary:
        raise DataError(f"codes {codes_path} do not match the model {path} (another vocabulary layout); pass the "
                        "--codes the model was trained with")
    if codes.item_ids != meta.get("item_ids"):
        raise DataError(f"codes {codes_path} cover other items than the model {path} was trained on; pass the "
                        "--codes the model was trained with")
    model = load_weights(Generator(gconfig), path)
    beam = beam_size if beam_size is not None else int(meta.get("beam_size", DEFAULT_BEAM_SIZE))
    if beam < 1:
        raise UsageError("--beam-size must be at least 1")
    return GeneratorRecommender(model, codes, device, beam, meta)
