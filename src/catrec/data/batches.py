"""Training batches: users, their inputs, the next items (positives) and one sampled negative per position.

One batcher (``Batches``) for every layout: batches are built on the data's device by a run's sampler
generator; the padded layout's have one fixed shape (batch_size, T), the packed layout's keep only their last
L columns (all-padding columns dropped), which the models support (``catrec.models``).
"""

from __future__ import annotations

import math
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


class Batches:
    """The training batches of ``data`` (on its device), each of ``batch_size`` rows.

    An epoch's users come from one permutation drawn by the run's sampler generator, as the reference SASRec
    sampler's random draws of users; with ``bucket_by_length`` users of similar length share a batch instead
    (ties in random order, batches in random order): faster in the packed layout, but it changes what a batch
    averages over (docs/reproduction-notes.md). The last batch is filled up with rows marked invalid (user 0
    with every input, positive and negative set to 0, i.e. padding), which weigh nothing in any loss, FGSM
    norm or metric. ``trim``: keep only the batch's last L columns, L its longest sequence (the packed layout;
    reads L on the host); else every batch is (batch_size, T) (the padded layout).
    """

    def __init__(self, data: SequenceData, batch_size: int, *, trim: bool) -> None:
        self.data, self.batch_size, self.trim = data, batch_size, trim
        self._lengths = (data.train_inputs() != 0).sum(1)

    def __len__(self) -> int:
        return num_batches(self.data, self.batch_size)

    def epoch(self, generator: torch.Generator, bucket_by_length: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch's users (num_batches, batch_size) and which of them are real (same shape, bool)."""
        num_users, device = self.data.num_users, self._lengths.device
        order = torch.randperm(num_users, generator=generator, device=device)
        if bucket_by_length:
            order = order[torch.argsort(self._lengths[order], stable=True)]
        count = len(self)
        slots = count * self.batch_size
        users = torch.cat([order, order.new_zeros(slots - num_users)]).view(count, self.batch_size)
        valid = (torch.arange(slots, device=device) < num_users).view(count, self.batch_size)
        if bucket_by_length:
            shuffled = torch.randperm(count, generator=generator, device=device)
            users, valid = users[shuffled], valid[shuffled]
        return users, valid

    def batch(self, users: torch.Tensor, valid: torch.Tensor, generator: torch.Generator) -> Batch:
        """The batch of ``users`` (B,) with one fresh negative per real position (0 at padding), drawn by
        ``generator``; rows where ``valid`` is False are all padding."""
        width = self.data.max_len
        if self.trim:
            width = max(1, int((self._lengths[users] * valid).max()))
        keep = valid.unsqueeze(1)
        seqs = self.data.train_inputs()[users, -width:] * keep
        pos = self.data.train_targets()[users, -width:] * keep
        neg = self.data.sample_negatives(users, width, generator) * (pos != 0)
        return Batch(users=users, seqs=seqs, pos=pos, neg=neg)
