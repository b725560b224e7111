"""Item-replacement attacks of section 5.6: replace real items of each user's test input, rank again.

The gradient attack is white-box: the loss is the positive term of the BCE of Eq. 3.5 on the ground-truth
test item at the last position, -log sigma(w_T^T e_target); its gradient g with respect to the embedding e of
each chosen item gives the stepped embedding e' = e + step_size * ||e|| * g / ||g||, and the chosen item is
replaced by the real item nearest to e' (cosine or l2). The random baseline replaces the same positions by
uniformly drawn items. Replacements are never padding, the target, or an item already in the user's history
(the input window included, so never the original either), and the items put into one sequence are distinct.

Metrics under attack use the full-ranking protocol of ``catrec.metrics.rank_users``, excluding the perturbed
history (the replaced items swapped for their replacements). Each user's metrics are kept (``attack_users``),
so that robustness tests can pair users; the attacks CSV's rows are their means (``attack_rows``).
docs/reproduction-notes.md explains each choice. Pure computation: the ``attack`` stage
(``catrec.stages.attack``) reads and writes the files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from catrec.data.item_sets import ItemSets
from catrec.errors import CatrecError
from catrec.metrics import rank_users
from catrec.models import SequentialRecommender
from catrec.models.layout import Packed
from catrec.vocabulary import METRICS

POSITIONS = ("first", "middle", "last")
DISTANCES = ("cosine", "l2")
MULTI_MODES = ("joint", "greedy")
ATTACKS = ("gradient", "random")
# Users per attack batch: the (batch, num_items + 1) candidate matrices and the backward pass bound memory.
BATCH_SIZE = 512

# pick(rows, columns, banned) -> replacement item per row; ``rows``/``columns`` index the positions replaced
# in this step (one per user) and ``banned`` (len(rows), num_items + 1) marks the inadmissible items.
Picker = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttackConfig:
    positions: tuple[str, ...]
    max_k: int
    distance: str
    step_size: float
    multi: str
    random_seed: int

    def settings(self) -> list[tuple[str, int]]:
        """(position, k) pairs: each single position with k = 1, then the last K items for K = 0..max_k."""
        return [(position, 1) for position in self.positions] + [("last_k", k) for k in range(self.max_k + 1)]


def choose_positions(inputs: torch.Tensor, position: str, k: int = 1) -> torch.Tensor:
    """Mask (m, L) of the items of ``inputs`` (m, L; 0 = padding) to replace.

    ``first``/``middle``/``last`` pick one real item (k must be 1): the oldest, the one at index (n - 1) // 2
    among the n real items (oldest = 0), or the most recent. ``last_k`` picks the k most recent real items
    (all of them when the user has fewer). Padding is never chosen.
    """
    real = inputs != 0
    # Index of each real item among the user's real items; counting rather than assuming left padding keeps
    # the rule right for any padding layout.
    index = real.long().cumsum(1) - 1
    count = real.sum(1, keepdim=True)
    if position == "last_k":
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        chosen = index >= count - k
    elif position in POSITIONS:
        if k != 1:
            raise ValueError(f"position '{position}' replaces exactly one item, got k={k}")
        wanted = {"first": torch.zeros_like(count), "middle": (count - 1) // 2, "last": count - 1}[position]
        chosen = index == wanted
    else:
        raise ValueError(f"unknown position '{position}' (expected one of {(*POSITIONS, 'last_k')})")
    return real & chosen


def banned_items(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    history: tuple[torch.Tensor, torch.Tensor],
    num_items: int,
) -> torch.Tensor:
    """(m, num_items + 1) mask of inadmissible replacements: padding, the target, the history, the input.

    ``history`` is the (row, item) pairs of the rows' histories (``ItemSets.pairs``).
    """
    banned = torch.zeros(len(inputs), num_items + 1, dtype=torch.bool, device=inputs.device)
    banned[:, 0] = True
    rows, items = history
    banned[rows.to(inputs.device), items.to(inputs.device)] = True
    banned.scatter_(1, inputs, True)
    banned.scatter_(1, targets.unsqueeze(1), True)
    return banned


def nearest_items(
    queries: torch.Tensor, table: torch.Tensor, banned: torch.Tensor, distance: str
) -> torch.Tensor:
    """Id of the admissible row of ``table`` (num_items + 1, d) nearest to each of ``queries`` (m, d).

    ``cosine`` maximises cos(q, e_j); ``l2`` minimises ||q - e_j||. Rows of ``banned`` (m, num_items + 1)
    mark the ids that may not be returned.
    """
    if distance == "cosine":
        closeness = F.normalize(queries, dim=-1) @ F.normalize(table, dim=-1).T
    elif distance == "l2":
        # -||q - e||^2 without the ||q||^2 term, which is the same for every candidate of a row.
        closeness = 2 * queries @ table.T - (table * table).sum(-1)
    else:
        raise ValueError(f"unknown distance '{distance}' (expected one of {DISTANCES})")
    return _best_admissible(closeness, banned)


def _best_admissible(closeness: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
    closeness = closeness.masked_fill(banned, -torch.inf)
    best, index = closeness.max(1)
    if bool((best == -torch.inf).any()):
        raise CatrecError("a user's history covers every item: no admissible replacement is left")
    return index


def _ordered_columns(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns of the True entries of ``mask`` (m, L), most recent first: (m, K) columns, (m, K) validity."""
    count = mask.sum(1)
    width = int(count.max()) if len(mask) else 0
    # 0 for the last chosen column of a row, 1 for the one before, ...
    from_right = mask.flip(1).long().cumsum(1).flip(1) - 1
    steps = torch.arange(width, device=mask.device)
    matches = mask.unsqueeze(1) & (from_right.unsqueeze(1) == steps.view(1, -1, 1))
    return matches.long().argmax(2), steps.unsqueeze(0) < count.unsqueeze(1)


