"""Training batches: users, their inputs, the next items (positives) and one sampled negative per position.

The eager engine's batches (``iterate_batches``) keep only their last L columns (all-padding columns
dropped), which the models support (``catrec.models``); the static engine's (``StaticBatches``) have one
fixed shape and are built on the training device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch

from catrec.data.sequences import SequenceData


@dataclass
class Batch:
    """Users (B,) and their last L columns of inputs, next items (positives) and negatives, all (B, L).

    A stack of K runs (``catrec.models.stack``) trains on batches with a leading run dimension: (K, B),
    (K, B, L).
    """

    users: torch.Tensor
    seqs: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{field.name: getattr(self, field.name).to(device) for field in fields(self)})

    def run(self, index: int) -> Batch:
        """Run ``index``'s batch of a stack's batch (every field with a leading run dimension K)."""
        return Batch(**{field.name: getattr(self, field.name)[index] for field in fields(self)})


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


class StaticBatches:
    """The static engine's batches: each of one shape (batch_size, T), built on the data's device.

    An epoch's users come from one permutation drawn on the device; the last batch is filled up with rows
    marked invalid (user 0 with every input, positive and negative set to 0, i.e. padding), which weigh
    nothing in any loss, FGSM norm or metric. Columns are never trimmed (the models do not depend on left
    padding). Negatives are drawn as ``iterate_batches`` draws them, by the device generator passed in.
    """

    def __init__(self, data: SequenceData, batch_size: int) -> None:
        self.data, self.batch_size = data, batch_size
        self._lengths = (data.train_inputs() != 0).sum(1)

    def epoch(self, generator: torch.Generator, bucket_by_length: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch's users (num_batches, batch_size) and which of them are real (same shape, bool).

        As ``iterate_batches``: random users or, with ``bucket_by_length``, users of similar length together.
        """
        num_users, device = self.data.num_users, self._lengths.device
        order = torch.randperm(num_users, generator=generator, device=device)
        if bucket_by_length:
            order = order[torch.argsort(self._lengths[order], stable=True)]
        count = num_batches(self.data, self.batch_size)
        slots = count * self.batch_size
        users = torch.cat([order, order.new_zeros(slots - num_users)]).view(count, self.batch_size)
        valid = (torch.arange(slots, device=device) < num_users).view(count, self.batch_size)
        if bucket_by_length:
            shuffled = torch.randperm(count, generator=generator, device=device)
            users, valid = users[shuffled], valid[shuffled]
        return users, valid

    def batch(self, users: torch.Tensor, valid: torch.Tensor, generator: torch.Generator) -> Batch:
        """The batch of ``users`` (B,) with fresh negatives; rows where ``valid`` is False are all padding."""
        keep = valid.unsqueeze(1)
        seqs = self.data.train_inputs()[users] * keep
        pos = self.data.train_targets()[users] * keep
        neg = self.data.sample_negatives(users, self.data.max_len, generator) * (pos != 0)
        return Batch(users=users, seqs=seqs, pos=pos, neg=neg)
