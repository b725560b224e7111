"""The training engines (``train.engine``): how the optimizer steps of an epoch run.

``eager`` (the CPU default): batches trimmed to their longest sequence and drawn on the host, copied to the
device each step, the models' packed layout, the loss read back after every step. ``static`` (the CUDA
default): the data, the batches and the negative sampler (a device generator) live on the training device;
every batch has the shape (batch_size, T); the models run their static layout (``use_static``) with
dropout masks that adversarial passes replay (``DropoutMasks``); nothing in a step reads a value back to
the host, the epoch's loss is summed on the device and read once per epoch. On CUDA the whole step
(batch, forward, loss, the FGSM inner gradients, backward, Adam) is captured once as a CUDA graph after a
few warm-up steps and replayed; on the CPU the same step runs as is.

Both engines expose ``epoch()`` (iterate it to run the steps, one per item) and ``mean_losses()``, so the
trainer and the benchmarks drive and time them alike (``make_engine``). The static engine trains several
runs of one architecture at once (``catrec.models.stack``); the eager one trains one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from typing import Any, Protocol

import torch

from catrec.adversarial import loss_terms, stack_coefficients, total_loss
from catrec.data.batches import Batch, StaticBatches, iterate_batches
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.losses import LossFn
from catrec.models import SequentialRecommender
from catrec.models.dropout import DropoutMasks
from catrec.models.stack import ModelStack
from catrec.runtime import dropout_seed, noise_seed, sampler_seed

# Uncaptured steps before the capture: they initialise the optimizer state and the lazily built kernels.
WARMUP_STEPS = 3
BATCH_FIELDS = [item.name for item in fields(Batch)]
# Adam's per-parameter moments: a stacked run's checkpoint keeps its slice of each.
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


class TrainSchedule(Protocol):
    """What an engine reads of a run's schedule (``catrec.trainer.TrainConfig``)."""

    seed: int
    batch_size: int
    lr: float
    l2: float
    bucket_by_length: bool


class Engine(Protocol):
    """Runs the steps of training epochs for ``size`` runs trained together (1 but for a stack)."""

    size: int

    def epoch(self) -> Iterator[None]:
        """Run one epoch, one optimizer step per item (stopping the iteration early skips the rest)."""
        ...

    def mean_losses(self) -> list[float]:
        """Each run's mean batch loss over the steps run by the last ``epoch()`` so far."""
        ...

    def run_state(self, run: int) -> dict[str, Any]:
        """What a checkpoint of ``run`` saves besides its model: its optimizer state and generators."""
        ...

    def restore_run(self, run: int, state: dict[str, Any]) -> None:
        """Continue ``run`` from a ``run_state`` (its model's weights are restored before the engine)."""
        ...

    def write_back(self) -> None:
        """Leave each run's trained weights in its model (before it is evaluated or saved)."""
        ...


