"""Trie-constrained beam search as tensor operations.

Per batch of users: the encoder runs once per user; every decode step is one decoder pass over all
(user, beam) rows with a KV cache, a gather of the trie's allowed children, and one stable sort per
user over (beam x codes) candidates. No Python loop over users or beams inside a step, and every
returned sequence is a real item. Scores are the model's summed log-probabilities; equal scores are
ordered by (beam rank, code), so results are deterministic.

The incremental decoder reuses the T5 decoder's own weights but computes cross-attention with the
beams of a user as queries against that user's encoder keys/values (computed once, never copied per
beam), which is what keeps memory flat in the beam size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mscg.artifacts.codes import BOS
from mscg.decoding.trie import CodeTrie
from mscg.models.generator import Generator


class IncrementalDecoder:
    """T5 decoder, one token per step, for B users x K beams. States live in (B, K, ...) layout."""

    def __init__(self, model: Generator, states: torch.Tensor, mask: torch.Tensor):
        t5 = model.t5
        self.model = model
        self.blocks = t5.decoder.block
        self.final_norm = t5.decoder.final_layer_norm
        self.n_heads = t5.config.num_heads
        self.d_kv = t5.config.d_kv
        self.scale = model.config.d_model ** -0.5 if t5.config.tie_word_embeddings else 1.0
        B, T, _ = states.shape
        # Cross-attention keys/values once per user: (B, h, T, d_kv); padding masked as -inf.
        self.cross = []
        for block in self.blocks:
            attn = block.layer[1].EncDecAttention
            k = attn.k(states).view(B, T, self.n_heads, self.d_kv).transpose(1, 2)
            v = attn.v(states).view(B, T, self.n_heads, self.d_kv).transpose(1, 2)
            self.cross.append((k, v))
        self.cross_mask = torch.zeros(B, 1, 1, T, dtype=states.dtype, device=states.device)
        self.cross_mask.masked_fill_(mask[:, None, None, :] == 0, float("-inf"))
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.blocks)
        self.steps = 0

    def reorder(self, flat_index: torch.Tensor) -> None:
        """Keep the self-attention cache rows of the surviving beams: flat_index (B*K',) into (B*K)."""
        self.self_kv = [(k[flat_index], v[flat_index]) for k, v in self.self_kv]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, K) the last decoder input of every beam -> (B, K, C) output states (lm_head scale)."""
        B, K = tokens.shape
        x = self.model.t5.shared(tokens).reshape(B * K, 1, -1)  # (N, 1, C), N = B*K
        t = self.steps
        bias = self.blocks[0].layer[0].SelfAttention.compute_bias(1, t + 1, device=x.device, past_seen_tokens=t)
        for i, block in enumerate(self.blocks):
            sa = block.layer[0]
            h = sa.layer_norm(x)
            q, k, v = (self._heads(proj(h)) for proj in (sa.SelfAttention.q, sa.SelfAttention.k, sa.SelfAttention.v))
            if self.self_kv[i] is not None:
                k = torch.cat([self.self_kv[i][0], k], dim=2)  # (N, h, t+1, d_kv)
                v = torch.cat([self.self_kv[i][1], v], dim=2)
            self.self_kv[i] = (k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)  # (N, h, 1, d_kv)
            x = x + sa.SelfAttention.o(y.transpose(1, 2).reshape(B * K, 1, -1))
            ca = block.layer[1]
            h = ca.layer_norm(x)
            q = ca.EncDecAttention.q(h).view(B, K, self.n_heads, self.d_kv).transpose(1, 2)  # (B, h, K, d_kv)
            ck, cv = self.cross[i]
            y = F.scaled_dot_product_attention(q, ck, cv, attn_mask=self.cross_mask.to(q.dtype), scale=1.0)
            x = x + ca.EncDecAttention.o(y.transpose(1, 2).reshape(B * K, 1, -1))  # (N, 1, C)
            x = block.layer[2](x)
        self.steps += 1
        return (self.final_norm(x) * self.scale).view(B, K, -1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], 1, self.n_heads, self.d_kv).transpose(1, 2)  # (N, h, 1, d_kv)


@torch.no_grad()
def beam_search(model: Generator, history: torch.Tensor, trie: CodeTrie, beam_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """history: (B, H, S) tokens -> items (B, beam_size) (-1 where fewer items exist), scores (B, beam_size).

    Items are sorted by score, best first.
    """
    B = history.shape[0]
    device = history.device
    states, mask = model.encode(history)
    decoder = IncrementalDecoder(model, states, mask)
    tokens = torch.full((B, 1), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(B, 1, device=device)
    nodes = torch.zeros(B, 1, dtype=torch.long, device=device)  # everybody at the root
    users = torch.arange(B, device=device)[:, None]
    for level in range(trie.depth):
        hidden = decoder.step(tokens)  # (B, K, C)
        K = hidden.shape[1]
        table = trie.next_node[level]
        children = table[nodes.clamp(min=0)].long()  # (B, K, size)
        allowed = (children >= 0) & (nodes >= 0)[..., None]
        logp = model.level_log_probs(hidden.reshape(B * K, -1), level, allowed.reshape(B * K, -1))
        size = logp.shape[-1]
        candidates = (scores[..., None] + logp.view(B, K, size)).view(B, K * size)  # (B, K*size)
        width = min(beam_size, K * size)
        scores, flat = torch.sort(candidates, dim=1, descending=True, stable=True)
        scores, flat = scores[:, :width], flat[:, :width]  # (B, K')
        origin, code = flat // size, flat % size
        nodes = children.view(B, K * size).gather(1, flat)
        nodes = torch.where(torch.isfinite(scores), nodes, torch.full_like(nodes, -1))
        tokens = model.level_token[level][code]  # (B, K') vocabulary ids fed at the next step
        if level + 1 < trie.depth:
            decoder.reorder((users * K + origin).view(-1))
    items = nodes  # after the last level a node is an item index
    if items.shape[1] < beam_size:
        pad = beam_size - items.shape[1]
        items = F.pad(items, (0, pad), value=-1)
        scores = F.pad(scores, (0, pad), value=float("-inf"))
    return items, scores
