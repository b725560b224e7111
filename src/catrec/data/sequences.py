"""A preprocessed dataset split leave-one-out, as the padded tensors training and evaluation read.

Every user's chronological sequence is split leave-one-out (``catrec.data.raw.leave_one_out``): the last item
is the test target, the second last the validation target, the rest the training sequence. Following section
3.2, each training position predicts the next item. Matrices are (m, T), left-padded with item 0 so the most
recent item is in the last column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from catrec.data.raw import leave_one_out, load_sequences
from catrec.errors import CatrecError

SPLITS = ("valid", "test")


def _pad(rows: Sequence[Sequence[int]], width: int, *, left: bool) -> torch.Tensor:
    """(len(rows), width) int64 matrix of ``rows`` padded with 0 (rows must fit in ``width``)."""
    matrix = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        if row:
            if left:
                matrix[index, width - len(row) :] = row
            else:
                matrix[index, : len(row)] = row
    return torch.from_numpy(matrix)


@dataclass(frozen=True, eq=False)
class SequenceData:
    """One dataset split leave-one-out, as padded tensors (shared: callers must not modify them).

    ``_history`` holds each user's distinct training items (the validation and test items excluded) in
    ascending order, right padded with 0; ``_gaps`` and ``_free`` serve ``sample_negatives``.
    """

    num_items: int
    max_len: int
    _train_inputs: torch.Tensor
    _train_targets: torch.Tensor
    _eval_inputs: dict[str, torch.Tensor]
    _eval_targets: dict[str, torch.Tensor]
    _eval_exclude: dict[str, torch.Tensor]
    _history: torch.Tensor
    _gaps: torch.Tensor
    _free: torch.Tensor

    @classmethod
    def from_dir(cls, data_dir: str | Path, max_len: int) -> SequenceData:
        """Read ``sequences.txt`` and ``stats.json`` as written by ``catrec preprocess``."""
        data_dir = Path(data_dir)
        stats = json.loads((data_dir / "stats.json").read_text())
        return cls.from_sequences(load_sequences(data_dir / "sequences.txt"), int(stats["items"]), max_len)

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], num_items: int, max_len: int) -> SequenceData:
        if max_len < 1:
            raise ValueError(f"max_len must be positive, got {max_len}")
        training, valid_targets, test_targets, histories = [], [], [], []
        for user, sequence in enumerate(sequences):
            if not all(1 <= item <= num_items for item in sequence):
                raise CatrecError(f"user {user}: item ids must lie in 1..{num_items}")
            try:
                train, valid, test = leave_one_out(list(sequence))
            except ValueError as exc:
                raise CatrecError(f"user {user}: {exc}") from exc
            # Negatives avoid the user's training items only, as the reference SASRec sampler does: the
            # validation and test items are unknown at training time.
            distinct = sorted(set(train))
            if len(distinct) == num_items:
                raise CatrecError(f"user {user} trained on every item: no negative can be sampled")
            training.append(train)
            valid_targets.append(valid)
            test_targets.append(test)
            histories.append(distinct)

        def last(rows: Sequence[Sequence[int]]) -> torch.Tensor:
            return _pad([row[-max_len:] for row in rows], max_len, left=True)

        def right_padded(rows: Sequence[Sequence[int]]) -> torch.Tensor:
            return _pad(rows, max(1, max(map(len, rows))), left=False)

        with_valid = [train + [valid] for train, valid in zip(training, valid_targets, strict=True)]
        history = right_padded(histories)
        real = history != 0
        # gaps[j] = how many never-interacted items lie below the j-th history item (see sample_negatives);
        # padding gets num_items, above every drawable rank.
        gaps = torch.where(real, history - 1 - torch.arange(history.shape[1]), num_items)
        return cls(
            num_items=num_items,
            max_len=max_len,
            _train_inputs=last([train[:-1] for train in training]),
            _train_targets=last([train[1:] for train in training]),
            _eval_inputs={"valid": last(training), "test": last(with_valid)},
            _eval_targets={"valid": torch.tensor(valid_targets), "test": torch.tensor(test_targets)},
            _eval_exclude={"valid": right_padded(training), "test": right_padded(with_valid)},
            _history=history,
            _gaps=gaps,
            _free=num_items - real.sum(1),
        )

    def to(self, device: torch.device | str) -> SequenceData:
        """The same data with every tensor on ``device`` (the static engine trains and evaluates there)."""

        def moved(value: object) -> object:
            if isinstance(value, torch.Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {key: moved(item) for key, item in value.items()}
            return value

        return replace(self, **{item.name: moved(getattr(self, item.name)) for item in fields(self)})

    @property
    def num_users(self) -> int:
        return self._train_inputs.shape[0]

    def train_inputs(self) -> torch.Tensor:
        """(m, T): each training sequence without its last item, the last T kept, left-padded."""
        return self._train_inputs

    def train_targets(self) -> torch.Tensor:
        """(m, T): the next item after each position of ``train_inputs``, 0 at padding."""
        return self._train_targets

    def eval_inputs(self, split: str) -> torch.Tensor:
        """(m, T): the history before the target (training, plus the validation item for 'test'), last T."""
        return self._eval_inputs[_check_split(split)]

    def eval_targets(self, split: str) -> torch.Tensor:
        """(m,): the validation or test item."""
        return self._eval_targets[_check_split(split)]

    def eval_exclude(self, split: str) -> torch.Tensor:
        """(m, H): every item of the full (untruncated) history before the target, right-padded with 0."""
        return self._eval_exclude[_check_split(split)]

    def training_items(self) -> torch.Tensor:
        """(m, H): each user's distinct training items (not validation, not test), ascending, right-padded."""
        return self._history

    def sample_negatives(self, users: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
        """(B, width) items drawn uniformly, independently, from the items outside each user's training items.

        On the device of the data (``to``), which must be ``generator``'s.

        Sampling by inversion instead of rejection: draw the rank r of the negative among the user's free
        items, then r-th free item = r + 1 + #{training items h_j below it} = r + 1 + #{j: gaps_j <= r}, where
        gaps_j counts the free items below h_j (non-decreasing, so a binary search finds the count). One
        draw per position, no retry loop, whatever the share of items the user has seen.
        """
        free = self._free[users].unsqueeze(1)
        uniform = torch.rand(
            len(users), width, generator=generator, dtype=torch.float64, device=self._free.device
        )
        # float64 makes uniform * free exact enough; the clamp guards the rounding of values just below 1.
        rank = torch.minimum((uniform * free).long(), free - 1)
        return rank + 1 + torch.searchsorted(self._gaps[users], rank, right=True)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (expected one of {SPLITS})")
    return split
