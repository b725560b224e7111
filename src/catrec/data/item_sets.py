"""Per-user sets of items (histories to exclude from a ranking, items a negative must avoid), stored flat.

User u's items are ``items[offsets[u]:offsets[u + 1]]`` (compressed sparse rows): memory grows with the
number of interactions, not with users x the longest history, as a padded (m, H) matrix did. One user with
200,000 items among 400 made that matrix 80 million entries; here it adds 200,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class ItemSets:
    """``offsets`` (m + 1,) and ``items`` (total,), both int64 on one device; rows keep their given order."""

    offsets: torch.Tensor
    items: torch.Tensor

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> ItemSets:
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.int64)
        offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        flat = [item for row in rows for item in row]
        return cls(offsets=offsets, items=torch.tensor(flat, dtype=torch.int64))

    def to(self, device: torch.device | str) -> ItemSets:
        return ItemSets(offsets=self.offsets.to(device), items=self.items.to(device))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> torch.Tensor:
        """(m,): the number of items of each row."""
        return self.offsets[1:] - self.offsets[:-1]

    def positions(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, positions)`` of every item of ``users``: ``rows`` indexes ``users`` (0 .. len(users) - 1),
        ``positions`` indexes ``items``; each user's items in their order."""
        starts = self.offsets[users]
        counts = self.offsets[users + 1] - starts
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        # Position within the row = running index minus where the row's run starts.
        run_starts = torch.cumsum(counts, 0) - counts
        within = torch.arange(len(rows), device=users.device) - run_starts[rows]
        return rows, starts[rows] + within

    def pairs(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, items)`` of every item of ``users`` (``rows`` as in ``positions``)."""
        rows, positions = self.positions(users)
        return rows, self.items[positions]

    def tolist(self) -> list[list[int]]:
        return [row.tolist() for row in torch.split(self.items, self.lengths().tolist())]
