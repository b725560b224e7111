"""The BCE loss of Eq. 3.5 on the scores of Eq. 3.4, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import LastItemModel, stack_loss

from catrec.data.batches import Batch
from catrec.losses import bce_from_scores


def test_eq_3_5_one_real_position_by_hand() -> None:
    # -(log s(2) + log(1 - s(-1))) at the one position of the mask; NaN and inf at padding reach nothing.
    pos = torch.tensor([[torch.nan, 2.0]])
    neg = torch.tensor([[torch.inf, -1.0]])
    loss = bce_from_scores(pos, neg, torch.tensor([[False, True]]))
    sigmoid = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))
    assert loss.item() == pytest.approx(-(math.log(sigmoid[0]) + math.log(1 - sigmoid[1])))


def test_eq_3_5_is_the_mean_over_real_positions() -> None:
    # Scores 0: each real position costs 2 log 2; three real positions of four, so the mean is 2 log 2.
    scores = torch.zeros(2, 2, dtype=torch.float64)
    mask = torch.tensor([[True, False], [True, True]])
    assert bce_from_scores(scores, scores, mask).item() == pytest.approx(2 * math.log(2))
    assert bce_from_scores(scores, scores, torch.zeros_like(mask)).item() == 0.0


def test_eq_3_4_3_5_bce_loss_of_a_model_by_hand() -> None:
    # f(S) = S (LastItemModel): w = e_1 = (1, 0) scores e_2 = (2, 0) as 2 and e_3 = (0, 1) as 0.
    model = LastItemModel([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    batch = Batch(
        users=torch.tensor([0]),
        seqs=torch.tensor([[0, 1]]),
        pos=torch.tensor([[0, 2]]),
        neg=torch.tensor([[0, 3]]),
    )
    expected = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(0.5))
    # The clean loss L_B of a training step (the method-free loss of pretraining), on a stack of one.
    _, terms, total = stack_loss(model, batch)
    assert terms.clean.item() == pytest.approx(expected)
    assert total.item() == pytest.approx(expected)
