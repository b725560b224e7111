"""GRU4Rec (Hidasi et al., 2016) as used for next-item prediction: item embedding -> dropout -> GRU.

The GRU output at each position is the user representation w_i there. Left padding is removed before the
GRU (``Layout.recur``), so the hidden state starts at zero at each user's first real item and outputs do not
depend on the amount of padding; padding positions output zeros.
"""

from __future__ import annotations

import torch
from torch import nn

from catrec.models.base import ModelConfig, SequentialRecommender
from catrec.models.layout import Layout


class GRU4Rec(SequentialRecommender):
    # A stack runs one GRU per run (one cuDNN call each on CUDA): vmap has no batching rule for aten::gru.
    vectorizes = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.gru = nn.GRU(config.hidden_size, config.hidden_size, config.num_layers, batch_first=True)

    def dropout_width(self, length: int) -> int:
        return self.config.hidden_size  # the embedding dropout

    def encode(self, seq_emb: torch.Tensor, layout: Layout) -> torch.Tensor:
        x = layout.pad(layout.dropout(layout.pack(seq_emb)))
        return layout.recur(self.gru, x)
