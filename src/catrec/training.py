"""What a stack of K >= 1 runs trains with, and its step: the one training path of every run.

``Training`` holds the runs' ``ModelStack`` (``catrec.models.stack``) in the layout the run resolved
(``catrec.config.resolve_layout``), Adam over the stacked parameters, each run's generators (sampler,
dropout, noise: seeded from the run's seed alone, on the training device), the batcher and the step's input
tensors. ``step`` is one optimizer step of every run: the batches, the forward passes, the method's terms
(``catrec.adversarial``), backward, Adam. With ``capture`` (the padded layout on CUDA) the trainer replays
it as a CUDA graph (``catrec.graph``); nothing in it reads a value back to the host in the padded layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any, Protocol

import torch

from catrec.adversarial import Coefficients, RunLoss, loss_terms, total_loss
from catrec.data.batches import Batch, Batches
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.models import SequentialRecommender
from catrec.models.layout import LAYOUT_OF
from catrec.models.stack import ModelStack
from catrec.runtime import dropout_seed, noise_seed, sampler_seed

BATCH_FIELDS = [item.name for item in fields(Batch)]
# Adam's per-parameter moments: a run's checkpoint keeps its slice of each.
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


class TrainSchedule(Protocol):
    """What a training reads of a run's schedule (``catrec.trainer.TrainConfig``)."""

    batch_size: int
    lr: float
    l2: float
    bucket_by_length: bool
    layout: str
    capture: bool


def make_optimizer(
    parameters: Iterable[torch.Tensor], schedule: TrainSchedule, *, capturable: bool
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


class Training:
    """The K runs of ``models`` (on ``device``), run k trained with ``losses[k]``, seeded by ``seeds[k]``."""

    def __init__(
        self,
        models: Sequence[SequentialRecommender],
        data: SequenceData,
        losses: Sequence[RunLoss],
        seeds: Sequence[int],
        schedule: TrainSchedule,
        device: torch.device,
    ) -> None:
        if not models or not len(models) == len(losses) == len(seeds):
            raise ValueError(f"one loss and seed per model ({len(models)}, {len(losses)}, {len(seeds)})")
        self.size, self.device, self.schedule = len(models), device, schedule
        self.samplers = [torch.Generator(device).manual_seed(sampler_seed(seed)) for seed in seeds]
        self.dropout = [torch.Generator(device).manual_seed(dropout_seed(seed)) for seed in seeds]
        self.noise = [torch.Generator(device).manual_seed(noise_seed(seed)) for seed in seeds]
        self.stack = ModelStack(models, self.dropout, self.noise, LAYOUT_OF[schedule.layout])
        self.coefficients = Coefficients.of(losses, device)
        self.optimizer = make_optimizer(self.stack.parameters.values(), schedule, capturable=schedule.capture)
        self.batches = Batches(data.to(device), schedule.batch_size, trim=schedule.layout == "packed")
        # The step's inputs, refilled before each step (a captured step reads them from these addresses).
        self.users = torch.zeros(self.size, schedule.batch_size, dtype=torch.long, device=device)
        self.valid = torch.zeros(self.size, schedule.batch_size, dtype=torch.bool, device=device)
        self.loss_sums = torch.zeros(self.size, device=device)

    def generators(self) -> list[torch.Generator]:
        """Every generator a step draws from (a CUDA graph registers them)."""
        return self.samplers + self.dropout + self.noise

    def epoch_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch's users and validity, (num_batches, K, batch_size) each: every run's own draw."""
        drawn = [self.batches.epoch(sampler, self.schedule.bucket_by_length) for sampler in self.samplers]
        users = torch.stack([run_users for run_users, _ in drawn], dim=1)
        return users, torch.stack([run_valid for _, run_valid in drawn], dim=1)

    def batch(self) -> Batch:
        """The (K, B, L) batch of ``users`` and ``valid``: each run's, with its own fresh negatives."""
        runs = [
            self.batches.batch(self.users[run], self.valid[run], sampler)
            for run, sampler in enumerate(self.samplers)
        ]
        return Batch(**{name: torch.stack([getattr(b, name) for b in runs]) for name in BATCH_FIELDS})

    def step(self) -> None:
        """One optimizer step of every run on the batches of ``users`` and ``valid``, each loss added up."""
        self.optimizer.zero_grad(set_to_none=True)
        batch = self.batch()
        self.stack.draw(batch.seqs)  # this step's dropout masks, the same in every pass
        losses = total_loss(loss_terms(self.stack, batch, self.coefficients), self.coefficients)
        # Each run's parameters receive only its own loss's gradient.
        losses.sum().backward()
        self.optimizer.step()
        self.loss_sums += losses.detach()

    def run_state(self, run: int) -> dict[str, Any]:
        """What a checkpoint of ``run`` saves besides its model: its slice of Adam's state and generators."""
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
            "device": self.device.type,
            "sampler_rng": self.samplers[run].get_state(),
            "dropout_rng": self.dropout[run].get_state(),
            "noise_rng": self.noise[run].get_state(),
        }

    def restore_run(self, run: int, state: dict[str, Any]) -> None:
        """Continue ``run`` from a ``run_state`` (its model's weights were restored before the stack)."""
        saved_on = state["device"]
        if saved_on != self.device.type:
            raise CatrecError(
                f"saved on {saved_on}, cannot resume on {self.device.type}: its random generators are "
                f"{saved_on} generators (resume it on {saved_on}, or delete its state directory to start "
                "it over)"
            )
        self.samplers[run].set_state(state["sampler_rng"])
        self.dropout[run].set_state(state["dropout_rng"])
        self.noise[run].set_state(state["noise_rng"])
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
