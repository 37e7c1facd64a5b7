"""The T5 encoder-decoder of the generator, in plain torch (no transformers import: it costs seconds).

Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer", JMLR
2020 (T5). The modules, their attribute names and so the state-dict keys (`shared.weight`,
`encoder.block.0.layer.0.SelfAttention.q.weight`, `...relative_attention_bias.weight`,
`decoder.block.0.layer.1.EncDecAttention.k.weight`, `encoder.final_layer_norm.weight`, ...) are those of
transformers' `T5ForConditionalGeneration` as `GeneratorConfig.t5_config()` configures it, so every
model.safetensors written with transformers' T5 loads unchanged. Only what mscg uses is here: ReLU
feed-forward, RMS layer norm, bias-free projections, no 1/sqrt(d) attention scaling, relative position
buckets on self-attention computed by each stack's first block and shared, and the token embedding tied
to the encoder, the decoder and the lm head (scaled by d_model**-0.5 before it). The arithmetic is
mscg/models/t5_passes.py's: one implementation, which the tests check against transformers' own forward.

NOTE: the initialisation replays transformers' draw for draw (`T5._init_as_transformers`), so that a seed
gives the weights it gave when the generator was built from transformers' T5.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mscg.models.t5_passes import decoder_pass, encoder_pass

LAYER_NORM_EPS = 1e-6  # T5Config.layer_norm_epsilon's default
N_BUCKETS = 32  # relative_attention_num_buckets


@torch.no_grad()
def normal_(weight: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """weight ~ N(0, std) in place; nothing on the meta device (whose normal_ imports torch._dynamo, ~1.7 s:
    mscg builds models there to check a file's shapes before loading it)."""
    return weight if weight.is_meta else weight.normal_(0.0, std)


def embedding(n: int, dim: int) -> nn.Embedding:
    """nn.Embedding(n, dim) with its own N(0, 1) initialisation, the same draw, through `normal_`."""
    module = nn.Embedding(n, dim, _weight=torch.empty(n, dim))
    normal_(module.weight)
    return module


class T5LayerNorm(nn.Module):
    """RMS norm, no mean subtraction and no bias; the variance in fp32 (as transformers' T5LayerNorm)."""

    def __init__(self, d_model: int, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


class T5DenseActDense(nn.Module):
    """wo(dropout(relu(wi(x))))."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.wi = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.wi(x).relu())
        if h.dtype != self.wo.weight.dtype:  # as transformers: wo sees its own dtype (bf16 autocast casts anyway)
            h = h.to(self.wo.weight.dtype)
        return self.wo(h)


class T5LayerFF(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.DenseReluDense = T5DenseActDense(d_model, d_ff, dropout)
        self.layer_norm = T5LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Attention(nn.Module):
    """Bias-free q, k, v, o projections; t5_passes.attention applies them. With `relative_attention_bias`
    (a stack's first self-attention): the bucketed relative position bias of the whole stack."""

    def __init__(self, d_model: int, n_heads: int, d_kv: int, dropout: float, *, is_decoder: bool,
                 relative_bias: bool = False, max_distance: int = 128):
        super().__init__()
        self.is_decoder = is_decoder
        self.n_heads = n_heads
        self.key_value_proj_dim = d_kv
        self.dropout = dropout  # on the attention weights (a float, as transformers')
        self.relative_attention_num_buckets = N_BUCKETS
        self.relative_attention_max_distance = max_distance
        self.has_relative_attention_bias = relative_bias
        inner = n_heads * d_kv
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)
        if relative_bias:
            self.relative_attention_bias = embedding(N_BUCKETS, n_heads)

    def compute_bias(self, query_length: int, key_length: int, device=None, past_seen_tokens: int = 0) -> torch.Tensor:
        """(1, h, Q, K) bias of queries past_seen_tokens.. against keys 0..K-1."""
        if device is None:
            device = self.relative_attention_bias.weight.device
        context = torch.arange(query_length, dtype=torch.long, device=device)[:, None] + past_seen_tokens
        memory = torch.arange(key_length, dtype=torch.long, device=device)[None, :]
        bucket = relative_position_bucket(memory - context, bidirectional=not self.is_decoder,
                                          num_buckets=self.relative_attention_num_buckets,
                                          max_distance=self.relative_attention_max_distance)  # (Q, K)
        return self.relative_attention_bias(bucket).permute([2, 0, 1]).unsqueeze(0)  # (1, h, Q, K)


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5's buckets (Mesh TensorFlow's): exact for small distances, logarithmic up to max_distance, one
    bucket beyond; half the buckets for each direction when bidirectional, only the past otherwise."""
    buckets = 0
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, large)


class T5LayerSelfAttention(nn.Module):
    def __init__(self, attention: T5Attention, d_model: int, dropout: float):
        super().__init__()
        self.SelfAttention = attention
        self.layer_norm = T5LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)


class T5LayerCrossAttention(nn.Module):
    def __init__(self, attention: T5Attention, d_model: int, dropout: float):
        super().__init__()
        self.EncDecAttention = attention
        self.layer_norm = T5LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)


class T5Block(nn.Module):
    """layer[0] self-attention, (decoder) layer[1] cross-attention, layer[-1] feed-forward; pre-norm each."""

    def __init__(self, d_model: int, n_heads: int, d_kv: int, d_ff: int, dropout: float, *, is_decoder: bool,
                 relative_bias: bool, max_distance: int):
        super().__init__()
        self.layer = nn.ModuleList()
        self_attention = T5Attention(d_model, n_heads, d_kv, dropout, is_decoder=is_decoder,
                                     relative_bias=relative_bias, max_distance=max_distance)
        self.layer.append(T5LayerSelfAttention(self_attention, d_model, dropout))
        if is_decoder:
            cross = T5Attention(d_model, n_heads, d_kv, dropout, is_decoder=True, max_distance=max_distance)
            self.layer.append(T5LayerCrossAttention(cross, d_model, dropout))
        self.layer.append(T5LayerFF(d_model, d_ff, dropout))


class T5Stack(nn.Module):
    """The encoder or the decoder: blocks, a final norm, dropout on its input and output. `embed_tokens`
    is the shared embedding (tied by T5)."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_kv: int, d_ff: int,
                 dropout: float, *, is_decoder: bool, max_distance: int):
        super().__init__()
        self.is_decoder = is_decoder
        self.embed_tokens = embedding(vocab_size, d_model)
        self.block = nn.ModuleList([
            T5Block(d_model, n_heads, d_kv, d_ff, dropout, is_decoder=is_decoder, relative_bias=i == 0,
                    max_distance=max_distance) for i in range(n_layers)])
        self.final_layer_norm = T5LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)


