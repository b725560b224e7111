"""Dropout whose masks the static engine can draw once per step and replay in later passes.

The adversarial methods compare a perturbed pass of the network with the clean one under the same dropout
masks (``catrec.adversarial``). The eager engine gets them by restoring the RNG state before each pass;
inside a captured CUDA graph no host code runs between the passes, so the static engine keeps the masks
themselves instead: ``DropoutMasks.recording`` stores every mask a pass draws (from the device's default
generator, which CUDA graphs advance on each replay), ``replaying`` hands them out again in the same order.
A stack of runs (``catrec.models.stack``) draws each run's masks from the run's own generator and replays
them in every pass of its step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class DropoutMasks:
    """The masks of the static engine's dropout layers: drawn fresh, or recorded and replayed in order."""

    def __init__(self) -> None:
        self._recorded: list[torch.Tensor] = []
        self._mode = "fresh"
        self._next = 0

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Draw fresh masks and keep them (replacing those kept before) for ``replaying``."""
        self._recorded, self._mode = [], "record"
        try:
            yield
        finally:
            self._mode = "fresh"

    @contextmanager
    def replaying(self, masks: list[torch.Tensor] | None = None) -> Iterator[None]:
        """Apply the recorded masks again, in the order they were drawn (or ``masks``, drawn elsewhere)."""
        if masks is not None:
            self._recorded = masks
        self._mode, self._next = "replay", 0
        try:
            yield
        finally:
            self._mode = "fresh"

    def recorded(self) -> list[torch.Tensor]:
        """The masks the last ``recording`` drew, in order."""
        return list(self._recorded)

    def apply(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Inverted dropout of ``x`` with drop probability ``p`` (the mask holds the 1 / (1 - p) scale)."""
        if self._mode == "replay":
            mask = self._recorded[self._next]
            self._next += 1
        else:
            mask = torch.empty_like(x).bernoulli_(1 - p) / (1 - p)
            if self._mode == "record":
                self._recorded.append(mask)
        return x * mask


class Dropout(nn.Dropout):
    """``nn.Dropout``, or, while the model runs the static engine (``masks`` set), ``masks.apply``."""

    masks: DropoutMasks | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.masks is None or not self.training or self.p == 0:
            return super().forward(x)
        return self.masks.apply(x, self.p)
