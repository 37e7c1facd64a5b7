"""The generator as a recommender (`mscg train`): constrained beam search over the item codes of its codes
artifact. A request for k items searches a beam of `beam_for(k)` = max(its beam size, k): the one place that
rule lives."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mscg.artifacts.codes import Codes, load_codes
from mscg.artifacts.configcheck import check_config, check_weights
from mscg.artifacts.meta import check_item_ids, verify_input
from mscg.artifacts.modeldir import load_item_keys, load_weights
from mscg.data.batching import excluded_items
from mscg.data.items import FolderPaths
from mscg.data.samples import HistoryTokens
from mscg.decoding.beam import beam_search
from mscg.decoding.trie import CodeTrie
from mscg.errors import DataError, UsageError
from mscg.metrics import ranks_from_lists
from mscg.models.generator import Generator, GeneratorConfig
from mscg.recommenders.defaults import DEFAULT_BEAM_SIZE



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
        if model.item_key_table is not None:
            model.item_key_table = model.item_key_table.to(device)

    @property
    def has_dense_head(self) -> bool:
        return self.model.item_key_table is not None

    @torch.no_grad()
    def dense_scores(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, n_items) the dense head's logits of the next item (a model trained with `--dense-content`)."""
        tokens = self.history_tokens(histories).to(self.device)
        return self.model.dense_scores(tokens).float()

    def beam_for(self, k: int) -> int:
        """The beam searched for k items: the model's beam size, widened to k (a beam holds at most its width)."""
        return max(self.beam_size, k)

    @torch.no_grad()
    def search(self, histories: Sequence[np.ndarray], beam: int,
               excluded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Trie-constrained beam search: (items (B, beam), scores (B, beam)) on the CPU, best first; never an
        item of `excluded` (B, n_items) bool."""
        tokens = self.history_tokens(histories).to(self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            items, scores = beam_search(self.model, tokens, self.trie, beam, excluded=excluded)
        return items.cpu(), scores.float().cpu()

    @torch.no_grad()
    def top_k(self, histories: Sequence[np.ndarray], k: int, *, exclude_history: bool = False,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best items; with `exclude_history` the search itself leaves out the history items (but
        `keep`): its beams go to unseen items only, so the same beam still fills k."""
        beam = self.beam_for(k)
        if not exclude_history:
            items, scores = self.search(histories, beam)
            return items[:, :k], scores[:, :k]
        excluded = excluded_items(histories, len(self.item_ids), keep)
        items, scores = self.search(histories, beam, excluded)
        kept_items = torch.full((len(histories), k), -1, dtype=torch.long)
        kept_scores = torch.full((len(histories), k), float("-inf"))
        for row in range(len(histories)):
            wanted = (items[row] >= 0) & ~excluded[row, items[row].clamp(min=0)]
            n = min(k, int(wanted.sum()))
            kept_items[row, :n] = items[row][wanted][:n]
            kept_scores[row, :n] = scores[row][wanted][:n]
        return kept_items, kept_scores

    @torch.no_grad()
    def rank(self, histories: Sequence[np.ndarray], targets: torch.Tensor, *, k: int = 10,
             exclude_history: bool = False) -> torch.Tensor:
        """Ranks within the beam (at least `k` deep); targets outside it get beam + 1."""
        items, _ = self.top_k(histories, self.beam_for(k), exclude_history=exclude_history, keep=targets)
        return ranks_from_lists(items, targets)

    def memory_bytes_per_item(self) -> float:
        return float(self.n_slots)  # one byte per slot at codebooks of <= 256 codewords


def model_codes_path(path: Path, meta: dict) -> Path:
    """The codes a generator uses by default: the copy inside its directory, which meta.json names relatively so
    that the directory can be moved. A name that leads out of the directory (absolute, `..`, a symbolic link;
    see FolderPaths) is refused: other codes are taken only from --codes."""
    recorded = meta.get("codes")
    if not isinstance(recorded, str) or not recorded:
        raise DataError(f"{path}/meta.json names no codes; pass --codes (the codes the model was trained with)")
    if why := FolderPaths(path).why_outside(recorded):
        raise DataError(f"{path}/meta.json names the codes {recorded!r}, which {why}; a model folder's codes lie "
                        "inside it: pass --codes (the codes the model was trained with), or re-create the folder "
                        "with `mscg train`")
    codes = Path(path) / recorded
    if not codes.exists():
        raise DataError(f"{codes} is missing: the model directory is incomplete; copy the whole directory, or "
                        "pass --codes (the codes the model was trained with)")
    return codes


def load_folder(path: Path, config: dict, meta: dict, device: torch.device, *, beam_size: int | None = None,
                codes_path: Path | None = None, verify: bool = True) -> GeneratorRecommender:
    """A `mscg train` folder (see recommenders.load): a generator and its codes. The config is checked before
    anything is built; the codes (by default its own, `model_codes_path`) must fit the model and, with `verify`,
    have the SHA-256 meta.json records for them."""
    gconfig = check_config(path, config, GeneratorConfig, "`mscg train`")
    item_ids = check_item_ids(path, meta)
    recorded_beam = meta.get("beam_size", DEFAULT_BEAM_SIZE)
    if isinstance(recorded_beam, bool) or not isinstance(recorded_beam, int) or not 1 <= recorded_beam <= 1 << 16:
        raise DataError(f"{path}/meta.json: beam_size must be an integer from 1 to 65536; re-create it with "
                        "`mscg train`")
    check_weights(path, lambda: Generator(gconfig))
    flag = "--codes" if codes_path is not None else "codes"
    codes_path = Path(codes_path) if codes_path is not None else model_codes_path(path, meta)
    codes = load_codes(codes_path, flag)
    if codes.vocab.to_json() != gconfig.vocabulary:
        raise DataError(f"codes {codes_path} do not match the model {path} (another vocabulary layout); pass the "
                        "--codes the model was trained with")
    if codes.item_ids != item_ids:
        raise DataError(f"codes {codes_path} cover other items than the model {path} was trained on; pass the "
                        "--codes the model was trained with")
    if verify:
        verify_input(codes_path, meta, "codes", path)
    model = load_weights(Generator(gconfig), path)
    if gconfig.dense_content_dim:
        model.item_key_table = load_item_keys(path, len(item_ids), gconfig.d_model)
    beam = beam_size if beam_size is not None else recorded_beam
    if beam < 1:
        raise UsageError("--beam-size must be at least 1")
    return GeneratorRecommender(model, codes, device, beam, meta)
