"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Causal self-attention over the item ids of a history; the hidden state at the last position scores
every item by an inner product with the (shared) item-embedding table.

NOTE: trained with softmax cross-entropy (not the paper's sampled BCE), which public reproductions find
markedly stronger: over all items, or, for large catalogues, over the target and sampled negatives (sampled
softmax, as in eSASRec, Tikhonovich et al., RecSys 2025; mscg's negatives are shared by the batch, their
logits logQ-corrected so that the loss estimates the full softmax's, and a negative equal to the target is
masked). Positions count from the right end of the `max_history` window (the paper's ids for a full window), so
a history with its padding trimmed, or packed into a row with others, keeps its items' positions. Pre-LayerNorm
blocks, GELU feed-forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mscg.models.sasrec_config import SASRecConfig

__all__ = ["INIT_STD", "PAD_ITEM", "SASRec", "SASRecConfig", "sampled_softmax_loss"]

PAD_ITEM = 0  # item index i is stored as i + 1; 0 pads the left of short histories
INIT_STD = 0.02


class CausalBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln_1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.dropout(self.proj(y))
        return x + self.dropout(self.mlp(self.ln_2(x)))


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.d_model, padding_idx=PAD_ITEM)
        self.pos_emb = nn.Embedding(config.max_history, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(CausalBlock(config.d_model, config.n_heads, config.dropout)
                                    for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        nn.init.normal_(self.item_emb.weight, std=INIT_STD)
        nn.init.normal_(self.pos_emb.weight, std=INIT_STD)
        with torch.no_grad():
            self.item_emb.weight[PAD_ITEM].zero_()

    def hidden(self, history: torch.Tensor, positions: torch.Tensor | None = None,
               segments: torch.Tensor | None = None) -> torch.Tensor:
        """history: (B, T) left-padded item indices + 1 -> (B, T, C) hidden states.

        Packed rows (SASRecWindows with `pack`) hold several histories: `segments` (B, T) numbers them 1, 2, ...
        (0: padding) and a position attends only within its own; `positions` (B, T) are their position ids.
        Without them, position ids count from the right end of the max_history window.
        """
        T, L = history.shape[1], self.config.max_history
        pos = torch.arange(L - T, L, device=history.device) if positions is None else positions  # (T,) | (B, T)
        x = self.drop(self.item_emb(history) * self.config.d_model ** 0.5 + self.pos_emb(pos))  # (B, T, C)
        real = history != PAD_ITEM  # (B, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=history.device).tril()
        # A query attends to earlier real items (of its own segment) and always to itself (pad rows stay finite).
        allowed = causal & real[:, None, :]  # (B, T, T)
        if segments is not None:
            allowed = allowed & (segments[:, :, None] == segments[:, None, :])
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=history.device)
        allowed = allowed[:, None]  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_f(x)

    @torch.no_grad()
    def init_item_table(self, vectors: torch.Tensor, known: torch.Tensor) -> None:
        """Start the item table from content vectors instead of noise.

        vectors: (n_items, C) already projected to the model width; known: (n_items,) bool, rows to
        take (the others keep their random start). Rows are rescaled so that their root mean square
        matches the random initialisation's std, so training dynamics stay those of the default.
        """
        rms = vectors[known].pow(2).mean().sqrt().clamp_min(1e-12)
        self.item_emb.weight[1:][known] = vectors[known] * (INIT_STD / rms)

    def item_table(self) -> torch.Tensor:
        """(n_items, C): the item embeddings that score candidates (the collaborative modality)."""
        return self.item_emb.weight[1:]

    def forward(self, history: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None,
                segments: torch.Tensor | None = None, negatives: torch.Tensor | None = None,
                log_q: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the next item at every position; targets -100 are ignored.

        history, targets: (B, T) (positions, segments: see `hidden`) -> scalar loss. Full softmax over every
        item; with `negatives` (N,), sampled softmax over them (`sampled_softmax_loss`, `log_q` its correction).
        """
        h = self.hidden(history, positions, segments)  # (B, T, C)
        real = targets >= 0
        if negatives is not None:
            return sampled_softmax_loss(h[real], targets[real], self.item_table(), negatives, log_q)
        logits = h[real] @ self.item_table().T  # (n_real, n_items)
        return F.cross_entropy(logits, targets[real])

    def score(self, history: torch.Tensor) -> torch.Tensor:
        """(B, T) histories -> (B, n_items) scores of the next item."""
        return self.hidden(history)[:, -1] @ self.item_table().T


def sampled_softmax_loss(h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, negatives: torch.Tensor,
                         log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Sampled softmax: each row's cross-entropy over its target and the negatives every row shares.

    h: (n, C) hidden states; targets: (n,) item indices; table: (n_items, C) item embeddings; negatives: (N,)
    item indices drawn with replacement from q: uniform, or exp(`log_q`) (n_items,). Each negative's logit
    loses log(N q) (the logQ correction, by importance sampling as Bengio & Senecal 2008): the exponentials of
    the negatives then estimate, without bias, the full softmax's sum over every item but the target, so the
    loss estimates the full-softmax cross-entropy (it is that exactly with every item once and q uniform).
    The target's logit is left as it is (as "Correcting the LogQ Correction", RecSys 2025, argues), and a
    negative equal to the row's target (an accidental hit) is masked out.
    """
    n_items, N = table.shape[0], len(negatives)
    pos = (h * table[targets]).sum(dim=1, keepdim=True)  # (n, 1)
    neg = h @ table[negatives].T  # (n, N)
    log_nq = math.log(N) + (log_q[negatives][None, :] if log_q is not None else -math.log(n_items))
    neg = (neg - log_nq).masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1)  # (n, 1 + N): the target first
    return F.cross_entropy(logits, torch.zeros_like(targets))
