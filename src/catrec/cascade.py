"""The cascade matrix C of Eq. 4.11 and the perturbation factors 1/C of Eq. 4.6.

C(i, t) counts how many training signals the interaction (user i, column t) influences: the later items of
the same sequence (temporal term) and, with probability b/m of sharing a batch, every occurrence of the same
item in other users' sequences (cross term). Cascade-guided adversarial training scales the perturbation of
each sequence embedding by 1/C, within the same total budget epsilon as adv_global (section 5.5).
Pure computation: the ``cascade`` stage (``catrec.stages.cascade``) reads and writes the files.
"""

from __future__ import annotations

import torch

from catrec.vocabulary import CASCADE_TERMS


def cascade_matrix(seqs: torch.Tensor, batch_size: int, terms: str = "both") -> torch.Tensor:
    """The cascade effects C (Eq. 4.11) of every interaction in the training inputs.

    ``seqs`` (m, T) are the training inputs exactly as fed to the model: left-padded with 0, the most recent
    item in the last column (t = T). For a real item v_i^t at 1-based column t::

        C(i, t) = 1 + T - t + (b / m) * sum_{k != i} sum_l (1 + T - l) * 1[v_i^t = v_k^l]

    with b = ``batch_size`` and m the number of users. ``terms="temporal"`` keeps only 1 + T - t,
    ``terms="cross"`` only 1 + the scaled cross-sequence sum (the ablation of section 4.2). Padding is 0.

    Cost is O(interactions): the weighted count of each item over all users is accumulated once, and each
    user's own occurrences of the item (repeats included) are subtracted, instead of comparing user pairs.
    """
    if terms not in CASCADE_TERMS:
        raise ValueError(f"unknown cascade terms '{terms}' (expected one of {CASCADE_TERMS})")
    if seqs.dim() != 2:
        raise ValueError(f"expected an (m, T) matrix of item ids, got shape {tuple(seqs.shape)}")
    users, length = seqs.shape
    real = seqs != 0
    # float64 keeps the (integer) per-item sums exact before the b/m scaling, whatever the dataset size.
    recency = torch.arange(length, 0, -1, dtype=torch.float64, device=seqs.device)  # 1 + T - t, t = 1..T
    rows, columns = real.nonzero(as_tuple=True)
    items = seqs[rows, columns]
    weights = recency[columns]

    temporal = weights if terms != "cross" else torch.ones_like(weights)
    if terms == "temporal":
        values = temporal
    else:
        num_ids = int(seqs.max()) + 1
        item_total = weights.new_zeros(num_ids).scatter_add_(0, items, weights)
        # One key per (user, item): the same item may occur several times in one user's sequence.
        keys = rows * num_ids + items
        unique_keys, key_index = torch.unique(keys, return_inverse=True)
        own_total = weights.new_zeros(len(unique_keys)).scatter_add_(0, key_index, weights)
        cross = item_total[items] - own_total[key_index]
        values = temporal + (batch_size / users) * cross

    result = torch.zeros(users, length, dtype=torch.float32, device=seqs.device)
    result[rows, columns] = values.to(torch.float32)
    return result


def perturbation_factors(cascade_rows: torch.Tensor, real_mask: torch.Tensor) -> torch.Tensor:
    """Factors 1/C of Eq. 4.6 at real positions, 0 at padding.

    Only their ratios matter: the level-1 step is normalised to norm epsilon after the factors reweight the
    gradient (``catrec.adversarial``), which is how "the total magnitudes of added perturbations are the same
    for all the baselines" (section 5.5) holds exactly, batch by batch, whatever the mean of 1/C.
    """
    return torch.where(real_mask, cascade_rows.reciprocal(), torch.zeros_like(cascade_rows))
