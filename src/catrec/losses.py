"""The BCE loss of Eq. 3.5 on the scores of Eq. 3.4: pretraining's loss and every method's clean term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_from_scores(pos_scores: torch.Tensor, neg_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 3.5 with one negative, -(log sigma(r_pos) + log(1 - sigma(r_neg))), averaged over ``mask`` True.

    Scores (B, L) give one loss; (K, B, L), the scores of K stacked runs (``catrec.models.stack``), one per
    run, each averaged over its own positions. log(1 - sigma(x)) = log sigma(-x); logsigmoid stays finite
    for large scores. Scores at padding are replaced (not multiplied by 0) before the loss, so even inf or
    NaN there reach neither loss nor gradient.
    """
    zero = torch.zeros((), dtype=pos_scores.dtype, device=pos_scores.device)
    losses = -(
        F.logsigmoid(torch.where(mask, pos_scores, zero)) + F.logsigmoid(-torch.where(mask, neg_scores, zero))
    )
    positions = tuple(range(-min(mask.dim(), 2), 0))  # the last two dimensions: one run's (B, L)
    return (losses * mask).sum(positions) / mask.sum(positions).clamp(min=1)
