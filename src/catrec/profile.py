"""The perturbation profile: how a method spreads its perturbation of S over the positions of a sequence.

For the methods that perturb the sequence input S (``catrec.vocabulary.SEQUENCE_METHODS``) the perturbation
of a training batch, in the space of the network's input (the rows' perturbation times ``input_scale``), is
summarised as the mean vector norm at each position counted from the end of the sequence (1 = the last item;
batches are left-padded, so column -1 holds every user's last item) and the mean total norm of a batch's
perturbation. With equal budgets (issue 10) the total is epsilon for every method in the 'batch' norm scope;
adv_cas moves more of it to the last positions. Pure computation: ``catrec.stages.profile`` reads the model
and writes the CSV.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from catrec.adversarial import loss_terms
from catrec.training import Training


def input_space_perturbations(
    training: Training, batches: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(perturbation of S in the input space (B, L, d), real positions (B, L)) of the first ``batches``
    batches of an epoch of ``training``'s single run, on the CPU.

    The loss is evaluated as in training (its batches, negatives, dropout masks and noise drawn by the run's
    generators), so the perturbation is the one fine-tuning adds to these batches. Nothing is trained.
    """
    users, valid = training.epoch_inputs()
    for index in range(min(batches, len(users))):
        training.users.copy_(users[index])
        training.valid.copy_(valid[index])
        batch = training.batch()
        training.stack.draw(batch.seqs)
        terms = loss_terms(training.stack, batch, training.coefficients)
        if terms.perturbation is None:
            raise ValueError("this loss does not perturb the sequence input S")
        scaled = terms.perturbation[0].detach() * training.stack.input_scale
        yield scaled.cpu(), (batch.seqs[0] != 0).cpu()


def position_profile(
    perturbations: Sequence[torch.Tensor], reals: Sequence[torch.Tensor]
) -> list[dict[str, Any]]:
    """Rows ``position_from_end, mean_norm, total_norm`` of perturbations (B, L, d) with masks (B, L).

    ``mean_norm``: the mean of ||delta||_2 over d at that position, over every (batch, user) that has a real
    item there; ``total_norm``: the mean over batches of the norm of the batch's whole perturbation (real
    positions only), the same on every row. Positions no user has are left out.
    """
    if not perturbations or len(perturbations) != len(reals):
        raise ValueError("need one mask per perturbation, and at least one batch")
    width = max(perturbation.shape[1] for perturbation in perturbations)
    sums = torch.zeros(width, dtype=torch.float64)
    counts = torch.zeros(width, dtype=torch.float64)
    totals = []
    for perturbation, real in zip(perturbations, reals, strict=True):
        if perturbation.shape[:2] != real.shape:
            raise ValueError(
                f"perturbation {tuple(perturbation.shape)} does not match mask {tuple(real.shape)}"
            )
        real = real.bool()
        norms = torch.where(real, perturbation.double().norm(dim=-1), 0.0)
        columns = norms.shape[1]
        # Column -1 is position 1 from the end: flip so that index i is position i + 1.
        sums[:columns] += norms.sum(0).flip(0)
        counts[:columns] += real.sum(0).flip(0)
        totals.append(norms.square().sum().sqrt().item())
    total = sum(totals) / len(totals)
    return [
        {
            "position_from_end": index + 1,
            "mean_norm": (sums[index] / counts[index]).item(),
            "total_norm": total,
        }
        for index in range(width)
        if counts[index] > 0
    ]
