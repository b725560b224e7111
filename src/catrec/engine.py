"""The training engines (``train.engine``): how the optimizer steps of an epoch run.

``eager`` (the CPU default): batches trimmed to their longest sequence and drawn on the host, copied to the
device each step, the models' packed layout, the loss read back after every step. ``static`` (the CUDA
default): the data, the batches and the negative sampler (a device generator) live on the training device;
every batch has the shape (batch_size, T); the models run their static layout (``use_static``) with
dropout masks that adversarial passes replay (``DropoutMasks``); nothing in a step reads a value back to
the host, the epoch's loss is summed on the device and read once per epoch. On CUDA the whole step
(batch, forward, loss, the FGSM inner gradients, backward, Adam) is captured once as a CUDA graph after a
few warm-up steps and replayed; on the CPU the same step runs as is.

Both engines expose ``epoch()`` (iterate it to run the steps, one per item) and ``mean_loss()``, so the
trainer and the benchmarks drive and time them alike (``make_engine``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from catrec.data.batches import Batch, StaticBatches, iterate_batches
from catrec.data.sequences import SequenceData
from catrec.losses import LossFn
from catrec.models import SequentialRecommender
from catrec.models.dropout import DropoutMasks
from catrec.runtime import sampler_seed

# Uncaptured steps before the capture: they initialise the optimizer state and the lazily built kernels.
WARMUP_STEPS = 3


class TrainSchedule(Protocol):
    """What an engine reads of a run's schedule (``catrec.trainer.TrainConfig``)."""

    seed: int
    batch_size: int
    lr: float
    l2: float
    bucket_by_length: bool


class Engine(Protocol):
    """Runs the steps of training epochs; ``optimizer`` and ``sampler`` are what a checkpoint saves."""

    optimizer: torch.optim.Optimizer
    sampler: torch.Generator

    def epoch(self) -> Iterator[None]:
        """Run one epoch, one optimizer step per item (stopping the iteration early skips the rest)."""
        ...

    def mean_loss(self) -> float:
        """The mean batch loss of the steps run by the last ``epoch()`` so far."""
        ...


def make_optimizer(
    model: SequentialRecommender, schedule: TrainSchedule, *, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam with the L2 penalty as weight decay (section 5.3).

    The fused kernel updates all parameters in one pass; on CPU it makes the step ~4x cheaper, which matters
    because the dense item-embedding update dominates a step on short sequences. ``capturable`` keeps the
    step counts on the device, so the update can run inside a CUDA graph without reading them back.
    """
    return torch.optim.Adam(
        model.parameters(), lr=schedule.lr, weight_decay=schedule.l2, fused=True, capturable=capturable
    )


def train_step(
    model: SequentialRecommender, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
) -> float:
    """One eager optimizer step on ``batch`` (already on the model's device); returns the batch loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    return loss.item()


class _Training:
    """What an engine trains: the model (on ``device``), its data, loss and schedule."""

    def __init__(
        self,
        model: SequentialRecommender,
        data: SequenceData,
        loss_fn: LossFn,
        schedule: TrainSchedule,
        device: torch.device,
    ) -> None:
        self._model, self._data, self._loss_fn = model, data, loss_fn
        self._schedule, self._device = schedule, device
        self._prepare()

    def _prepare(self) -> None:
        raise NotImplementedError


class EagerEngine(_Training):
    """Trimmed batches drawn on the host by a CPU generator, one read-back of the loss per step."""

    def _prepare(self) -> None:
        model, schedule = self._model, self._schedule
        self.optimizer = make_optimizer(model, schedule)
        self.sampler = torch.Generator().manual_seed(sampler_seed(schedule.seed))
        self._loss_sum, self._steps = 0.0, 0

    def epoch(self) -> Iterator[None]:
        self._loss_sum, self._steps = 0.0, 0
        batches = iterate_batches(
            self._data, self._schedule.batch_size, self.sampler, self._schedule.bucket_by_length
        )
        for batch in batches:
            self._loss_sum += train_step(self._model, batch.to(self._device), self._loss_fn, self.optimizer)
            self._steps += 1
            yield

    def mean_loss(self) -> float:
        return self._loss_sum / max(self._steps, 1)


class StaticEngine(_Training):
    """Fixed-shape batches built on the device, no read-back inside a step, a CUDA graph on CUDA.

    The model (on ``device``) is switched to its static layout. Setting ``capture`` False before the first
    step runs every step uncaptured on CUDA too (the reference the graph is tested against).
    """

    def _prepare(self) -> None:
        model, schedule, data, device = self._model, self._schedule, self._data, self._device
        self.capture = device.type == "cuda"
        model.use_static(DropoutMasks())
        self.optimizer = make_optimizer(model, schedule, capturable=True)
        self.sampler = torch.Generator(device).manual_seed(sampler_seed(schedule.seed))
        self._batches = StaticBatches(data.to(device), schedule.batch_size)
        # The step's inputs: the graph reads them from these fixed addresses, refilled before each replay.
        self._users = torch.zeros(schedule.batch_size, dtype=torch.long, device=device)
        self._valid = torch.zeros(schedule.batch_size, dtype=torch.bool, device=device)
        self._loss_sum = torch.zeros((), device=device)
        self._steps = 0
        self._warmed_up = 0
        self._graph: torch.cuda.CUDAGraph | None = None

    def epoch(self) -> Iterator[None]:
        users, valid = self._batches.epoch(self.sampler, self._schedule.bucket_by_length)
        self._loss_sum.zero_()
        self._steps = 0
        for index in range(users.shape[0]):
            self._users.copy_(users[index])
            self._valid.copy_(valid[index])
            self._run()
            self._steps += 1
            yield

    def mean_loss(self) -> float:
        return (self._loss_sum / max(self._steps, 1)).item()

    def step(self) -> None:
        """One optimizer step on the batch of the current inputs, its loss added to the epoch's sum."""
        self.optimizer.zero_grad(set_to_none=True)
        batch = self._batches.batch(self._users, self._valid, self.sampler)
        loss = self._loss_fn(self._model, batch)
        loss.backward()
        self.optimizer.step()
        self._loss_sum += loss.detach()

    def _run(self) -> None:
        if not self.capture:
            self.step()
        elif self._graph is not None:
            self._graph.replay()
        elif self._warmed_up < WARMUP_STEPS:
            # Warm-up on a side stream, as capture requires (torch.cuda.graphs, "whole network capture").
            side = torch.cuda.Stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream(self._device).wait_stream(side)
            self._warmed_up += 1
        else:
            graph = torch.cuda.CUDAGraph()
            # The default CUDA generator (dropout, noise) is registered by the capture itself.
            graph.register_generator_state(self.sampler)
            with torch.cuda.graph(graph):
                self.step()
            # Capturing records the step without running it: run it now.
            graph.replay()
            self._graph = graph


def make_engine(
    engine: str,
    model: SequentialRecommender,
    data: SequenceData,
    loss_fn: LossFn,
    schedule: TrainSchedule,
    device: torch.device,
) -> Engine:
    """The engine named ``engine`` ('eager' or 'static', as ``catrec.runtime.resolve_engine`` resolves it).

    ``model`` must be on ``device``; 'eager' reads ``data`` where it is, 'static' moves it to ``device``.
    """
    if engine == "eager":
        return EagerEngine(model, data, loss_fn, schedule, device)
    if engine == "static":
        return StaticEngine(model, data, loss_fn, schedule, device)
    raise ValueError(f"unknown engine '{engine}' (expected 'eager' or 'static', resolved)")
