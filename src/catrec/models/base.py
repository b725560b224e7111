"""The interface every sequential recommender implements, and a model's architecture (``ModelConfig``).

Split from ``catrec.models`` so that the model files import it without importing the package that imports
them: ``models/`` has no import circle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from catrec.models.layout import Layout, Packed


@dataclass(frozen=True)
class ModelConfig:
    """A model's architecture, saved with its weights. Values come from the config's ``model:`` section.

    The keys of the other model stay None (``MODEL_KEYS_OF`` says which keys each model reads).
    """

    name: str  # sasrec | gru4rec
    num_items: int  # n; item ids are 1..n, 0 is padding
    max_len: int  # T
    hidden_size: int
    dropout: float
    num_blocks: int | None = None  # SASRec
    num_heads: int | None = None  # SASRec
    layer_norm: str | None = None  # SASRec: pre | original
    num_layers: int | None = None  # GRU4Rec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SequentialRecommender(nn.Module):
    """Base class: item embedding E with padding row 0, scoring by inner product."""

    # Whether ``torch.func.vmap`` runs ``encode`` for a stack of runs (GRU4Rec's nn.GRU has no batching rule).
    vectorizes = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        # Xavier-normal as in the reference SASRec/GRU4Rec code; nn.Embedding's N(0, 1) makes the initial
        # scores w^T e so large that the first epochs are spent shrinking the table.
        with torch.no_grad():
            nn.init.xavier_normal_(self.item_emb.weight)
            self.item_emb.weight[0].zero_()

    @property
    def input_scale(self) -> float:
        """The factor between the embedding rows E[seqs] and the tensor the sequence network takes in."""
        return 1.0

    def dropout_width(self, length: int) -> int:
        """The dropout numbers one pass draws per position of a batch of width ``length``
        (``catrec.models.layout.StepMasks``)."""
        raise NotImplementedError

    def encode(self, seq_emb: torch.Tensor, layout: Layout) -> torch.Tensor:
        """f(S; theta) of Eq. 3.3: (B, L, d) sequence embeddings -> (B, L, d) user representations, 0 at
        padding, computed in ``layout`` (built from the item ids behind ``seq_emb``, with the step's dropout
        masks in training)."""
        raise NotImplementedError

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """The representations of (B, L) item ids without dropout (evaluation, attacks)."""
        return self.encode(self.item_emb(seqs), Packed(seqs))

    def score(self, reps: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """r_ij = w_i^T e_j (Eq. 3.4) for aligned ``reps`` (..., d) and ``items`` (...)."""
        return (reps * self.item_emb(items)).sum(-1)

    def score_all(self, reps: torch.Tensor) -> torch.Tensor:
        """Scores of every item id (padding column 0 included) for (B, d) representations -> (B, n + 1)."""
        return reps @ self.item_emb.weight.T
