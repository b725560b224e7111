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

    The items ``exclude`` lists for a user (kept on the host) and the padding item are ranked last, except
    the user's own target, which always competes. Results are on the CPU, in the original user order, read
    back from the model's device once.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # Users of similar length share a batch, so each batch is trimmed to few columns; on the device (the
    # static engine's data), reading a batch's width would stop the device each batch: it keeps all T, and
    # the users stay in order. Either way the order lives on the host, where ``exclude`` is.
    trim = inputs.device.type == "cpu"
    if trim:
        lengths = (inputs != 0).sum(1)
        order = torch.argsort(lengths, stable=True)
    else:
        order = torch.arange(len(targets))
    ndcg = torch.empty(len(targets), device=device)
    hit = torch.empty(len(targets), device=device)
    try:
        for start in range(0, len(order), batch_size):
            users = order[start : start + batch_size]
            width = max(1, int(lengths[users].max())) if trim else inputs.shape[1]
            on_inputs = users.to(inputs.device)
            seqs = inputs[on_inputs, -width:].to(device)
            batch_targets = targets[on_inputs].to(device)
            scores = model.score_all(model(seqs)[:, -1])
            target_scores = scores.gather(1, batch_targets.unsqueeze(1))
            scores[:, 0] = -torch.inf
            rows, items = exclude.pairs(users)
            scores[rows.to(device), items.to(device)] = -torch.inf
            scores.scatter_(1, batch_targets.unsqueeze(1), target_scores)
            batch_ndcg, batch_hit = ndcg_hit_at_k(scores, batch_targets, k)
            ndcg[users.to(device)] = batch_ndcg.float()
            hit[users.to(device)] = batch_hit.float()
    finally:
        model.train(was_training)
    ndcg, hit = torch.stack((ndcg, hit)).cpu()
    return ndcg, hit
