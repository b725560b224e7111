"""Ranking metrics over the full item set (section 5.4): no sampled negatives, history items excluded.

The rank of the target counts every item that scores strictly higher plus every *other* item that scores
equal (pessimistic ties), so a model that scores all items alike cannot look good by the accident of ties.
"""

from __future__ import annotations

import torch

from catrec.data.item_sets import ItemSets
from catrec.models import SequentialRecommender


def ndcg_hit_at_k(
    scores: torch.Tensor, targets: torch.Tensor, k: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (NDCG@k, Hit@k) of ``targets`` (n,) in ``scores`` (n, num_items + 1).

    The caller has already set excluded items to -inf. Rank 0 is the top of the list.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))
    # Only ranks below k matter, and the target has rank >= k exactly when the (k+1)-th best score is not
    # below its own; so counting within the top k+1 scores gives min(rank, k), far cheaper than comparing all
    # items. "Not strictly lower" counts higher and equal scores (the target's own, hence -1) and is
    # pessimistic for NaN too: topk puts NaN first, so a NaN competitor ranks above and a NaN target misses.
    top = scores.topk(min(k + 1, scores.shape[1]), dim=1).values
    rank = (~(top < target_scores)).sum(1) - 1
    hit = (rank < k).to(scores.dtype)
    return hit / torch.log2(rank.to(scores.dtype) + 2.0), hit


@torch.no_grad()
def rank_users(
    model: SequentialRecommender,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    exclude: ItemSets,
    batch_size: int = 1024,
    k: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user (NDCG@k, Hit@k) of ``targets`` (m,) ranked over all items after left-padded ``inputs`` (m, L).

    The items ``exclude`` lists for a user and the padding item are ranked last, except the user's own
    target, which always competes. Results are on the CPU, in the original user order.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = (inputs != 0).sum(1)
    # Users of similar length share a batch, so each batch is trimmed to few columns.
    order = torch.argsort(lengths, stable=True)
    ndcg = torch.empty(len(targets))
    hit = torch.empty(len(targets))
    try:
        for start in range(0, len(order), batch_size):
            users = order[start : start + batch_size]
            width = max(1, int(lengths[users].max()))
            seqs = inputs[users, -width:].to(device)
            batch_targets = targets[users].to(device)
            scores = model.score_all(model(seqs)[:, -1])
            target_scores = scores.gather(1, batch_targets.unsqueeze(1))
            scores[:, 0] = -torch.inf
            rows, items = exclude.pairs(users)
            scores[rows.to(device), items.to(device)] = -torch.inf
            scores.scatter_(1, batch_targets.unsqueeze(1), target_scores)
            batch_ndcg, batch_hit = ndcg_hit_at_k(scores, batch_targets, k)
            ndcg[users] = batch_ndcg.float().cpu()
            hit[users] = batch_hit.float().cpu()
    finally:
        model.train(was_training)
    return ndcg, hit