def make_optimizer(
    parameters: Iterable[torch.Tensor], schedule: TrainSchedule, *, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam with the L2 penalty as weight decay (section 5.3).

    The fused kernel updates all parameters in one pass; on CPU it makes the step ~4x cheaper, which matters
    because the dense item-embedding update dominates a step on short sequences. ``capturable`` keeps the
    step counts on the device, so the update can run inside a CUDA graph without reading them back. Adam
    is element-wise, so over a stack's (K, ...) tensors it is K Adams with the same settings.
    """
    return torch.optim.Adam(
        parameters, lr=schedule.lr, weight_decay=schedule.l2, fused=True, capturable=capturable
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
    """What an engine trains: the runs' models (on ``device``), their losses, the data and the schedule."""

    def __init__(
        self,
        models: Sequence[SequentialRecommender],
        data: SequenceData,
        losses: Sequence[LossFn],
        schedule: TrainSchedule,
        device: torch.device,
        seeds: Sequence[int] | None = None,
    ) -> None:
        if not models or len(models) != len(losses):
            raise ValueError(f"one loss per model ({len(models)} models, {len(losses)} losses)")
        self._models, self._data, self._losses = list(models), data, list(losses)
        self._schedule, self._device = schedule, device
        self.size = len(models)
        # Each run's seed: the schedule's, but for a stack of pretrainings across seeds.
        self._seeds = list(seeds) if seeds is not None else [schedule.seed] * self.size
        if len(self._seeds) != self.size:
            raise ValueError(f"one seed per model ({self.size} models, {len(self._seeds)} seeds)")
        self._prepare()

    def _prepare(self) -> None:
        raise NotImplementedError


class EagerEngine(_Training):
    """Trimmed batches drawn on the host by a CPU generator, one read-back of the loss per step; one run."""

    def _prepare(self) -> None:
        if self.size != 1:
            raise CatrecError(
                f"the eager engine trains one run at a time, not {self.size} (stacks: 'static')"
            )
        (self._model,), (self._loss_fn,) = self._models, self._losses
        self.optimizer = make_optimizer(self._model.parameters(), self._schedule)
        self.sampler = torch.Generator().manual_seed(sampler_seed(self._seeds[0]))
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

    def mean_losses(self) -> list[float]:
        return [self._loss_sum / max(self._steps, 1)]

    def run_state(self, run: int) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "sampler_rng": self.sampler.get_state()}

    def restore_run(self, run: int, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.set_state(state["sampler_rng"])

    def write_back(self) -> None:
        """The eager engine trains the model's own parameters."""


class StaticEngine(_Training):
    """Fixed-shape batches built on the device, no read-back inside a step, a CUDA graph on CUDA.

    Trains its runs as one ``ModelStack`` (a single run is a stack of one), each run's batches, negatives,
    dropout masks and level-1 noise drawn by its own generators (sampler, dropout, noise), seeded from its
    seed alone, so a run's numbers do not depend on the stack it is trained in (runs of different seeds,
    pretrainings across seeds, draw different batches: the step's inputs carry the run dimension). The
    member models are switched to their static layout (their evaluation stays on the device). Setting
    ``capture`` False before the first step runs every step uncaptured on CUDA too (the reference the graph
    is tested against).
    """

    def _prepare(self) -> None:
        schedule, device, size = self._schedule, self._device, self.size
        self.capture = device.type == "cuda"
        for model in self._models:
            model.use_static(DropoutMasks())
        self._samplers = [torch.Generator(device).manual_seed(sampler_seed(seed)) for seed in self._seeds]
        self._dropout = [torch.Generator(device).manual_seed(dropout_seed(seed)) for seed in self._seeds]
        self._noise = [torch.Generator(device).manual_seed(noise_seed(seed)) for seed in self._seeds]
        self.stack = ModelStack(self._models, self._dropout, self._noise)
        self._coefficients, self._factors = stack_coefficients(self._losses, device)
        self.optimizer = make_optimizer(self.stack.parameters.values(), schedule, capturable=True)
        self._batches = StaticBatches(self._data.to(device), schedule.batch_size)
        # The step's inputs: the graph reads them from these fixed addresses, refilled before each replay.
        self._users = torch.zeros(size, schedule.batch_size, dtype=torch.long, device=device)
        self._valid = torch.zeros(size, schedule.batch_size, dtype=torch.bool, device=device)
        self._loss_sums = torch.zeros(size, device=device)
        self._steps = 0
        self._warmed_up = 0
        self._graph: torch.cuda.CUDAGraph | None = None

    def epoch(self) -> Iterator[None]:
        bucket = self._schedule.bucket_by_length
        drawn = [self._batches.epoch(sampler, bucket) for sampler in self._samplers]
        users = torch.stack([run_users for run_users, _ in drawn], dim=1)  # (num_batches, K, B)
        valid = torch.stack([run_valid for _, run_valid in drawn], dim=1)
        self._loss_sums.zero_()
        self._steps = 0
        for index in range(users.shape[0]):
            self._users.copy_(users[index])
            self._valid.copy_(valid[index])
            self._run()
            self._steps += 1
            yield

    def mean_losses(self) -> list[float]:
        return (self._loss_sums / max(self._steps, 1)).tolist()

    def step(self) -> None:
        """One optimizer step of every run on the batches of the current inputs, each loss added up."""
        self.optimizer.zero_grad(set_to_none=True)
        batches = [
            self._batches.batch(self._users[run], self._valid[run], sampler)
            for run, sampler in enumerate(self._samplers)
        ]
        batch = Batch(**{name: torch.stack([getattr(b, name) for b in batches]) for name in BATCH_FIELDS})
        self.stack.draw(batch.seqs)
        losses = total_loss(
            loss_terms(self.stack, batch, self._coefficients, self._factors), self._coefficients
        )
        # Each run's parameters receive only its own loss's gradient.
        losses.sum().backward()
        self.optimizer.step()
        self._loss_sums += losses.detach()

    def run_state(self, run: int) -> dict[str, Any]:
        moments = {}
        for name, parameter in self.stack.parameters.items():
            state = self.optimizer.state.get(parameter)
            if state:
                moments[name] = {
                    "step": state["step"].detach().cpu().clone(),
                    **{key: state[key][run].detach().cpu().clone() for key in ADAM_MOMENTS},
                }
        return {
            "optimizer": moments,
            # The generators live on the device: a CPU generator's state is not a CUDA one's.
            "device": self._device.type,
            "sampler_rng": self._samplers[run].get_state(),
            "dropout_rng": self._dropout[run].get_state(),
            "noise_rng": self._noise[run].get_state(),
        }

    def restore_run(self, run: int, state: dict[str, Any]) -> None:
        # Checkpoints from before the device was recorded are the CPU's: no static run had used a GPU.
        saved_on = state.get("device", "cpu")
        if saved_on != self._device.type:
            raise CatrecError(
                f"saved by the static engine on {saved_on}, cannot resume on {self._device.type}: its "
                f"random generators are {saved_on} generators (resume it on {saved_on}, or delete its "
                "state directory to start it over)"
            )
        self._samplers[run].set_state(state["sampler_rng"])
        self._dropout[run].set_state(state["dropout_rng"])
        self._noise[run].set_state(state["noise_rng"])
        for name, saved in state["optimizer"].items():
            parameter = self.stack.parameters[name]
            current = self.optimizer.state[parameter]
            if not current:
                current["step"] = saved["step"].to(parameter.device)
                current.update({key: torch.zeros_like(parameter) for key in ADAM_MOMENTS})
            # The runs of a stack have taken the same number of steps (``catrec.trainer`` groups them so).
            current["step"].copy_(saved["step"])
            for key in ADAM_MOMENTS:
                current[key][run].copy_(saved[key])

    def write_back(self) -> None:
        self.stack.write_back()

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
            # Every random draw of a step comes from the runs' own generators.
            for generator in self._samplers + self._dropout + self._noise:
                graph.register_generator_state(generator)
            with torch.cuda.graph(graph):
                self.step()
            # Capturing records the step without running it: run it now.
            graph.replay()
            self._graph = graph


def make_engine(
    engine: str,
    models: Sequence[SequentialRecommender],
    data: SequenceData,
    losses: Sequence[LossFn],
    schedule: TrainSchedule,
    device: torch.device,
    seeds: Sequence[int] | None = None,
) -> Engine:
    """The engine named ``engine`` ('eager' or 'static', as ``catrec.runtime.resolve_engine`` resolves it)
    for the runs of ``models`` (each trained with its loss in ``losses``; more than one: 'static' only),
    each run seeded by its entry of ``seeds`` (default: every run the schedule's seed).

    The models must be on ``device``; 'eager' reads ``data`` where it is, 'static' moves it to ``device``.
    """
    if engine == "eager":
        return EagerEngine(models, data, losses, schedule, device, seeds)
    if engine == "static":
        return StaticEngine(models, data, losses, schedule, device, seeds)
    raise ValueError(f"unknown engine '{engine}' (expected 'eager' or 'static', resolved)")
