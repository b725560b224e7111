"""Training batches: users, their inputs, the next items (positives) and one sampled negative per position.

Batches keep only their last L columns (all-padding columns dropped), which the models support
(``catrec.models``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch

from catrec.data.sequences import SequenceData


@dataclass
class Batch:
    """Users (B,) and their last L columns of inputs, next items (positives) and negatives, all (B, L)."""

    users: torch.Tensor
    seqs: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{field.name: getattr(self, field.name).to(device) for field in fields(self)})


def num_batches(data: SequenceData, batch_size: int) -> int:
    return math.ceil(data.num_users / batch_size)


def iterate_batches(
    data: SequenceData, batch_size: int, generator: torch.Generator, bucket_by_length: bool
) -> Iterator[Batch]:
    """One epoch of training batches, with one fresh negative per real position (0 at padding).

    Batches are random draws of users, as the reference SASRec sampler's. With ``bucket_by_length`` users of
    similar length share a batch instead (ties in random order, batches in random order): faster, but it
    changes what a batch averages over (docs/reproduction-notes.md). Either way a batch keeps only as many
    columns as its longest sequence: the models do not depend on left padding, so this is the same math.
    """
    inputs, targets = data.train_inputs(), data.train_targets()
    lengths = (inputs != 0).sum(1)
    order = torch.randperm(data.num_users, generator=generator)
    if bucket_by_length:
        order = order[torch.argsort(lengths[order], stable=True)]
    chunks = order.split(batch_size)
    if bucket_by_length:
        chunks = [chunks[index] for index in torch.randperm(len(chunks), generator=generator).tolist()]
    for users in chunks:
        width = max(1, int(lengths[users].max()))
        pos = targets[users, -width:]
        neg = data.sample_negatives(users, width, generator) * (pos != 0)
        yield Batch(users=users, seqs=inputs[users, -width:], pos=pos, neg=neg)
