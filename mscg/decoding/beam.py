"""Trie-constrained beam search as tensor operations.

Per batch of users: the encoder runs once per user; every decode step is one decoder pass over all
(user, beam) rows with a KV cache, a gather of the trie's allowed children, and a top-k per user over
the (beam x codes) candidates (`top_width`: a stable sort's first `beam` entries without sorting the
whole row). No Python loop over users or beams inside a step, and every returned sequence is a real
item. Scores are the model's summed log-probabilities; equal scores are ordered by (beam rank, code),
so results are deterministic. Under trie normalisation the last step runs the decoder only for beams
whose prefix has more than one continuation (a single child has log-probability exactly 0).

The incremental decoder reuses the T5 decoder's own weights but computes cross-attention with the
beams of a user as queries against that user's encoder keys/values (computed once, never copied per
beam), which is what keeps memory flat in the beam size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mscg.decoding.trie import CodeTrie
from mscg.models.generator import Generator
from mscg.models.vocabulary import BOS


class IncrementalDecoder:
    """T5 decoder, one token per step, for B users x K beams. States live in (B, K, ...) layout.

    Numerically the T5 decoder (pre-norm blocks, relative position bias on self-attention, no 1/sqrt(d)
    scaling), organised for a search: the self-attention cache holds one (N, h, 1, d_kv) key and value
    per past position (a reorder gathers them, nothing is concatenated), a single query attends by
    elementwise products (a decode is a handful of steps), and the ReLU feed-forward works in place.
    """

    def __init__(self, model: Generator, states: torch.Tensor, mask: torch.Tensor):
        t5 = model.t5
        self.model = model
        self.blocks = t5.decoder.block
        self.final_norm = t5.decoder.final_layer_norm
        self.n_heads = self.blocks[0].layer[0].SelfAttention.n_heads
        self.d_kv = self.blocks[0].layer[0].SelfAttention.key_value_proj_dim
        self.scale = model.output_scale
        B, T, _ = states.shape
        # Cross-attention keys/values once per user: (B, h, T, d_kv); padding masked as -inf.
        self.cross = []
        for block in self.blocks:
            attn = block.layer[1].EncDecAttention
            k = attn.k(states).view(B, T, self.n_heads, self.d_kv).transpose(1, 2)
            v = attn.v(states).view(B, T, self.n_heads, self.d_kv).transpose(1, 2)
            self.cross.append((k, v))
        # A window-trained model adds its last position's state to the start token (models/generator.py).
        self.start = states[:, -1] if model.config.samples == "window" else None  # (B, C)
        self.cross_mask = torch.zeros(B, 1, 1, T, dtype=states.dtype, device=states.device)
        self.cross_mask.masked_fill_(mask[:, None, None, :] == 0, float("-inf"))
        # Self-attention q, k, v as one projection per layer (T5's are bias-free): one matmul, not three.
        self.qkv = [torch.cat([a.q.weight, a.k.weight, a.v.weight])
                    for a in (b.layer[0].SelfAttention for b in self.blocks)]
        # past[i][j] = (key, value) of position j in layer i: (N, h, 1, d_kv) each
        self.past: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.blocks]
        self.steps = 0

    def reorder(self, flat_index: torch.Tensor) -> None:
        """Keep the self-attention cache rows of the surviving beams: flat_index (B*K',) into (B*K)."""
        self.past = [[(k[flat_index], v[flat_index]) for k, v in layer] for layer in self.past]

    def step(self, tokens: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (B, K) the last decoder input of every beam -> (B, K, C) output states (lm_head scale).

        With `rows` (R,) flat indices into B*K: only those beams are computed -> (R, C), and the cache
        is left as it was (for a last step, where most beams need no model output).
        """
        B, K = tokens.shape
        flat = tokens.reshape(-1) if rows is None else tokens.reshape(-1)[rows]
        N = flat.shape[0]  # B*K, or R
        x = self.model.t5.shared(flat).view(N, 1, -1)  # (N, 1, C)
        t = self.steps
        if t == 0 and self.start is not None:
            x = x + (self.start.repeat_interleave(K, dim=0) if rows is None else self.start[rows // K])[:, None]
        bias = self.blocks[0].layer[0].SelfAttention.compute_bias(1, t + 1, device=x.device, past_seen_tokens=t)
        bias = bias.view(self.n_heads, t + 1).float()  # (h, t+1): query t against keys 0..t
        if rows is not None:
            user = rows // K
            cross_mask = self.cross_mask[user]  # (R, 1, 1, T)
        for i, block in enumerate(self.blocks):
            sa = block.layer[0]
            q, k, v = F.linear(sa.layer_norm(x), self.qkv[i]).view(N, 3, self.n_heads, 1, self.d_kv).unbind(1)
            past = self.past[i] if rows is None else [(pk[rows], pv[rows]) for pk, pv in self.past[i]]
            keys, values = [pk for pk, _ in past] + [k], [pv for _, pv in past] + [v]  # t+1 x (N, h, 1, d_kv)
            scores = torch.cat([(q * key).sum(-1) for key in keys], dim=-1).float() + bias  # (N, h, t+1)
            p = scores.softmax(dim=-1).to(v.dtype)
            y = sum(p[..., j, None, None] * value for j, value in enumerate(values))  # (N, h, 1, d_kv)
            if rows is None:
                self.past[i].append((k, v))
            x = x + sa.SelfAttention.o(y.transpose(1, 2).reshape(N, 1, -1))
            ca = block.layer[1]
            h = ca.layer_norm(x)
            ck, cv = self.cross[i]
            if rows is None:  # the beams of a user are the queries against that user's keys/values
                q = ca.EncDecAttention.q(h).view(B, K, self.n_heads, self.d_kv).transpose(1, 2)  # (B, h, K, d_kv)
                y = F.scaled_dot_product_attention(q, ck, cv, attn_mask=self.cross_mask.to(q.dtype), scale=1.0)
            else:  # a few beams: each row its own user's keys/values
                q = ca.EncDecAttention.q(h).view(N, 1, self.n_heads, self.d_kv).transpose(1, 2)  # (R, h, 1, d_kv)
                y = F.scaled_dot_product_attention(q, ck[user], cv[user], attn_mask=cross_mask.to(q.dtype), scale=1.0)
            x = x + ca.EncDecAttention.o(y.transpose(1, 2).reshape(N, 1, -1))  # (N, 1, C)
            x = _feed_forward(block.layer[2], x)
        if rows is None:
            self.steps += 1
            return (self.final_norm(x) * self.scale).view(B, K, -1)
        return (self.final_norm(x) * self.scale).view(N, -1)


def _feed_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """T5LayerFF in inference: x + wo(relu(wi(norm(x)))), the ReLU in place (no second d_ff-wide tensor)."""
    dense = layer.DenseReluDense
    return x + dense.wo(dense.wi(layer.layer_norm(x)).relu_())


def top_width(candidates: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `width` best entries of every row, best first, equal values in index order: exactly the first
    `width` columns of a stable descending sort, at the cost of a top-k (no full sort of each row).

    candidates: (B, M) -> values (B, width), indices (B, width).
    """
    if width >= candidates.shape[1]:
        return torch.sort(candidates, dim=1, descending=True, stable=True)
    threshold = torch.topk(candidates, width, dim=1, sorted=False).values.amin(dim=1, keepdim=True)  # (B, 1)
    above = candidates > threshold
    tied = candidates == threshold
    need = width - above.sum(dim=1, keepdim=True)  # >= 1: how many tied entries complete the row
    keep = above | (tied & (tied.cumsum(dim=1) <= need))  # exactly `width` per row
    index = keep.nonzero()[:, 1].view(-1, width)  # (B, width) ascending
    values = candidates.gather(1, index)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    return values, index.gather(1, order)


def last_level_log_probs(model: Generator, decoder: IncrementalDecoder, tokens: torch.Tensor, allowed: torch.Tensor,
                         level: int) -> torch.Tensor:
    """The last level's log-probabilities under trie normalisation, computing the model only where needed.

    Normalised over the allowed children, a node with a single child gives it log-probability exactly 0
    whatever the model says; at the last level (usually the collision level, where most prefixes hold one
    item) the decoder runs only for beams with two or more children, as no later step needs their cache.
    allowed: (B, K, size) -> (B*K, size).
    """
    B, K, size = allowed.shape
    allowed = allowed.reshape(B * K, size)
    several = allowed.sum(dim=1) > 1  # (B*K,)
    rows = several.nonzero().squeeze(1)
    if 4 * rows.numel() > B * K:  # many beams need the model: the batched step is cheaper
        return model.level_log_probs(decoder.step(tokens).reshape(B * K, -1), level, allowed)
    logp = torch.zeros(B * K, size, device=allowed.device).masked_fill_(~allowed, float("-inf"))
    if rows.numel():
        logp[rows] = model.level_log_probs(decoder.step(tokens, rows), level, allowed[rows]).to(logp.dtype)
    return logp


@torch.no_grad()
def beam_search(model: Generator, history: torch.Tensor, trie: CodeTrie, beam_size: int,
                excluded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """history: (B, H, S) tokens -> items (B, beam_size) (-1 where fewer items exist), scores (B, beam_size).

    Items are sorted by score, best first. `excluded` (B, n_items) bool: items a user must not get (e.g. the
    history's); the search drops every prefix that leads only to excluded items, so its beams stay on the
    others, whose scores are those of the unrestricted search (normalised over the trie's children).
    """
    B = history.shape[0]
    device = history.device
    states, mask = model.encode(history)
    decoder = IncrementalDecoder(model, states, mask)
    tokens = torch.full((B, 1), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(B, 1, device=device)
    nodes = torch.zeros(B, 1, dtype=torch.long, device=device)  # everybody at the root
    users = torch.arange(B, device=device)[:, None]
    excluded_nodes = trie.excluded_nodes(excluded.to(device)) if excluded is not None else None  # per level
    for level in range(trie.depth):
        K = nodes.shape[1]
        children = trie.children(level, nodes, as_long=False)  # (B, K, size) int32
        allowed = children >= 0
        if level == trie.depth - 1 and model.config.constraint == "trie":
            logp = last_level_log_probs(model, decoder, tokens, allowed, level)
        else:
            hidden = decoder.step(tokens)  # (B, K, C)
            logp = model.level_log_probs(hidden.reshape(B * K, -1), level, allowed.reshape(B * K, -1))
        size = logp.shape[-1]
        candidates = (scores[..., None] + logp.view(B, K, size)).view(B, K * size)  # (B, K*size)
        candidates = candidates.masked_fill(candidates.isnan(), float("-inf"))  # NaN is the worst score, not the best
        if excluded_nodes is not None:
            gone = (excluded_nodes[level].gather(1, children.view(B, K * size).clamp(min=0).long())
                    & (children.view(B, -1) >= 0))
            candidates = candidates.masked_fill(gone, float("-inf"))
        scores, flat = top_width(candidates, min(beam_size, K * size))  # (B, K')
        origin, code = flat // size, flat % size
        nodes = children.view(B, K * size).gather(1, flat).long()
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
