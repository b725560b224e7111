"""CUDA graphs: any step wrapped in capture and replay. The only CUDA-graph code of catrec.

A step that reads nothing back to the host and keeps its shapes (the padded layout,
``catrec.models.layout``) can be captured once and replayed: the whole step (batch, forward, loss, the
FGSM inner gradients, backward, Adam) becomes one launch. Its inputs are read from fixed tensors the caller
refills before each call; every random draw comes from generators registered with the graph, so each
replay advances them as the uncaptured step would (torch.cuda.graphs, "whole network capture").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# Uncaptured steps before the capture: they initialise the optimizer state and the lazily built kernels.
WARMUP_STEPS = 3


class CapturedStep:
    """``step`` run on ``device`` as a CUDA graph: warm-up steps on a side stream, then one capture, then
    replays. ``generators``: every generator the step draws from."""

    def __init__(
        self, step: Callable[[], None], generators: Sequence[torch.Generator], device: torch.device
    ) -> None:
        self._step, self._generators, self._device = step, list(generators), device
        self._warmed_up = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self._warmed_up < WARMUP_STEPS:
            # Warm-up on a side stream, as capture requires.
            side = torch.cuda.Stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                self._step()
            torch.cuda.current_stream(self._device).wait_stream(side)
            self._warmed_up += 1
        else:
            graph = torch.cuda.CUDAGraph()
            for generator in self._generators:
                graph.register_generator_state(generator)
            with torch.cuda.graph(graph):
                self._step()
            # Capturing records the step without running it: run it now.
            graph.replay()
            self.graph = graph
