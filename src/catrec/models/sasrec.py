"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence.

Item embedding scaled by sqrt(d) plus a learned positional embedding, dropout, ``num_blocks`` blocks of causal
multi-head self-attention and a point-wise feed-forward network with residuals and layer norm, a final layer
norm. Two layer-norm placements (docs/reproduction-notes.md):

- ``pre``: x + Attn(LN(x)), then x + FFN(LN(x)) (pre-LN, the common fix);
- ``original``: the authors' code: q = LN(x); x = q + Attn(q, x, x); x = LN(x); x = x + FFN(x).

Padding keys are masked out of attention, so outputs do not depend on how much left padding there is.
In the eager layout every layer but attention works on the packed real positions only ((N, d), N = real
items of the batch): on Beauty a random batch is mostly padding, which would otherwise cost several times
the real work. Attention alone sees the padded (B, L, d) view. The static layout runs every layer on the
padded (B, L, d) tensor (a fixed shape; finding the real positions would read their number on the host),
with attention written out so that its dropout masks come from ``DropoutMasks``. Outputs at padding are 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from catrec.models import ModelConfig, SequentialRecommender
from catrec.models.dropout import Dropout


@dataclass(frozen=True)
class _Packing:
    """Where the packed rows live in the padded (B, L) view: ``padded[rows, columns] = packed``."""

    rows: torch.Tensor
    columns: torch.Tensor
    shape: tuple[int, int]

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        padded = packed.new_zeros(*self.shape, packed.shape[-1])
        return padded.index_put((self.rows, self.columns), packed)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        return padded[self.rows, self.columns]


@dataclass(frozen=True)
class _Padded:
    """The static layout: every position is kept, so packing and padding leave the (B, L, d) tensor as is."""

    shape: tuple[int, int]

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        return packed

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        return padded


_Layout = _Packing | _Padded


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden_size {hidden} is not divisible by num_heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        # Dropout on the attention weights in the static layout (the eager one leaves it to the fused kernel).
        self.weights_dropout = Dropout(dropout)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, packing: _Layout, mask: torch.Tensor
    ) -> torch.Tensor:
        """Packed (N, d) queries and keys -> packed (N, d) outputs; projections run on the packed rows."""
        (batch, length), hidden = packing.shape, queries.shape[-1]

        def split(x: torch.Tensor) -> torch.Tensor:
            return packing.pad(x).view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        query, key, value = split(self.query(queries)), split(self.key(keys)), split(self.value(keys))
        if isinstance(packing, _Padded):
            # What the fused kernel computes, written out so that dropout draws its mask from DropoutMasks.
            scores = (query @ key.transpose(-2, -1)) / math.sqrt(hidden // self.heads)
            weights = torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=-1)
            attended = self.weights_dropout(weights) @ value
        else:
            attended = F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        return self.out(packing.pack(attended.transpose(1, 2).reshape(batch, length, hidden)))


class PointWiseFeedForward(nn.Module):
    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden),
            Dropout(dropout),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SASRecBlock(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.pre_ln = config.layer_norm == "pre"
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attention = CausalSelfAttention(hidden, config.num_heads, config.dropout)
        self.attention_dropout = Dropout(config.dropout)
        self.forward_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.feed_forward = PointWiseFeedForward(hidden, config.dropout)

    def forward(self, x: torch.Tensor, packing: _Layout, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_ln:
            normed = self.attention_norm(x)
            x = x + self.attention_dropout(self.attention(normed, normed, packing, mask))
            return x + self.feed_forward(self.forward_norm(x))
        queries = self.attention_norm(x)
        x = queries + self.attention_dropout(self.attention(queries, x, packing, mask))
        x = self.forward_norm(x)
        return x + self.feed_forward(x)


class SASRec(SequentialRecommender):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden_size)
        nn.init.xavier_normal_(self.pos_emb.weight)
        self.emb_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_blocks))
        self.last_norm = nn.LayerNorm(config.hidden_size, eps=1e-8)

    @property
    def input_scale(self) -> float:
        """The reference code scales the item embeddings by sqrt(d) before adding positions."""
        return math.sqrt(self.config.hidden_size)

    def encode(self, seq_emb: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        length = seqs.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.config.max_len}")
        real = seqs != 0
        packing: _Layout
        if self.dropout_masks is None:
            rows, columns = real.nonzero(as_tuple=True)
            packing = _Packing(rows, columns, (seqs.shape[0], length))
        else:
            columns = torch.arange(length, device=seqs.device)
            packing = _Padded((seqs.shape[0], length))
        # Right-aligned positions: the last column is always position T - 1, whatever the batch width.
        positions = columns + (self.config.max_len - length)
        x = packing.pack(seq_emb) * self.input_scale + self.pos_emb(positions)
        x = self.emb_dropout(x)
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        # Keys at padding are masked; every query still sees itself so padding rows stay finite (dropped).
        mask = (causal & real.unsqueeze(1)) | torch.eye(length, dtype=torch.bool, device=seqs.device)
        mask = mask.unsqueeze(1)
        for block in self.blocks:
            x = block(x, packing, mask)
        if isinstance(packing, _Padded):
            return torch.where(real.unsqueeze(-1), self.last_norm(x), 0.0)
        return packing.pad(self.last_norm(x))
