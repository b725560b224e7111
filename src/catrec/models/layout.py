"""How a batch of left-padded sequences is laid out while a model computes on it: an argument, not a mode.

``Packed`` keeps only the real positions (N of them, found with ``nonzero``: a host read and a shape that
depends on the data): the least arithmetic, the fast CPU layout. ``Padded`` keeps every (B, L) position and
masks the padding: one shape whatever the data and no host read, what a CUDA graph needs. Both own the same
four things: ``pack`` (a (B, L, ...) tensor -> the layout's rows), ``pad`` (back to (B, L, ...), zeros at
padding), ``finish`` (a model's output in the (B, L, d) form every caller reads) and ``dropout``.

Dropout masks come from ``StepMasks``: one uniform draw per run and step from the run's dropout generator,
``width`` numbers per real position, laid out in the order of the packed rows (row-major over (B, L)).
``Packed`` reads its N rows; ``Padded`` draws B * L rows and gives the r-th real position the r-th row (its
padding positions the rows after N). So on the same batch and generator state the two layouts apply the same
masks at every real position (a CPU generator draws ``rand(n)`` as the first n numbers of ``rand(m)``, m > n),
and every pass of a step over one ``StepMasks`` applies the same masks (the adversarial passes compare a
perturbed pass with the clean one under one set of masks). A model without dropout draws nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

LAYOUTS = ("packed", "padded")


@dataclass(frozen=True)
class StepMasks:
    """One step's dropout numbers of one run: ``uniform`` (rows, width) in packed-row order, rate ``p``."""

    uniform: torch.Tensor
    p: float

    @staticmethod
    def draw(rows: int, width: int, p: float, generator: torch.Generator) -> StepMasks:
        device = generator.device
        return StepMasks(torch.rand(rows, width, generator=generator, device=device), p)


class _Layout:
    """What both layouts share: the real positions (B, L), the right-aligned position of every column and
    a cursor over the step's dropout columns (each ``dropout`` call takes the next ones)."""

    def __init__(self, seqs: torch.Tensor, masks: StepMasks | None = None) -> None:
        self.real = seqs != 0
        self.shape: tuple[int, int] = (seqs.shape[0], seqs.shape[1])
        self._masks = masks
        self._column = 0

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, rows: torch.Tensor) -> torch.Tensor:
        """The layout's rows of an output -> (B, L, d), exactly 0 at padding."""
        raise NotImplementedError

    def _mask_rows(self, uniform: torch.Tensor) -> torch.Tensor:
        """The step's uniform columns (rows, width) -> one row per position of this layout."""
        raise NotImplementedError

    def columns(self) -> torch.Tensor:
        """Each position's column counted from the left, (B, L)."""
        length = self.shape[1]
        return torch.arange(length, device=self.real.device).expand(self.shape)

    def dropout(self, x: torch.Tensor) -> torch.Tensor:
        """Inverted dropout of the layout's rows ``x`` (rows, d): each row its position's next d numbers."""
        return x * self._next_mask(x.shape[-1])

    def dropout_attention(self, weights: torch.Tensor) -> torch.Tensor:
        """Inverted dropout of attention weights (B, H, L, L): each query position's next H * L numbers."""
        if self._masks is None:  # no dropout (evaluation, attacks): nothing to apply
            return weights
        batch, heads, length, _ = weights.shape
        mask = self.pad(self._next_mask(heads * length))
        return weights * mask.view(batch, length, heads, length).transpose(1, 2)

    def recur(self, rnn: nn.GRU, x: torch.Tensor) -> torch.Tensor:
        """A batch-first ``rnn`` over the real items of each row of (B, L, d) ``x``, its state starting at
        zero at the row's first real item: (B, L, d) outputs, 0 at padding."""
        length = self.shape[1]
        lengths = self.real.sum(1)
        # Left-align each row (its padding moves to the end), run, and right-align the outputs again.
        output = self._recur_left_aligned(rnn, _roll_rows(x, length - lengths), lengths)
        return self.finish(self.pack(_roll_rows(output, lengths % length)))

    def _recur_left_aligned(self, rnn: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _next_mask(self, width: int) -> torch.Tensor | float:
        if self._masks is None:
            return 1.0
        start, self._column = self._column, self._column + width
        keep = 1 - self._masks.p
        uniform = self._mask_rows(self._masks.uniform[:, start : self._column])
        return (uniform < keep).to(self._masks.uniform.dtype) / keep


class Packed(_Layout):
    """The real positions only: rows (N, ...), N = the batch's real items."""

    def __init__(self, seqs: torch.Tensor, masks: StepMasks | None = None) -> None:
        super().__init__(seqs, masks)
        self._rows, self._columns = self.real.nonzero(as_tuple=True)

    @staticmethod
    def mask_rows(seqs: torch.Tensor) -> int:
        """The rows of a step's dropout draw for ``seqs``: one per real position."""
        return int((seqs != 0).sum())

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        return padded[self._rows, self._columns]

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        padded = packed.new_zeros(*self.shape, *packed.shape[1:])
        return padded.index_put((self._rows, self._columns), packed)

    def finish(self, rows: torch.Tensor) -> torch.Tensor:
        return self.pad(rows)

    def _mask_rows(self, uniform: torch.Tensor) -> torch.Tensor:
        return uniform

    def _recur_left_aligned(self, rnn: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # pack_padded_sequence reads the lengths on the host and skips the padding.
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        output, _ = rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=self.shape[1])
        return output


class Padded(_Layout):
    """Every (B, L) position, padding masked: fixed shapes, no host read."""

    def __init__(self, seqs: torch.Tensor, masks: StepMasks | None = None) -> None:
        super().__init__(seqs, masks)
        if masks is not None:
            # The r-th real position (row-major) reads row r, the p-th padding position row N + p.
            real = self.real.flatten()
            real_rank = real.cumsum(0) - 1
            padding_rank = real.sum() + (~real).cumsum(0) - 1
            self._rank = torch.where(real, real_rank, padding_rank)

    @staticmethod
    def mask_rows(seqs: torch.Tensor) -> int:
        """The rows of a step's dropout draw for ``seqs``: one per position."""
        return seqs.shape[-2] * seqs.shape[-1]

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        return padded

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        return packed

    def finish(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.where(self.real.unsqueeze(-1), rows, 0.0)

    def _mask_rows(self, uniform: torch.Tensor) -> torch.Tensor:
        return uniform[self._rank].view(*self.shape, uniform.shape[-1])

    def _recur_left_aligned(self, rnn: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # A GRU is causal: over the whole left-aligned rows, its outputs at the real positions, which come
        # first, are those of the real items alone; the outputs after them are masked by ``finish``.
        output, _ = rnn(x)
        return output


def _roll_rows(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Roll each row of (B, L, ...) ``x`` left by ``shifts[b]`` columns (circularly)."""
    length = x.shape[1]
    index = (torch.arange(length, device=x.device).unsqueeze(0) + shifts.unsqueeze(1)) % length
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


Layout = Packed | Padded
LAYOUT_OF: dict[str, type[Packed] | type[Padded]] = {"packed": Packed, "padded": Padded}
