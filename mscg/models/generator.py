"""The MSCGRec sequence model: a T5 encoder-decoder over multimodal item codes.

Encoder input: the last `max_history` items of a history, each as the tokens of its full multimodal
code (every slot of every input modality, collision levels included), flattened item by item.
Decoder output: the next item's codes in one modality (collab by default), one level per step.

Paper: Vandenhirtz et al., "Multimodal Generative Recommendation for Fusing Semantic and
Collaborative Signals", arXiv 2602.03713 (MSCGRec).

NOTE (our interpretation, README "The model"): "dual position embeddings" = token embedding + an embedding of
the item's position in the history (0 = most recent) + an embedding of the token's code slot
(modality, level); both are added to T5's shared token embedding (T5's relative attention bias stays).
NOTE: constrained sequence learning normalises the softmax at each target step over the children of
the ground-truth prefix in the decode-modality trie ("trie"), over the level's own range ("level"),
or over the whole vocabulary ("off").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mscg.models.config import JsonConfig
from mscg.models.vocabulary import BOS, PAD, Vocabulary

CONSTRAINTS = ("trie", "level", "off")
HISTORY_ENCODINGS = ("items", "tokens")


@dataclass
class GeneratorConfig(JsonConfig):
    """The generator's architecture; its defaults are `mscg train`'s. The vocabulary and the input
    modalities come from the codes artifact (`train` fills them in)."""

    vocabulary: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)  # input modalities, in vocabulary order
    decode_modality: str = "collab"
    max_history: int = 20
    d_model: int = 128
    n_layers: int = 2  # encoder layers
    n_decoder_layers: int | None = None  # None: as many as n_layers
    n_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    dual_positions: bool = True
    history_encoding: str = "items"  # "items": one encoder position per history item; "tokens": per code token
    constraint: str = "trie"  # one of CONSTRAINTS
    modality_mask_prob: float = 0.1
    model_type: str = "mscg-generator"

    def __post_init__(self) -> None:
        if self.n_decoder_layers is None:
            self.n_decoder_layers = self.n_layers

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> GeneratorConfig:
        if obj.get("extra") == {}:  # written (empty, never read) by mscg 0.1.0
            obj = {k: v for k, v in obj.items() if k != "extra"}
        return super().from_json(obj)

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary.from_json(self.vocabulary)

    def input_columns(self) -> list[int]:
        vocab = self.vocab
        return [c for m in vocab.modalities if m in self.modalities for c in vocab.columns_of(m)]

    def t5_config(self):
        """The transformers T5Config of this architecture (transformers is imported here, not at start-up)."""
        from transformers import T5Config

        return T5Config(
            vocab_size=self.vocab.size, d_model=self.d_model, d_kv=self.d_model // self.n_heads, d_ff=self.d_ff,
            num_layers=self.n_layers, num_decoder_layers=self.n_decoder_layers, num_heads=self.n_heads,
            dropout_rate=self.dropout, feed_forward_proj="relu", pad_token_id=PAD, decoder_start_token_id=BOS,
            eos_token_id=None, tie_word_embeddings=True, relative_attention_num_buckets=32,
            relative_attention_max_distance=max(128, self.max_history * len(self.input_columns())),
        )


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        from transformers import T5ForConditionalGeneration

        super().__init__()
        self.config = config
        vocab = config.vocab
        self.t5 = T5ForConditionalGeneration(config.t5_config())
        self.input_columns = config.input_columns()
        n_slots = len(self.input_columns)
        self.item_position = nn.Embedding(config.max_history, config.d_model)
        nn.init.normal_(self.item_position.weight, std=1.0)
        self.slot = None
        if config.history_encoding == "tokens":
            self.slot = nn.Embedding(n_slots, config.d_model)
            nn.init.normal_(self.slot.weight, std=1.0)

        decode_slots = vocab.slots_of(config.decode_modality)
        self.n_levels = len(decode_slots)
        self.level_sizes = [s.size for s in decode_slots]
        self.level_offsets = [s.offset for s in decode_slots]
        width = max(self.level_sizes)
        # (D, width): the vocabulary id of local code k at decode level j; `level_valid` masks the padding.
        index = torch.zeros(self.n_levels, width, dtype=torch.long)
        valid = torch.zeros(self.n_levels, width, dtype=torch.bool)
        for j, s in enumerate(decode_slots):
            index[j, : s.size] = torch.arange(s.offset, s.offset + s.size)
            valid[j, : s.size] = True
        self.register_buffer("level_token", index, persistent=False)
        self.register_buffer("level_valid", valid, persistent=False)
        self.register_buffer("slot_modality", torch.tensor(
            [config.modalities.index(vocab.slots[c].modality) for c in self.input_columns]), persistent=False)

    # ---- encoder -------------------------------------------------------------------------------
    def encode(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """history: (B, H, S) token ids, items right-aligned, PAD for missing items.

        Returns encoder states (B, T, C) and attention mask (B, T), with T = H'*S ("tokens") or H'
        ("items"), where leading all-pad item columns of the batch are dropped (H' <= H).
        """
        B, H, S = history.shape
        real_item = (history != PAD).any(dim=2)  # (B, H)
        first = int(real_item.any(dim=0).float().argmax()) if bool(real_item.any()) else H - 1
        history, real_item = history[:, first:], real_item[:, first:]  # (B, H', S), (B, H')
        Hp = history.shape[1]
        x = self.t5.shared(history)  # (B, H', S, C)
        position = self.item_position(torch.arange(Hp - 1, -1, -1, device=x.device))  # (H', C), 0 = most recent
        if self.config.history_encoding == "items":
            # NOTE: one encoder position per item: the sum of its code-token embeddings (slots own disjoint
            # token ranges, so this is a linear map of the concatenated code) + its history position.
            x = x.sum(dim=2) * S ** -0.5  # (B, H', C)
            if self.config.dual_positions:
                x = x + position[None]
            mask = real_item.long()  # (B, H')
        else:
            if self.config.dual_positions:
                x = x + position[None, :, None] + self.slot.weight[None, None]  # (B, H', S, C)
            x = x.reshape(B, Hp * S, -1)  # (B, T, C)
            mask = (history != PAD).reshape(B, Hp * S).long()
        states = self.t5.encoder(inputs_embeds=x, attention_mask=mask).last_hidden_state  # (B, T, C)
        return states, mask

    # ---- decoder -------------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, cache=None) -> torch.Tensor:
        """tokens: (N, t) decoder inputs -> (N, t, C) output states, scaled as T5 scales before lm_head."""
        out = self.t5.decoder(input_ids=tokens, encoder_hidden_states=states, encoder_attention_mask=mask,
                              cache=cache, use_cache=cache is not None)
        hidden = out.last_hidden_state
        if self.t5.config.tie_word_embeddings:
            hidden = hidden * (self.config.d_model ** -0.5)
        return hidden

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """(N, C) -> (N, size_level) logits of the local codes of one decode level."""
        start = self.level_offsets[level]
        return hidden @ self.t5.lm_head.weight[start:start + self.level_sizes[level]].T

    def level_log_probs(self, hidden: torch.Tensor, level: int, allowed: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of one level's codes, normalised as the model was trained; -inf where not allowed.

        hidden: (N, C), allowed: (N, size_level) bool -> (N, size_level).
        """
        logits = self.level_logits(hidden, level).float()
        if self.config.constraint == "trie":
            logp = logits.masked_fill(~allowed, float("-inf")).log_softmax(dim=-1)
        elif self.config.constraint == "level":
            logp = logits.log_softmax(dim=-1)
        else:
            full = (hidden @ self.t5.lm_head.weight.T).float()  # (N, V)
            logp = logits - full.logsumexp(dim=-1, keepdim=True)
        return logp.masked_fill(~allowed, float("-inf"))

    # ---- training ------------------------------------------------------------------------------
    def forward(self, history: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Loss of generating the target codes.

        history: (B, H, S) tokens; target: (B, D) local codes of the decode modality;
        allowed: (B, D, W) bool, the trie children of the ground-truth prefix at every step.
        """
        states, mask = self.encode(history)
        target_tokens = self.level_token.gather(1, target.T).T  # (B, D) vocabulary ids
        decoder_input = torch.cat([torch.full_like(target_tokens[:, :1], BOS), target_tokens[:, :-1]], dim=1)
        hidden = self.decode(decoder_input, states, mask)  # (B, D, C)
        return self.sequence_loss(hidden, target, allowed)

    def sequence_loss(self, hidden: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Mean over steps of the cross-entropy, normalised over the permitted tokens of each step."""
        weight = self.t5.lm_head.weight[self.level_token]  # (D, W, C)
        logits = torch.einsum("bjc,jwc->bjw", hidden, weight).float()  # (B, D, W)
        if self.config.constraint == "off":
            full = (hidden @ self.t5.lm_head.weight.T).float()  # (B, D, V)
            target_logit = logits.gather(2, target[..., None]).squeeze(2)  # (B, D)
            return (full.logsumexp(dim=-1) - target_logit).mean()
        permitted = self.level_valid[None].expand_as(allowed)  # (B, D, W)
        if self.config.constraint == "trie":
            permitted = permitted & allowed
        logits = logits.masked_fill(~permitted, float("-inf"))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
