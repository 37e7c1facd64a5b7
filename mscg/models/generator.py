"""The MSCGRec sequence model: a T5 encoder-decoder over multimodal item codes.

Encoder input: the last `max_history` items of a history, each as the tokens of its full multimodal
code (every slot of every input modality, collision levels included), flattened item by item.
Decoder output: the next item's codes in one modality (collab by default), one level per step.

Paper: Vandenhirtz et al., "Multimodal Generative Recommendation for Fusing Semantic and
Collaborative Signals", arXiv 2602.03713 (MSCGRec).

NOTE (our interpretation, README "The model"): "dual position embeddings" = token embedding + an embedding of
the item's position in the history (0 = most recent) + an embedding of the token's code slot
(modality, level); both are added to T5's shared token embedding (T5's relative attention bias stays).
NOTE: `samples="window"` (beyond the paper) trains every target of a history window in one pass: the
encoder is causal (position t sees items <= t), item positions count from the window's first item, and
the decoder generates the codes of item t+1 for every position t, cross-attending to positions <= t.
The decoder's start token is added to the encoder state of its own position (the causal summary of the
history up to t, as SASRec predicts from it): T5's cross-attention has no position bias, so without it
the decoder could not tell the most recent item from the others.
`samples="prefix"` is the paper's model: one prefix per sample, a bidirectional encoder, positions
counted back from the most recent item. Inference reads the whole history either way.
NOTE: constrained sequence learning normalises the softmax at each target step over the children of
the ground-truth prefix in the decode-modality trie ("trie"), over the level's own range ("level"),
or over the whole vocabulary ("off").
NOTE (beyond the paper, after LIGER, Yang et al. 2024, arXiv 2411.18814): with `dense_content_dim` > 0 a dense
head maps the decoder's start state (the one that predicts the first code) to a query, and every item's content
features (text/image embeddings, `train --dense-content`) through a linear map to a key; the score is their
cosine over a temperature, trained by a softmax over the catalogue (or `dense_negatives` sampled items) next to
the codes' loss. Keys depend on content only, so an item training never met is scored like any other; it is no
negative in training either (fit_generator's pool holds the items with training interactions): with more content
dimensions than items the key map could otherwise bury each such item individually.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mscg.models.generator_config import CONSTRAINTS, HISTORY_ENCODINGS, SAMPLES, GeneratorConfig
from mscg.models.t5 import T5, embedding, normal_
from mscg.models.vocabulary import BOS, PAD

__all__ = ["CONSTRAINTS", "HISTORY_ENCODINGS", "SAMPLES", "Generator", "GeneratorConfig", "first_real_column"]


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        vocab = config.vocab
        self.t5 = T5(**config.t5_kwargs())  # transformers' T5 layout and init, in plain torch (models/t5.py)
        self.input_columns = config.input_columns()
        n_slots = len(self.input_columns)
        self.item_position = embedding(config.max_history, config.d_model)
        normal_(self.item_position.weight)
        self.slot = None
        if config.history_encoding == "tokens":
            self.slot = embedding(n_slots, config.d_model)
            normal_(self.slot.weight)

        decode_slots = vocab.slots_of(config.decode_modality)
        self.n_levels = len(decode_slots)
        self.level_sizes = [s.size for s in decode_slots]
        self.level_offsets = [s.offset for s in decode_slots]
        width = max(self.level_sizes)
        # (D, width): the vocabulary id of local code k at decode level j; `level_valid` masks the padding.
        # Built from lists: on the meta device (check_weights) indexing and arange import torch's compiler.
        index = torch.tensor([[s.offset + k if k < s.size else 0 for k in range(width)] for s in decode_slots])
        valid = torch.tensor([[k < s.size for k in range(width)] for s in decode_slots])
        self.register_buffer("level_token", index, persistent=False)
        self.register_buffer("level_valid", valid, persistent=False)
        self.register_buffer("slot_modality", torch.tensor(
            [config.modalities.index(vocab.slots[c].modality) for c in self.input_columns]), persistent=False)
        self.dense_query = self.dense_key = None
        if config.dense_content_dim:
            self.dense_query = nn.Linear(config.d_model, config.d_model)
            self.dense_key = nn.Linear(config.dense_content_dim, config.d_model)
        # (N, F) content features the dense loss reads in training, set by fit_generator; (N, C) unit-norm item keys
        # scored at inference, computed once from them (`item_keys`) and kept in the model directory. Plain
        # attributes, not buffers: DDP would broadcast catalogue-sized buffers at every step.
        self.item_content: torch.Tensor | None = None
        self.item_key_table: torch.Tensor | None = None
        # (M,) the items the dense softmax runs over (fit_generator: those with training interactions); None: all
        self.dense_pool: torch.Tensor | None = None

    # ---- encoder -------------------------------------------------------------------------------
    def encode(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """history: (B, H, S) token ids, items right-aligned, PAD for missing items.

        Returns encoder states (B, T, C) and attention mask (B, T), with T = H'*S ("tokens") or H'
        ("items"), where leading all-pad item columns of the batch are dropped (H' <= H).
        """
        history = history[:, first_real_column(history):]  # (B, H', S)
        if self.config.samples == "window":
            real_item = (history != PAD).any(dim=2)  # (B, H')
            return self.causal_states(history), real_item.long()
        B, _, S = history.shape
        real_item = (history != PAD).any(dim=2)  # (B, H')
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
        T = x.shape[1]
        states = self.t5.encode(x, mask.bool()[:, None, :].expand(B, T, T))  # (B, T, C): padding keys masked
        return states, mask

    def causal_states(self, history: torch.Tensor, positions: torch.Tensor | None = None,
                      segments: torch.Tensor | None = None) -> torch.Tensor:
        """The window encoder: (B, H, S) history tokens -> (B, H, C) states, position t attending to the
        real items <= t; item positions count from each row's first real item. Packed rows (GeneratorWindows
        with `pack`) hold several windows: `segments` (B, H) numbers them 1, 2, ... (0: padding) and an item
        attends within its own; `positions` (B, H) count from each window's first item."""
        B, H, S = history.shape
        real_item = (history != PAD).any(dim=2)  # (B, H)
        x = self.t5.shared(history).sum(dim=2) * S ** -0.5  # (B, H, C), as in "items" encoding
        if self.config.dual_positions:
            if positions is None:
                positions = (real_item.long().cumsum(dim=1) - 1).clamp(min=0)
            x = x + self.item_position(positions)  # (B, H, C)
        causal = torch.ones(H, H, dtype=torch.bool, device=history.device).tril()
        eye = torch.eye(H, dtype=torch.bool, device=history.device)
        allowed = causal & real_item[:, None, :]  # (B, H, H)
        if segments is not None:
            allowed = allowed & (segments[:, :, None] == segments[:, None, :])
        return self.t5.encode(x, allowed | eye)  # padding rows see themselves only

    # ---- decoder -------------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens: (N, t) decoder inputs, states (N, T, C), mask (N, T) -> (N, t, C) output states, scaled
        as T5 scales before lm_head. A window model's start token gets the state of the history's last
        position (see NOTE)."""
        start = states[:, -1] if self.config.samples == "window" else None
        rows = torch.arange(len(states), device=states.device)
        return self.t5.decode(tokens, states, rows, mask.bool(), start=start) * self.output_scale

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

    # ---- dense head ----------------------------------------------------------------------------
    def dense_queries(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, C) decoder start states -> (N, C) unit-norm queries."""
        return F.normalize(self.dense_query(hidden), dim=-1)

    def item_keys(self, content: torch.Tensor) -> torch.Tensor:
        """(N, F) content features -> (N, C) unit-norm item keys."""
        return F.normalize(self.dense_key(content), dim=-1)

    def dense_scores(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H, S) history tokens -> (B, N) the dense head's logits over the items of `item_key_table`."""
        states, mask = self.encode(history)
        start = torch.full((len(history), 1), BOS, dtype=torch.long, device=history.device)
        query = self.dense_queries(self.decode(start, states, mask)[:, 0])  # (B, C)
        return query.float() @ self.item_key_table.T / self.config.dense_temperature

    def dense_loss(self, hidden: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target item among the items of `dense_pool` (all items when None), at most
        `dense_negatives` of them: then the batch's targets and a uniform sample, where a sampled copy of a row's
        own target does not count against it.

        hidden: (N, C) decoder start states, item: (N,) target item indices (all in the pool)."""
        content = self.item_content
        pool = self.dense_pool if self.dense_pool is not None else torch.arange(len(content), device=item.device)
        accidental = None
        if len(pool) <= self.config.dense_negatives:
            candidates = pool
            position = torch.full((len(content),), -1, dtype=torch.long, device=item.device)
            position[pool] = torch.arange(len(pool), device=item.device)
            target = position[item]  # (N,)
        else:
            positives, target = item.unique(return_inverse=True)  # (P,), (N,)
            sampled = pool[torch.randint(len(pool), (self.config.dense_negatives,), device=item.device)]
            candidates = torch.cat([positives, sampled])
            accidental = torch.cat([torch.zeros(len(item), len(positives), dtype=torch.bool, device=item.device),
                                    sampled[None] == item[:, None]], dim=1)  # (N, M)
        logits = (self.dense_queries(hidden) @ self.item_keys(content[candidates]).T).float()  # (N, M)
        logits = logits / self.config.dense_temperature
        if accidental is not None:
            logits = logits.masked_fill(accidental, float("-inf"))
        return self.config.dense_loss_weight * F.cross_entropy(logits, target)

    # ---- training ------------------------------------------------------------------------------
    def forward(self, history: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor,
                valid: torch.Tensor | None = None, item: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, segments: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of generating the target codes.

        One target per history: history (B, H, S) tokens; target (B, D) local codes of the decode
        modality; allowed (B, D, W) bool, the trie children of the ground-truth prefix at every step.
        A window (with `valid`): target (B, H, D) and allowed (B, H, D, W) for the next item of every
        position, valid (B, H) bool where that target exists; the loss is the mean over valid targets.
        `item`: the target items' indices ((B,) or (B, H)), which the dense head's loss (when the model has one)
        adds to the codes' loss. Packed windows add `positions` and `segments` (see `causal_states`).
        """
        if valid is not None:
            return self.window_loss(history, target, allowed, valid, item, positions, segments)
        hidden = self.teacher_forced(history, target)  # (B, D, C)
        loss = self.sequence_loss(hidden, target, allowed)
        if self.dense_query is not None:
            loss = loss + self.dense_loss(hidden[:, 0], item)
        return loss

    def teacher_forced(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """history (B, H, S) tokens, target (B, D) local codes -> (B, D, C) the decoder states that predict each
        level of the target, fed the target's own earlier levels."""
        states, mask = self.encode(history)
        return self.decode(self.decoder_input(target), states, mask)

    def decoder_input(self, target: torch.Tensor) -> torch.Tensor:
        """(..., D) local codes -> (..., D) the teacher-forced decoder input: BOS, then the vocabulary ids of the
        target's first D - 1 levels."""
        D = target.shape[-1]
        tokens = self.level_token.gather(1, target.reshape(-1, D).T).T.reshape(target.shape)  # vocabulary ids
        return torch.cat([torch.full_like(tokens[..., :1], BOS), tokens[..., :-1]], dim=-1)

    def item_log_probs(self, history: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(B,) the log-probability of each target item's full code, normalised per level as the model was
        trained and as the beam search scores it. history (B, H, S), target (B, D) local codes, allowed
        (B, D, W) bool: the trie children of the target's prefix at every level (`Trie.allowed_along`)."""
        hidden = self.teacher_forced(history, target)  # (B, D, C)
        total = torch.zeros(len(target), device=hidden.device)
        for level, size in enumerate(self.level_sizes):
            logp = self.level_log_probs(hidden[:, level], level, allowed[:, level, :size])  # (B, size)
            total += logp.gather(1, target[:, level:level + 1]).squeeze(1)
        return total

    @property
    def output_scale(self) -> float:
        """T5 scales the decoder output before a tied lm head."""
        return self.t5.output_scale

    def window_loss(self, history: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor,
                    valid: torch.Tensor, item: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                    segments: torch.Tensor | None = None) -> torch.Tensor:
        """Every target of a window in one pass (see `forward`): one causal encoder pass, one decoder pass
        for all positions, the sequence of position t cross-attending to positions <= t (of its own window)."""
        if segments is None:  # right-aligned windows: drop the batch's leading all-pad columns
            columns = slice(first_real_column(history), None)
        else:  # packed rows, left-aligned: drop the batch's trailing all-pad columns
            used = (segments > 0).any(dim=0)  # (H,)
            columns = slice(0, int(used.nonzero().max()) + 1 if bool(used.any()) else 1)
            positions, segments = positions[:, columns], segments[:, columns]
        history, target, allowed, valid = history[:, columns], target[:, columns], allowed[:, columns], \
            valid[:, columns]
        item = item[:, columns] if item is not None else None
        H = target.shape[1]  # target: (B, H, D)
        states = self.causal_states(history, positions, segments)  # (B, H, C)
        decoder_input = self.decoder_input(target)  # (B, H, D)
        real_item = (history != PAD).any(dim=2)  # (B, H)
        user, position = valid.nonzero(as_tuple=True)  # (N,) each: the targets, padding left out
        sees = (torch.arange(H, device=history.device)[None] <= position[:, None]) & real_item[user]  # (N, H)
        if segments is not None:
            sees = sees & (segments[user] == segments[user, position][:, None])
        hidden = self.t5.decode(decoder_input[user, position], states, user, sees,
                                start=states[user, position]) * self.output_scale  # (N, D, C)
        if not len(user):
            zero = hidden.sum() + 0.0 * states.sum()  # no target in this batch: zero, every parameter in the graph
            if self.dense_query is not None:
                zero = zero + 0.0 * sum(p.sum() for m in (self.dense_query, self.dense_key) for p in m.parameters())
            return zero
        loss = self.sequence_loss(hidden, target[user, position], allowed[user, position])
        if self.dense_query is not None:
            loss = loss + self.dense_loss(hidden[:, 0], item[user, position])
        return loss

    def sequence_loss(self, hidden: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Mean over steps of the cross-entropy, normalised over the permitted tokens of each step; with
        label smoothing eps, (1 - eps) * cross-entropy + eps * the mean of -log p over the permitted tokens."""
        eps = self.config.label_smoothing
        weight = self.t5.lm_head.weight[self.level_token]  # (D, W, C)
        logits = torch.einsum("bjc,jwc->bjw", hidden, weight).float()  # (B, D, W)
        if self.config.constraint == "off":
            full = (hidden @ self.t5.lm_head.weight.T).float()  # (B, D, V)
            target_logit = logits.gather(2, target[..., None]).squeeze(2)  # (B, D)
            nll = full.logsumexp(dim=-1) - target_logit  # (B, D)
            if eps > 0:  # permitted: the whole vocabulary
                nll = (1 - eps) * nll + eps * (full.logsumexp(dim=-1) - full.mean(dim=-1))
            return nll.mean()
        permitted = self.level_valid[None].expand_as(allowed)  # (B, D, W)
        if self.config.constraint == "trie":
            permitted = permitted & allowed
        logits = logits.masked_fill(~permitted, float("-inf"))
        if eps == 0:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        logp = logits.log_softmax(dim=-1)  # (B, D, W), -inf where not permitted
        nll = -logp.gather(2, target[..., None]).squeeze(2)  # (B, D)
        uniform = -logp.masked_fill(~permitted, 0.0).sum(dim=-1) / permitted.sum(dim=-1).clamp(min=1)  # (B, D)
        return ((1 - eps) * nll + eps * uniform).mean()


def first_real_column(history: torch.Tensor) -> int:
    """history (B, H, S): the first item column that holds a real item in some row (H - 1 when none)."""
    real_item = (history != PAD).any(dim=2)  # (B, H)
    return int(real_item.any(dim=0).float().argmax()) if bool(real_item.any()) else history.shape[1] - 1