def _replace_in_order(seqs: torch.Tensor, mask: torch.Tensor, banned: torch.Tensor, pick: Picker) -> None:
    """Replace the items of ``seqs`` at ``mask`` in place, one position per user and step, most recent first.

    Each replacement is banned for the user's later steps, so the new items are distinct; when two positions
    would take the same item, the more recent keeps it and the other takes its next choice.
    """
    columns, valid = _ordered_columns(mask)
    for step in range(columns.shape[1]):
        rows = valid[:, step].nonzero().squeeze(1)
        step_columns = columns[rows, step]
        new = pick(rows, step_columns, banned[rows])
        seqs[rows, step_columns] = new
        banned[rows, new] = True


@contextmanager
def _eval_mode(model: SequentialRecommender) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _batches(inputs: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, int]]:
    """(users, width): users of similar length share a batch, trimmed to their longest real sequence."""
    lengths = (inputs != 0).sum(1)
    order = torch.argsort(lengths, stable=True)
    for start in range(0, len(order), batch_size):
        users = order[start : start + batch_size]
        yield users, max(1, int(lengths[users].max()))


def target_loss_gradient(
    model: SequentialRecommender, seqs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence embeddings S (B, L, d) of ``seqs`` and the gradient of sum_i -log sigma(w_T^T e_target) on S.

    Each user's loss depends on its own row only, so the summed loss gives every user its own gradient.
    """
    seq_emb = model.item_emb(seqs).detach().requires_grad_(True)
    # cuDNN's RNN backward refuses eval mode; the native kernels compute the same gradient.
    with torch.backends.cudnn.flags(enabled=False):
        reps = model.encode(seq_emb, Packed(seqs))[:, -1]
        loss = -F.logsigmoid(model.score(reps, targets)).sum()
        (grad,) = torch.autograd.grad(loss, seq_emb)
    return seq_emb.detach(), grad


def stepped_embeddings(emb: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
    """e' = e + step_size * ||e|| * g / ||g|| for rows of ``emb`` and ``grad`` (..., d)."""
    direction = grad / grad.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
    return emb + step_size * emb.norm(dim=-1, keepdim=True) * direction


def gradient_replacements(
    model: SequentialRecommender,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    exclude: ItemSets,
    mask: torch.Tensor,
    *,
    step_size: float,
    distance: str,
    multi: str,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """``inputs`` (m, L) with the items at ``mask`` replaced by the gradient attack; returned on the CPU.

    ``multi``: ``joint`` replaces all positions of a user from one gradient of the clean sequence;
    ``greedy`` replaces one position at a time (most recent first), recomputing the gradient on the sequence
    as replaced so far.
    """
    if multi not in MULTI_MODES:
        raise ValueError(f"unknown multi mode '{multi}' (expected one of {MULTI_MODES})")
    device = next(model.parameters()).device
    perturbed = inputs.clone()
    with _eval_mode(model):
        for users, width in _batches(inputs, batch_size):
            seqs = inputs[users, -width:].to(device)
            _gradient_batch(
                model,
                seqs,
                targets[users].to(device),
                exclude.pairs(users),
                mask[users, -width:].to(device),
                step_size=step_size,
                distance=distance,
                multi=multi,
            )
            perturbed[users, -width:] = seqs.cpu()
    return perturbed


def _gradient_batch(
    model: SequentialRecommender,
    seqs: torch.Tensor,
    targets: torch.Tensor,
    history: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    *,
    step_size: float,
    distance: str,
    multi: str,
) -> None:
    """The gradient attack on one batch, replacing the items of ``seqs`` in place."""
    table = model.item_emb.weight.detach()
    banned = banned_items(seqs, targets, history, table.shape[0] - 1)
    clean = target_loss_gradient(model, seqs, targets) if multi == "joint" else None

    def pick(rows: torch.Tensor, columns: torch.Tensor, row_banned: torch.Tensor) -> torch.Tensor:
        if clean is None:
            # Greedy: the gradient of the sequence as replaced so far; the position itself is still original.
            emb, grad = target_loss_gradient(model, seqs[rows], targets[rows])
            grad_rows = torch.arange(len(rows), device=seqs.device)
        else:
            emb, grad = clean
            grad_rows = rows
        queries = stepped_embeddings(emb[grad_rows, columns], grad[grad_rows, columns], step_size)
        return nearest_items(queries, table, row_banned, distance)

    _replace_in_order(seqs, mask, banned, pick)


def random_replacements(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    exclude: ItemSets,
    mask: torch.Tensor,
    *,
    num_items: int,
    generator: torch.Generator,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """``inputs`` (m, L) with the items at ``mask`` replaced by uniformly drawn admissible items (CPU)."""
    perturbed = inputs.clone()

    def pick(rows: torch.Tensor, columns: torch.Tensor, row_banned: torch.Tensor) -> torch.Tensor:
        # The argmax of i.i.d. uniform noise over the admissible items is a uniform draw among them.
        return _best_admissible(torch.rand(row_banned.shape, generator=generator), row_banned)

    for users, width in _batches(inputs, batch_size):
        seqs = inputs[users, -width:]
        banned = banned_items(seqs, targets[users], exclude.pairs(users), num_items)
        _replace_in_order(seqs, mask[users, -width:], banned, pick)
        perturbed[users, -width:] = seqs
    return perturbed


def perturbed_history(exclude: ItemSets, inputs: torch.Tensor, perturbed: torch.Tensor) -> ItemSets:
    """``exclude`` with one occurrence of each replaced item of ``inputs`` swapped for its replacement.

    The input window is the tail of the history, so every replaced item occurs in its user's list; the first
    occurrence is swapped, and an item that also occurs elsewhere stays excluded through that other one.
    """
    items = exclude.items.clone()
    columns, valid = _ordered_columns(inputs != perturbed)
    for step in range(columns.shape[1]):
        users = valid[:, step].nonzero().squeeze(1)
        old = inputs[users, columns[users, step]]
        rows, positions = exclude.positions(users)
        matches = items[positions] == old[rows]
        # The first matching position of each user (len(items) where none matches).
        first = torch.full((len(users),), len(items), dtype=torch.int64)
        first.scatter_reduce_(0, rows[matches], positions[matches], reduce="amin")
        if bool((first == len(items)).any()):
            raise ValueError("exclude must contain every item of the input window")
        items[first] = perturbed[users, columns[users, step]]
    return ItemSets(offsets=exclude.offsets, items=items)


@dataclass(frozen=True)
class UserMetrics:
    """Each user's NDCG@10 and HT@10: (m,) float32 tensors on the CPU, in the order of the inputs."""

    ndcg: torch.Tensor
    hit: torch.Tensor

    def by_metric(self) -> dict[str, torch.Tensor]:
        return dict(zip(METRICS, (self.ndcg, self.hit), strict=True))

    def means(self) -> dict[str, float]:
        """The mean over users of each metric."""
        # In float64, as ``catrec.trainer.evaluate``: the clean means then equal the metrics JSON exactly.
        return {metric: values.double().mean().item() for metric, values in self.by_metric().items()}


def user_metrics(
    model: SequentialRecommender,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    exclude: ItemSets,
    perturbed: torch.Tensor,
) -> UserMetrics:
    """Each user's metrics, ranking after ``perturbed`` and excluding the perturbed history."""
    ndcg, hit = rank_users(model, perturbed, targets, perturbed_history(exclude, inputs, perturbed), k=10)
    return UserMetrics(ndcg=ndcg, hit=hit)


@dataclass(frozen=True)
class AttackResults:
    """Each user's metrics on the clean inputs and under each (attack, position, k) setting, in the order of
    ``ATTACKS`` x ``AttackConfig.settings()``."""

    clean: UserMetrics
    attacked: dict[tuple[str, str, int], UserMetrics]


def attack_users(
    model: SequentialRecommender,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    exclude: ItemSets,
    config: AttackConfig,
) -> AttackResults:
    """Run every attack setting of ``config`` against ``model`` on the users of ``inputs``."""
    clean = user_metrics(model, inputs, targets, exclude, inputs)
    settings = [(attack, position, k) for attack in ATTACKS for position, k in config.settings()]
    attacked = {}
    for attack, position, k in tqdm(settings, desc="attacks", unit="setting", disable=None):
        mask = choose_positions(inputs, position, k)
        if attack == "gradient":
            perturbed = gradient_replacements(
                model,
                inputs,
                targets,
                exclude,
                mask,
                step_size=config.step_size,
                distance=config.distance,
                multi=config.multi,
            )
        else:
            # A fresh generator per setting: each setting's draw is reproducible on its own.
            generator = torch.Generator().manual_seed(config.random_seed)
            perturbed = random_replacements(
                inputs, targets, exclude, mask, num_items=model.config.num_items, generator=generator
            )
        attacked[attack, position, k] = user_metrics(model, inputs, targets, exclude, perturbed)
    return AttackResults(clean=clean, attacked=attacked)


def attack_rows(results: AttackResults) -> list[dict[str, Any]]:
    """One row per (attack, position, k) with the mean metrics under attack, the clean ones and the drops."""
    clean = results.clean.means()
    rows = []
    for (attack, position, k), metrics in results.attacked.items():
        attacked = metrics.means()
        row: dict[str, Any] = {"attack": attack, "position": position, "k": k, **attacked}
        for metric in METRICS:
            drop = clean[metric] - attacked[metric]
            row[f"clean_{metric}"] = clean[metric]
            row[f"drop_{metric}"] = drop
            row[f"drop_{metric}_pct"] = drop_percent(drop, clean[metric])
        rows.append(row)
    return rows


def drop_percent(drop: float, clean: float) -> float:
    """``drop`` in percent of ``clean``; NaN where the clean metric is 0 (an untrained model's HT@10)."""
    return 100.0 * drop / clean if clean else math.nan
