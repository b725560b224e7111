"""Datasets: raw-format parsers, iterative k-core filtering, id remapping, the leave-one-out split.

The on-disk format every later stage reads is ``sequences.txt``: one line per user, ``user item item ...``,
ids contiguous from 1 (0 is padding), items in chronological order.
"""

from __future__ import annotations

from pathlib import Path

from catrec.errors import CatrecError


def load_sequences(path: str | Path) -> list[list[int]]:
    """Read ``user item item ...`` lines into per-user item lists, ordered by user id."""
    path = Path(path)
    sequences: dict[int, list[int]] = {}
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                user, *items = (int(field) for field in fields)
            except ValueError as exc:
                raise CatrecError(f"{path}:{line_number}: expected integer ids, got '{line.strip()}'") from exc
            if user in sequences:
                raise CatrecError(f"{path}:{line_number}: user {user} appears twice")
            sequences[user] = items
    return [sequences[user] for user in sorted(sequences)]


def leave_one_out(sequence: list[int]) -> tuple[list[int], int, int]:
    """Split one chronological sequence: (training items, validation target, test target).

    The last item is the test target, the second last the validation target, the rest is training.
    """
    if len(sequence) < 3:
        raise ValueError(f"leave-one-out needs at least 3 items, got {len(sequence)}")
    return sequence[:-2], sequence[-2], sequence[-1]
