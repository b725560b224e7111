"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence.

Item embedding scaled by sqrt(d) plus a learned positional embedding, dropout, ``num_blocks`` blocks of causal
multi-head self-attention and a point-wise feed-forward network with residuals and layer norm, a final layer
norm. Two layer-norm placements (docs/reproduction-notes.md):

- ``pre``: x + Attn(LN(x)), then x + FFN(LN(x)) (pre-LN, the common fix);
- ``original``: the authors' code: q = LN(x); x = q + Attn(q, x, x); x = LN(x); x = x + FFN(x).

Padding keys are masked out of attention, so outputs do not depend on how much left padding there is.
Every layer but attention works on the layout's rows (``catrec.models.layout``: the packed real positions,
(N, d), or the padded (B, L, d) tensor); attention sees the padded (B, L, d) view in both. Outputs at padding
are 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from catrec.models.base import ModelConfig, SequentialRecommender
from catrec.models.layout import Layout


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden_size {hidden} is not divisible by num_heads {heads}")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, layout: Layout, mask: torch.Tensor
    ) -> torch.Tensor:
        """The layout's rows of queries and keys -> its rows of outputs; projections run on those rows."""
        (batch, length), hidden = layout.shape, queries.shape[-1]

        def split(x: torch.Tensor) -> torch.Tensor:
            return layout.pad(x).view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        query, key, value = split(self.query(queries)), split(self.key(keys)), split(self.value(keys))
        scores = (query @ key.transpose(-2, -1)) / math.sqrt(hidden // self.heads)
        weights = torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=-1)
        attended = layout.dropout_attention(weights) @ value
        return self.out(layout.pack(attended.transpose(1, 2).reshape(batch, length, hidden)))


class PointWiseFeedForward(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        # Named as the layers of the nn.Sequential(Linear, Dropout, ReLU, Linear, Dropout) of earlier
        # versions, so that their model files load.
        self.net = nn.ModuleDict({"0": nn.Linear(hidden, hidden), "3": nn.Linear(hidden, hidden)})

    def forward(self, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        inner, outer = self.net["0"], self.net["3"]
        return layout.dropout(outer(torch.relu(layout.dropout(inner(x)))))


class SASRecBlock(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.pre_ln = config.layer_norm == "pre"
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attention = CausalSelfAttention(hidden, config.num_heads)
        self.forward_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.feed_forward = PointWiseFeedForward(hidden)

    def forward(self, x: torch.Tensor, layout: Layout, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_ln:
            normed = self.attention_norm(x)
            x = x + layout.dropout(self.attention(normed, normed, layout, mask))
            return x + self.feed_forward(self.forward_norm(x), layout)
        queries = self.attention_norm(x)
        x = queries + layout.dropout(self.attention(queries, x, layout, mask))
        x = self.forward_norm(x)
        return x + self.feed_forward(x, layout)


class SASRec(SequentialRecommender):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden_size)
        nn.init.xavier_normal_(self.pos_emb.weight)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_blocks))
        self.last_norm = nn.LayerNorm(config.hidden_size, eps=1e-8)

    @property
    def input_scale(self) -> float:
        """The reference code scales the item embeddings by sqrt(d) before adding positions."""
        return math.sqrt(self.config.hidden_size)

    def dropout_width(self, length: int) -> int:
        # The embeddings'; per block the attention weights' (a query's H x L), the attention output's and
        # the feed-forward network's two.
        hidden, config = self.config.hidden_size, self.config
        assert config.num_blocks is not None and config.num_heads is not None  # build_model checks
        return hidden + config.num_blocks * (config.num_heads * length + 3 * hidden)

    def encode(self, seq_emb: torch.Tensor, layout: Layout) -> torch.Tensor:
        length = layout.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.config.max_len}")
        # Right-aligned positions: the last column is always position T - 1, whatever the batch width.
        positions = layout.pack(layout.columns() + (self.config.max_len - length))
        x = layout.dropout(layout.pack(seq_emb) * self.input_scale + self.pos_emb(positions))
        causal = torch.ones(length, length, dtype=torch.bool, device=seq_emb.device).tril()
        # Keys at padding are masked; every query still sees itself so padding rows stay finite (dropped).
        eye = torch.eye(length, dtype=torch.bool, device=seq_emb.device)
        mask = ((causal & layout.real.unsqueeze(1)) | eye).unsqueeze(1)
        for block in self.blocks:
            x = block(x, layout, mask)
        return layout.finish(self.last_norm(x))
