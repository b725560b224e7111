"""Full-ranking metrics: hand-computed ranks, pessimistic ties, history exclusion in ``rank_users``."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import LastItemModel

from catrec.data.item_sets import ItemSets
from catrec.metrics import ndcg_hit_at_k, rank_users


def scores_with_target_at(rank: int, num_items: int = 30) -> torch.Tensor:
    """One row in which item 1 (the target) has exactly ``rank`` items above it (item 0 is excluded)."""
    scores = torch.arange(num_items + 1, 0, -1, dtype=torch.float32)  # item j scores num_items + 1 - j
    scores[0] = -torch.inf
    scores[1] = scores[rank + 1] - 0.5  # below the rank items 2..rank+1, above all others
    return scores.unsqueeze(0)


@pytest.mark.parametrize(
    ("rank", "ndcg", "hit"),
    [(0, 1.0, 1.0), (1, 1 / math.log2(3), 1.0), (9, 1 / math.log2(11), 1.0), (10, 0.0, 0.0), (25, 0.0, 0.0)],
)
def test_ndcg_hit_by_rank(rank: int, ndcg: float, hit: float) -> None:
    got_ndcg, got_hit = ndcg_hit_at_k(scores_with_target_at(rank), torch.tensor([1]), k=10)
    assert got_ndcg.item() == pytest.approx(ndcg)
    assert got_hit.item() == hit


def test_rows_are_independent_and_k_is_respected() -> None:
    scores = torch.cat([scores_with_target_at(0), scores_with_target_at(4), scores_with_target_at(12)])
    ndcg, hit = ndcg_hit_at_k(scores, torch.tensor([1, 1, 1]), k=5)
    assert ndcg.shape == hit.shape == (3,)
    assert hit.tolist() == [1.0, 1.0, 0.0]
    assert ndcg.tolist() == pytest.approx([1.0, 1 / math.log2(6), 0.0])


def test_ties_count_against_the_target() -> None:
    # The target (item 2) ties with items 1 and 3 and is beaten by item 4: rank 3, not 1.
    scores = torch.tensor([[-torch.inf, 5.0, 5.0, 5.0, 9.0, 1.0]])
    ndcg, hit = ndcg_hit_at_k(scores, torch.tensor([2]), k=10)
    assert ndcg.item() == pytest.approx(1 / math.log2(5))
    _, hit_at_3 = ndcg_hit_at_k(scores, torch.tensor([2]), k=3)
    assert hit.item() == 1.0 and hit_at_3.item() == 0.0


def test_constant_model_scores_zero() -> None:
    scores = torch.zeros(4, 51)
    scores[:, 0] = -torch.inf
    ndcg, hit = ndcg_hit_at_k(scores, torch.tensor([1, 7, 25, 50]))
    assert ndcg.sum().item() == 0.0 and hit.sum().item() == 0.0


def test_rank_users_excludes_history_but_never_the_target() -> None:
    # Item j has embedding j - 3.5 (padding 0 has 0), and the score of j is e_last * e_j.
    model = LastItemModel([0.0] + [j - 3.5 for j in range(1, 7)])
    inputs = torch.tensor(
        [
            [0, 0, 3, 6],  # after 6 the order is 6 > 5 > 4 > pad > 3 ...; 6 is history, so target 5 is first
            [0, 0, 5, 6],  # target 6 repeats a history item: it stays rankable and is first
            [0, 0, 0, 6],  # target 4 behind 5 (not in history): rank 1
            [0, 2, 3, 1],  # after 1, items 1 > 2 > 3 > pad > 4: history and padding out, target 4 first
        ]
    )
    targets = torch.tensor([5, 6, 4, 4])
    exclude = ItemSets.from_lists([[3, 6], [5, 6], [6], [1, 2, 3]])
    for batch_size in (1, 3, 1024):
        ndcg, hit = rank_users(model, inputs, targets, exclude, batch_size=batch_size, k=10)
        assert ndcg.tolist() == pytest.approx([1.0, 1.0, 1 / math.log2(3), 1.0])
        assert hit.tolist() == [1.0] * 4
    # Without the exclusions the history items win (padding stays out): the model really prefers them.
    ndcg, _ = rank_users(model, inputs, targets, ItemSets.from_lists([[]] * 4), k=10)
    assert ndcg.tolist() == pytest.approx([1 / math.log2(3), 1.0, 1 / math.log2(4), 1 / math.log2(5)])


def test_rank_users_restores_training_mode() -> None:
    model = LastItemModel([0.0, 1.0, 2.0]).train()
    rank_users(model, torch.tensor([[1]]), torch.tensor([2]), ItemSets.from_lists([[]]))
    assert model.training


def test_matches_a_full_sort_on_random_scores_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 40, (200, 61), generator=generator).float()  # many ties
    scores[:, 0] = -torch.inf
    targets = torch.randint(1, 61, (200,), generator=generator)
    target_scores = scores.gather(1, targets.unsqueeze(1))
    rank = (scores >= target_scores).sum(1) - 1
    for k in (1, 5, 10, 60, 100):
        ndcg, hit = ndcg_hit_at_k(scores, targets, k=k)
        assert torch.equal(hit, (rank < k).float())
        torch.testing.assert_close(ndcg, torch.where(rank < k, 1 / torch.log2(rank + 2.0), 0.0))


def test_nan_scores_count_against_the_target() -> None:
    scores = torch.tensor([[-torch.inf, torch.nan, 1.0, 0.0], [-torch.inf, 3.0, torch.nan, 0.0]])
    ndcg, hit = ndcg_hit_at_k(scores, torch.tensor([2, 2]), k=1)
    assert hit.tolist() == [0.0, 0.0]
    ndcg, hit = ndcg_hit_at_k(scores, torch.tensor([2, 2]), k=2)
    assert hit.tolist() == [1.0, 0.0] and ndcg[0].item() == pytest.approx(1 / math.log2(3))


def test_default_cutoff_is_10_and_results_keep_the_scores_dtype() -> None:
    # NDCG@10 and Hit@10 (section 5.4) unless told otherwise: rank 9 counts, rank 10 does not.
    scores = torch.cat([scores_with_target_at(9), scores_with_target_at(10)]).double()
    ndcg, hit = ndcg_hit_at_k(scores, torch.tensor([1, 1]))
    assert hit.tolist() == [1.0, 0.0] and ndcg.tolist() == pytest.approx([1 / math.log2(11), 0.0])
    assert ndcg.dtype == hit.dtype == torch.float64
