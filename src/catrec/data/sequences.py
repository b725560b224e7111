"""A preprocessed dataset split leave-one-out, as the padded tensors training and evaluation read.

Every user's chronological sequence is split leave-one-out (``catrec.data.preprocess.leave_one_out``): the
last item is the test target, the second last the validation target, the rest the training sequence.
Following section 3.2, each training position predicts the next item. Matrices are (m, T), left-padded with
item 0 so the most recent item is in the last column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from catrec.data.formats import read_sequence_lines
from catrec.data.item_sets import ItemSets
from catrec.data.preprocess import leave_one_out
from catrec.errors import CatrecError
from catrec.io import read_json, read_text
from catrec.vocabulary import SPLITS


def _left_padded(rows: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    """(len(rows), width) int64 matrix of ``rows`` left-padded with 0 (rows must fit in ``width``)."""
    matrix = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        if row:
            matrix[index, width - len(row) :] = row
    return torch.from_numpy(matrix)


@dataclass(frozen=True, eq=False)
class SequenceData:
    """One dataset split leave-one-out, as padded tensors (shared: callers must not modify them).

    Per-user item lists of any length (the histories, the training items) are ``ItemSets``, so memory is
    bounded by the interactions. ``_history`` holds each user's distinct training items (the validation and
    test items excluded) in ascending order; ``_gap_keys`` and ``_free`` serve ``sample_negatives``.
    """

    num_items: int
    max_len: int
    _train_inputs: torch.Tensor
    _train_targets: torch.Tensor
    _eval_inputs: dict[str, torch.Tensor]
    _eval_targets: dict[str, torch.Tensor]
    _eval_exclude: dict[str, ItemSets]
    _history: ItemSets
    _gap_keys: torch.Tensor
    _free: torch.Tensor

    @classmethod
    def from_dir(cls, data_dir: str | Path, max_len: int) -> SequenceData:
        """Read ``sequences.txt`` and ``stats.json`` as written by ``catrec preprocess``.

        The files must agree: users 1..m and the interactions stats.json counts, the users of
        ``user_map.tsv`` where there is one (a hand-edited file would otherwise train on what no map names).
        """
        data_dir = Path(data_dir)
        stats_path = data_dir / "stats.json"
        stats = read_json(stats_path, ["users", "items", "interactions"])
        path = data_dir / "sequences.txt"
        lines = sorted(read_sequence_lines(path), key=lambda line: line[1])
        users = [user for _, user, _ in lines]
        if users != list(range(1, len(users) + 1)) or len(users) != stats["users"]:
            raise CatrecError(
                f"{path}: users {_span(users)} disagree with {stats_path} (users 1..{stats['users']})"
            )
        interactions = sum(len(items) for _, _, items in lines)
        if interactions != stats["interactions"]:
            raise CatrecError(
                f"{path}: {interactions} interactions, {stats_path} counts {stats['interactions']}"
            )
        user_map = data_dir / "user_map.tsv"
        if user_map.exists():
            mapped = [row.split("\t", 1)[0] for row in read_text(user_map).splitlines()[1:] if row.strip()]
            if mapped != [str(user) for user in users]:
                raise CatrecError(f"{path}: users {_span(users)} disagree with {user_map}")
        return cls.from_sequences(
            [items for _, _, items in lines],
            int(stats["items"]),
            max_len,
            labels=[f"{path}:{line_number}: user {user}" for line_number, user, _ in lines],
        )

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[Sequence[int]],
        num_items: int,
        max_len: int,
        labels: Sequence[str] | None = None,
    ) -> SequenceData:
        """The split of ``sequences`` (users 1..m in order); errors name a user by ``labels`` (default
        ``user <id>``)."""
        if max_len < 1:
            raise ValueError(f"max_len must be positive, got {max_len}")
        if labels is None:
            labels = [f"user {user}" for user in range(1, len(sequences) + 1)]
        training, valid_targets, test_targets, histories = [], [], [], []
        for label, sequence in zip(labels, sequences, strict=True):
            if not all(1 <= item <= num_items for item in sequence):
                raise CatrecError(f"{label}: item ids must lie in 1..{num_items}")
            try:
                train, valid, test = leave_one_out(list(sequence))
            except ValueError as exc:
                raise CatrecError(f"{label}: {exc}") from exc
            # Negatives avoid the user's training items only, as the reference SASRec sampler does: the
            # validation and test items are unknown at training time.
            distinct = sorted(set(train))
            if len(distinct) == num_items:
                raise CatrecError(f"{label} trained on every item: no negative can be sampled")
            training.append(train)
            valid_targets.append(valid)
            test_targets.append(test)
            histories.append(distinct)

        def last(rows: Sequence[Sequence[int]]) -> torch.Tensor:
            return _left_padded([row[-max_len:] for row in rows], max_len)

        with_valid = [train + [valid] for train, valid in zip(training, valid_targets, strict=True)]
        history = ItemSets.from_lists(histories)
        lengths = history.lengths()
        users = torch.arange(len(histories))
        # gap_j = how many never-interacted items lie below the j-th history item of its user (see
        # sample_negatives), offset by user * (num_items + 1) so that one sorted array serves every user.
        rows, positions = history.positions(users)
        within = positions - history.offsets[rows]
        gaps = history.items - 1 - within
        return cls(
            num_items=num_items,
            max_len=max_len,
            _train_inputs=last([train[:-1] for train in training]),
            _train_targets=last([train[1:] for train in training]),
            _eval_inputs={"valid": last(training), "test": last(with_valid)},
            _eval_targets={"valid": torch.tensor(valid_targets), "test": torch.tensor(test_targets)},
            _eval_exclude={"valid": ItemSets.from_lists(training), "test": ItemSets.from_lists(with_valid)},
            _history=history,
            _gap_keys=rows * (num_items + 1) + gaps,
            _free=num_items - lengths,
        )

    def to(self, device: torch.device | str) -> SequenceData:
        """The same data on ``device`` (the static engine trains and evaluates there), but for the histories
        a ranking excludes: ``rank_users`` gathers a batch's (row, item) pairs on the host, where their
        number is known without reading it back from the device, and copies them over."""

        def moved(value: object) -> object:
            if isinstance(value, torch.Tensor | ItemSets):
                return value.to(device)
            if isinstance(value, dict):
                return {key: moved(item) for key, item in value.items()}
            return value

        names = [item.name for item in fields(self) if item.name != "_eval_exclude"]
        return replace(self, **{name: moved(getattr(self, name)) for name in names})

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

    def eval_exclude(self, split: str) -> ItemSets:
        """Every item of each user's full (untruncated) history before the target, in order."""
        return self._eval_exclude[_check_split(split)]

    def training_items(self) -> ItemSets:
        """Each user's distinct training items (not validation, not test), ascending."""
        return self._history

    def sample_negatives(self, users: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
        """(B, width) items drawn uniformly, independently, from the items outside each user's training items.

        On the device of the data (``to``), which must be ``generator``'s.

        Sampling by inversion instead of rejection: draw the rank r of the negative among the user's free
        items, then r-th free item = r + 1 + #{training items h_j below it} = r + 1 + #{j: gaps_j <= r}, where
        gaps_j counts the free items below h_j (non-decreasing, so a binary search finds the count). One
        draw per position, no retry loop, whatever the share of items the user has seen.

        All users' gaps lie in one array, user u's offset by u * (num_items + 1): below u's key range are
        exactly the ``offsets[u]`` gaps of the users before it, so their count is subtracted.
        """
        free = self._free[users].unsqueeze(1)
        uniform = torch.rand(
            len(users), width, generator=generator, dtype=torch.float64, device=self._free.device
        )
        # float64 makes uniform * free exact enough; the clamp guards the rounding of values just below 1.
        rank = torch.minimum((uniform * free).long(), free - 1)
        keys = users.unsqueeze(1) * (self.num_items + 1) + rank
        below = torch.searchsorted(self._gap_keys, keys, right=True) - self._history.offsets[users].unsqueeze(
            1
        )
        return rank + 1 + below


def _span(users: Sequence[int]) -> str:
    """Users as a short description: ``1..400 (400)`` when contiguous, else the count and the extremes."""
    if not users:
        return "none"
    return f"{min(users)}..{max(users)} ({len(users)})"


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (expected one of {SPLITS})")
    return split
