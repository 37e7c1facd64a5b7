"""T5 encoder and decoder passes over the weights of mscg.models.t5.T5, with attention masks of our choosing.

They are T5's forward (models/t5.py builds its `encode`, `decode` and `forward` from them): a padding
mask gives T5's encoder, a causal one its decoder, and training on every target of a history window in
one pass needs two others: a causal encoder (position t sees items <= t), and a decoder whose rows, one
code sequence per target, each see only the encoder positions up to their own. The arithmetic is T5's:
pre-RMSNorm blocks, the first block's relative position bias shared by every block, no 1/sqrt(d) scaling,
ReLU feed-forward, dropout where T5 has it, padding masked with the dtype's minimum. The tests check these
passes against transformers' own forward (bit for bit on the CPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool (..., Q, K) -> 0 where allowed, the dtype's minimum elsewhere (as T5 masks)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                      torch.finfo(dtype).min)


def attention(attn, x: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One T5Attention: queries from x (B, Q, C), keys and values from kv (B, K, C), additive bias
    broadcastable to (B, h, Q, K) -> (B, Q, C)."""
    B, Q, _ = x.shape
    K = kv.shape[1]
    h, d = attn.n_heads, attn.key_value_proj_dim
    q = attn.q(x).view(B, Q, h, d).transpose(1, 2)  # (B, h, Q, d)
    k = attn.k(kv).view(B, K, h, d).transpose(1, 2)  # (B, h, K, d)
    v = attn.v(kv).view(B, K, h, d).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0,
                                       dropout_p=attn.dropout if attn.training else 0.0)  # (B, h, Q, d)
    return attn.o(y.transpose(1, 2).reshape(B, Q, h * d))


def _feed_forward(layer, x: torch.Tensor) -> torch.Tensor:
    return x + layer.dropout(layer.DenseReluDense(layer.layer_norm(x)))


def encoder_pass(t5, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """T5's encoder stack on input embeddings x (B, T, C); allowed (B, T, T) bool: which keys each query
    position may attend to -> (B, T, C) states."""
    stack = t5.encoder
    T = x.shape[1]
    bias = stack.block[0].layer[0].SelfAttention.compute_bias(T, T, device=x.device)  # (1, h, T, T)
    bias = bias + additive_mask(allowed[:, None], bias.dtype)  # (B, h, T, T)
    h = stack.dropout(x)
    for block in stack.block:
        sa = block.layer[0]
        normed = sa.layer_norm(h)
        h = h + sa.dropout(attention(sa.SelfAttention, normed, normed, bias))
        h = _feed_forward(block.layer[-1], h)
    return stack.dropout(stack.final_layer_norm(h))


def decoder_pass(t5, tokens: torch.Tensor, states: torch.Tensor, user: torch.Tensor, allowed: torch.Tensor,
                 start: torch.Tensor | None = None) -> torch.Tensor:
    """T5's decoder stack for N code sequences over the encoder states of B users.

    tokens: (N, D) decoder inputs (causal within each sequence); states: (B, T, C) encoder states;
    user: (N,) the row of `states` each sequence reads; allowed: (N, T) bool, the encoder positions it
    may attend to -> (N, D, C) states before the lm head (its scaling not applied). Cross-attention keys
    and values are computed once per user and gathered per sequence. `start` (N, C), when given, is added
    to the embedding of each sequence's first token.
    """
    N, D = tokens.shape
    B, T, C = states.shape
    stack = t5.decoder
    h = t5.shared(tokens)  # (N, D, C)
    if start is not None:
        h = torch.cat([h[:, :1] + start[:, None], h[:, 1:]], dim=1)
    h = stack.dropout(h)
    causal = torch.ones(D, D, dtype=torch.bool, device=tokens.device).tril()
    self_bias = stack.block[0].layer[0].SelfAttention.compute_bias(D, D, device=tokens.device)  # (1, h, D, D)
    self_bias = self_bias + additive_mask(causal, self_bias.dtype)
    cross_bias = additive_mask(allowed[:, None, None, :], h.dtype)  # (N, 1, 1, T)
    for block in stack.block:
        sa, ca = block.layer[0], block.layer[1]
        normed = sa.layer_norm(h)
        h = h + sa.dropout(attention(sa.SelfAttention, normed, normed, self_bias))
        attn = ca.EncDecAttention
        heads, d = attn.n_heads, attn.key_value_proj_dim
        q = attn.q(ca.layer_norm(h)).view(N, D, heads, d).transpose(1, 2)  # (N, h, D, d)
        # index_select, not [user]: its backward is an index_add (advanced indexing's sorts on the CPU)
        k = attn.k(states).view(B, T, heads, d).transpose(1, 2).index_select(0, user)  # (N, h, T, d)
        v = attn.v(states).view(B, T, heads, d).transpose(1, 2).index_select(0, user)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=cross_bias.to(q.dtype), scale=1.0,
                                           dropout_p=attn.dropout if attn.training else 0.0)  # (N, h, D, d)
        h = h + ca.dropout(attn.o(y.transpose(1, 2).reshape(N, D, heads * d)))
        h = _feed_forward(block.layer[-1], h)
    return stack.dropout(stack.final_layer_norm(h))