class T5(nn.Module):
    """T5's encoder-decoder with a tied lm head, its passes with masks of the caller's choosing
    (`encode`, `decode`, both from t5_passes) and a `forward` to logits with padding masks."""

    def __init__(self, *, vocab_size: int, d_model: int, d_kv: int, d_ff: int, n_layers: int, n_decoder_layers: int,
                 n_heads: int, dropout: float, max_distance: int):
        super().__init__()
        self.d_model, self.d_kv, self.d_ff = d_model, d_kv, d_ff
        self.shared = embedding(vocab_size, d_model)
        self.encoder = T5Stack(vocab_size, d_model, n_layers, n_heads, d_kv, d_ff, dropout, is_decoder=False,
                               max_distance=max_distance)
        self._init_stack_as_transformers(self.encoder)
        self.decoder = T5Stack(vocab_size, d_model, n_decoder_layers, n_heads, d_kv, d_ff, dropout,
                               is_decoder=True, max_distance=max_distance)
        self._init_stack_as_transformers(self.decoder)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self._init_as_transformers()

    @property
    def output_scale(self) -> float:
        """T5 scales the decoder output by d_model**-0.5 before the tied lm head."""
        return self.d_model ** -0.5

    # ---- passes ----------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Input embeddings (B, T, C), allowed (B, T, T) bool -> (B, T, C) encoder states."""
        return encoder_pass(self, x, allowed)

    def decode(self, tokens: torch.Tensor, states: torch.Tensor, user: torch.Tensor, allowed: torch.Tensor,
               start: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) tokens over the states (B, T, C) of B users -> (N, D, C), before the lm head's scaling."""
        return decoder_pass(self, tokens, states, user, allowed, start=start)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """transformers' `T5ForConditionalGeneration(inputs_embeds=, attention_mask=, decoder_input_ids=).logits`:
        (B, T, C) embeddings, (B, T) padding mask (1 = real), (B, D) decoder inputs -> (B, D, V) logits."""
        B, T, _ = inputs_embeds.shape
        keys = attention_mask.bool()  # (B, T)
        states = self.encode(inputs_embeds, keys[:, None, :].expand(B, T, T))  # (B, T, C)
        hidden = self.decode(decoder_input_ids, states, torch.arange(B, device=states.device), keys)  # (B, D, C)
        return self.lm_head(hidden * self.output_scale)

    # ---- initialisation --------------------------------------------------------------------------
    @torch.no_grad()
    def _init_stack_as_transformers(self, stack: T5Stack) -> None:
        """transformers' T5Stack post_init, in its order: each module's generic N(0, 1) draw (children
        first), then T5's own std for attention and feed-forward (after the modules' own torch init)."""
        normal_(stack.embed_tokens.weight)
        d_model, d_kv, d_ff = self.d_model, self.d_kv, self.d_ff
        for block in stack.block:
            for layer in block.layer:
                if isinstance(layer, T5LayerFF):
                    dense = layer.DenseReluDense
                    normal_(dense.wi.weight)
                    normal_(dense.wo.weight)
                    normal_(dense.wi.weight, d_model ** -0.5)
                    normal_(dense.wo.weight, d_ff ** -0.5)
                else:
                    attn = layer.SelfAttention if isinstance(layer, T5LayerSelfAttention) else layer.EncDecAttention
                    weights = [attn.q.weight, attn.k.weight, attn.v.weight, attn.o.weight]
                    stds = [(d_model * d_kv) ** -0.5, d_model ** -0.5, d_model ** -0.5, (attn.n_heads * d_kv) ** -0.5]
                    if attn.has_relative_attention_bias:
                        weights.append(attn.relative_attention_bias.weight)
                        stds.append(d_model ** -0.5)
                    for w in weights:
                        normal_(w)
                    for w, std in zip(weights, stds):
                        normal_(w, std)

    @torch.no_grad()
    def _init_as_transformers(self) -> None:
        """transformers' T5ForConditionalGeneration post_init (N(0, 1) for the shared embedding and the lm
        head, then the shared embedding's own N(0, 1)), then the ties: one embedding for all four."""
        normal_(self.shared.weight)
        normal_(self.lm_head.weight)
        normal_(self.shared.weight)
        self.encoder.embed_tokens.weight = self.shared.weight
        self.decoder.embed_tokens.weight = self.shared.weight
        self.lm_head.weight = self.shared.weight

