"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence.

Item embedding scaled by sqrt(d) plus a learned positional embedding, dropout, ``num_blocks`` blocks of causal
multi-head self-attention and a point-wise feed-forward network with residuals and layer norm, a final layer
norm. Two layer-norm placements (docs/reproduction-notes.md):

- ``pre``: x + Attn(LN(x)), then x + FFN(LN(x)) (pre-LN, the common fix);
- ``original``: the authors' code: q = LN(x); x = q + Attn(q, x, x); x = LN(x); x = x + FFN(x).

Padding keys are masked out of attention, so outputs do not depend on how much left padding there is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from catrec.models import ModelConfig, SequentialRecommender


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

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = queries.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.query(queries)),
            split(self.key(keys)),
            split(self.value(keys)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(attended.transpose(1, 2).reshape(batch, length, hidden))


class PointWiseFeedForward(nn.Module):
    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
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
        self.attention_dropout = nn.Dropout(config.dropout)
        self.forward_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.feed_forward = PointWiseFeedForward(hidden, config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_ln:
            normed = self.attention_norm(x)
            x = x + self.attention_dropout(self.attention(normed, normed, mask))
            return x + self.feed_forward(self.forward_norm(x))
        queries = self.attention_norm(x)
        x = queries + self.attention_dropout(self.attention(queries, x, mask))
        x = self.forward_norm(x)
        return x + self.feed_forward(x)


class SASRec(SequentialRecommender):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden_size)
        nn.init.xavier_normal_(self.pos_emb.weight)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_blocks))
        self.last_norm = nn.LayerNorm(config.hidden_size, eps=1e-8)

    def encode(self, seq_emb: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        length = seqs.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.config.max_len}")
        real = (seqs != 0).unsqueeze(-1)
        # Right-aligned positions: the last column is always position T - 1, whatever the batch width.
        positions = torch.arange(self.config.max_len - length, self.config.max_len, device=seqs.device)
        x = seq_emb * math.sqrt(self.config.hidden_size) + self.pos_emb(positions)
        x = self.emb_dropout(x) * real
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        # Keys at padding are masked; every query still sees itself so padding rows stay finite (then zeroed).
        mask = (causal & (seqs != 0).unsqueeze(1)) | torch.eye(length, dtype=torch.bool, device=seqs.device)
        mask = mask.unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask) * real
        return self.last_norm(x)
