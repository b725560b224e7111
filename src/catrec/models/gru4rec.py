"""GRU4Rec (Hidasi et al., 2016) as used for next-item prediction: item embedding -> dropout -> GRU.

The GRU output at each position is the user representation w_i there. Left padding is removed before the
GRU, so the hidden state starts at zero at each user's first real item and outputs do not depend on the
amount of padding; padding positions output zeros. The eager layout packs the left-aligned rows
(``pack_padded_sequence``, which reads the lengths on the host); the static layout runs the GRU over the
whole left-aligned rows: a GRU is causal, so its outputs at a row's real positions, which come first, are
the same, and the outputs after them are masked.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from catrec.models import ModelConfig, SequentialRecommender
from catrec.models.dropout import Dropout


def _roll_rows(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Roll each row of (B, L, ...) ``x`` left by ``shifts[b]`` columns (circularly)."""
    length = x.shape[1]
    index = (torch.arange(length, device=x.device).unsqueeze(0) + shifts.unsqueeze(1)) % length
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class GRU4Rec(SequentialRecommender):
    # A stack runs one GRU per run (one cuDNN call each on CUDA): vmap has no batching rule for aten::gru.
    vectorizes = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.emb_dropout = Dropout(config.dropout)
        self.gru = nn.GRU(config.hidden_size, config.hidden_size, config.num_layers, batch_first=True)

    def encode(self, seq_emb: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        length = seqs.shape[1]
        real = seqs != 0
        lengths = real.sum(1)
        padding = length - lengths
        x = self.emb_dropout(seq_emb)
        left_aligned = _roll_rows(x, padding)
        if self.dropout_masks is not None:
            output, _ = self.gru(left_aligned)
            return torch.where(real.unsqueeze(-1), _roll_rows(output, lengths % length), 0.0)
        packed = pack_padded_sequence(
            left_aligned, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        output, _ = self.gru(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=length)
        return _roll_rows(output, (length - padding) % length) * (seqs != 0).unsqueeze(-1)
