"""The trainer: Adam on a loss, periodic evaluation, learning curves and resumable checkpoints.

``fit`` runs the epochs of one run. Its state directory (``catrec.state``) belongs to one run identity, so a
checkpoint found there is always this run's: resuming continues it bit for bit (model, optimizer and every
random stream are restored). Every run is trained as a stack of K >= 1 runs (``catrec.training``): the
epoch loop below calls its ``step`` once per batch, or, with ``capture``, replays it as a CUDA graph.
"""

from __future__ import annotations

import csv
import gc
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from catrec.adversarial import RunLoss
from catrec.data.sequences import SPLITS, SequenceData
from catrec.errors import CatrecError
from catrec.graph import CapturedStep
from catrec.io import atomic_path, load_torch_file, save_torch_file
from catrec.metrics import rank_users
from catrec.models import SequentialRecommender, check_finite_weights
from catrec.training import Training
from catrec.vocabulary import CURVE_COLUMNS

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """The schedule of one run: the training keys of its settings (``catrec.settings``, ``train_config``)."""

    seed: int
    batch_size: int
    lr: float
    l2: float
    epochs: int
    eval_every: int
    checkpoint_every: int
    bucket_by_length: bool
    layout: str  # packed | padded, resolved (catrec.config.resolve_layout)
    capture: bool  # replay the step as a CUDA graph, resolved (catrec.config.resolve_layout)
    precision: str  # fp32 | tf32, applied by the stage (catrec.runtime.configure)


def evaluate(
    model: SequentialRecommender, data: SequenceData, split: str, batch_size: int = 1024
) -> dict[str, float]:
    """Mean NDCG@10 and Hit@10 over all users, ranking all items but the user's history (section 5.4)."""
    ndcg, hit = rank_users(
        model, data.eval_inputs(split), data.eval_targets(split), data.eval_exclude(split), batch_size
    )
    return {"ndcg@10": ndcg.double().mean().item(), "hit@10": hit.double().mean().item()}


@dataclass
class FitResult:
    """The selected weights' epoch (curve numbering) and metrics, and the cumulative training time."""

    selected_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    epochs_trained: int


@dataclass
class _Progress:
    """Everything a checkpoint restores besides the model, optimizer and RNG states."""

    epoch: int = 0
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_ndcg: float = -math.inf
    best_weights: dict[str, torch.Tensor] | None = None


def _write_curve(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


@dataclass
class Run:
    """One run of ``fit_runs``: its model, loss and the files it writes. ``label`` names it in the log;
    ``seed`` is its own where the runs of a stack differ in seed alone (pretraining across seeds), else
    the schedule's."""

    model: SequentialRecommender
    loss: RunLoss
    phase: str
    curve_path: str | Path
    state_dir: str | Path
    epoch_offset: int = 0
    model_selection: str = "last"
    label: str = ""
    seed: int | None = None


def _seed_of(run: Run, config: TrainConfig) -> int:
    return config.seed if run.seed is None else run.seed


def fit(
    model: SequentialRecommender,
    data: SequenceData,
    loss: RunLoss,
    config: TrainConfig,
    *,
    phase: str,
    curve_path: str | Path,
    state_dir: str | Path,
    device: torch.device,
    epoch_offset: int = 0,
    model_selection: str = "last",
) -> FitResult:
    """Train ``config.epochs`` epochs with Adam, resuming from ``state_dir`` when it holds a checkpoint.

    ``state_dir`` must belong to this run alone (``catrec.state.run_state``): its checkpoint is resumed as is.

    Valid and test are evaluated every ``eval_every`` epochs and after the last one; the curve CSV is
    rewritten from memory after each evaluation. ``model_selection`` 'best_valid' ends with the weights of
    the evaluated epoch of highest validation NDCG@10 (the earliest on ties), 'last' with the final ones.
    """
    run = Run(model, loss, phase, curve_path, state_dir, epoch_offset, model_selection)
    (result,) = fit_runs([run], data, config, device=device)
    return result


class _RunProgress:
    """One run of ``fit_runs`` in progress: its checkpoint, evaluations and model selection."""

    def __init__(self, run: Run, data: SequenceData) -> None:
        if run.model_selection not in ("last", "best_valid"):
            raise ValueError(
                f"unknown model_selection '{run.model_selection}' (expected 'last' or 'best_valid')"
            )
        self.run, self._data = run, data
        self.checkpoint = Path(run.state_dir) / CHECKPOINT_NAME
        self.progress = _Progress()
        self.saved: dict[str, Any] | None = None
        if self.checkpoint.exists():
            self.saved = load_torch_file(self.checkpoint, keys=("model", "progress"))
            check_finite_weights(self.saved["model"], self.checkpoint)
            run.model.load_state_dict(self.saved["model"])
            self.progress = _Progress(**self.saved["progress"])
            check_finite_weights(self.progress.best_weights or {}, self.checkpoint)
            print(f"{self.name}: resuming from {self.checkpoint} at epoch {self.epoch(self.progress.epoch)}")
        valid_rows = [row for row in self.progress.rows if row["split"] == "valid"]
        self.last_ndcg = valid_rows[-1]["ndcg@10"] if valid_rows else math.nan

    @property
    def name(self) -> str:
        return f"{self.run.phase} {self.run.label}".strip()

    def epoch(self, epoch: int) -> int:
        """``epoch`` of this run in the curve's numbering (fine-tuning continues pretraining's)."""
        return self.run.epoch_offset + epoch

    def evaluate(self, epoch: int, loss: float) -> None:
        model, progress = self.run.model, self.progress
        metrics = {split: evaluate(model, self._data, split) for split in SPLITS}
        for split in SPLITS:
            row = {"epoch": self.epoch(epoch), "phase": self.run.phase, "split": split, **metrics[split]}
            progress.rows.append({**row, "loss": loss, "seconds": progress.seconds})
        _write_curve(self.run.curve_path, progress.rows)
        ndcg = metrics["valid"]["ndcg@10"]
        if self.run.model_selection == "best_valid" and ndcg > progress.best_ndcg:
            progress.best_epoch, progress.best_ndcg = epoch, ndcg
            progress.best_weights = {
                name: value.detach().cpu().clone() for name, value in model.state_dict().items()
            }
        tqdm.write(
            f"{self.name} epoch {self.epoch(epoch)}: loss {loss:.4f}  "
            + "  ".join(f"{split} ndcg@10 {metrics[split]['ndcg@10']:.4f}" for split in SPLITS)
        )
        self.last_ndcg = ndcg

    def save(self, training_state: dict[str, Any]) -> None:
        state = {
            "model": self.run.model.state_dict(),
            **training_state,
            "progress": vars(self.progress),
        }
        save_torch_file(self.checkpoint, state)

    def result(self) -> FitResult:
        progress, run = self.progress, self.run
        if not progress.rows:
            # Zero epochs requested: report the model as given.
            self.evaluate(0, math.nan)
        _write_curve(run.curve_path, progress.rows)
        if run.model_selection == "best_valid":
            assert progress.best_weights is not None  # set by the first evaluation, and every run evaluates
            run.model.load_state_dict(progress.best_weights)
            selected = progress.best_epoch
        else:
            selected = progress.rows[-1]["epoch"] - run.epoch_offset
        metrics = {row["split"]: row for row in progress.rows if row["epoch"] == self.epoch(selected)}
        return FitResult(
            selected_epoch=self.epoch(selected),
            valid={key: metrics["valid"][key] for key in ("ndcg@10", "hit@10")},
            test={key: metrics["test"][key] for key in ("ndcg@10", "hit@10")},
            train_seconds=progress.seconds,
            epochs_trained=progress.epoch,
        )


def fit_runs(
    runs: Sequence[Run],
    data: SequenceData,
    config: TrainConfig,
    *,
    device: torch.device,
    max_stack: int | None = None,
) -> list[FitResult]:
    """``fit`` for several runs of one schedule, trained together (one stack, ``catrec.models.stack``).

    Each run resumes from its own checkpoint and keeps its own curve, evaluations and model selection; a
    run that has finished trains no epoch again. Runs resumed at different epochs are trained in groups of
    equal epoch, so the runs of one stack always take the same steps; ``max_stack`` caps a stack's size
    (a memory bound: more runs are trained in consecutive stacks). More than one run needs the padded layout.

    Weights resumed from a checkpoint must be finite, and a non-finite mean loss of an epoch (any run of
    the stack) raises a CatrecError naming the run and the epoch before that epoch is evaluated or saved.
    """
    for run in runs:
        run.model.to(device)
    data = data.to(device)
    states = [_RunProgress(run, data) for run in runs]
    for start in sorted({state.progress.epoch for state in states if state.progress.epoch < config.epochs}):
        group = [state for state in states if state.progress.epoch == start]
        size = max_stack or len(group)
        for first in range(0, len(group), size):
            _train_group(group[first : first + size], data, config, device)
            _release_memory(device)
    return [state.result() for state in states]


def _release_memory(device: torch.device) -> None:
    """Free the memory of the stack ``_train_group`` just trained before the next one is built (on CUDA:
    and captured), so consecutive stacks (``max_stack``) never hold two stacks' parameters, Adam state and
    CUDA-graph pool at once.

    The training is freed when ``_train_group`` returns but for one reference cycle torch leaves: the first
    optimizer of a process imports ``torch._dynamo``, and that import keeps the frames it was called from,
    the training's among them, in a cycle (``torch.fx.wrap`` holds its own frame in a local), which only the
    cyclic garbage collector frees, whenever it next runs. Collected here; CUDA's caching allocator then
    hands the freed blocks back to the device.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _train_group(
    group: list[_RunProgress], data: SequenceData, config: TrainConfig, device: torch.device
) -> None:
    """Train the runs of ``group`` (all at the same epoch) from there to ``config.epochs``, as one stack."""
    models = [state.run.model for state in group]
    seeds = [_seed_of(state.run, config) for state in group]
    training = Training(models, data, [state.run.loss for state in group], seeds, config, device)
    for index, state in enumerate(group):
        if state.saved is not None:
            try:
                training.restore_run(index, state.saved)
            except CatrecError as error:
                raise CatrecError(f"{state.checkpoint} ({state.name}): {error}") from error
    step = CapturedStep(training.step, training.generators(), device) if config.capture else training.step
    first = group[0]
    last_losses = [math.nan] * len(group)
    for epoch in range(first.progress.epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        users, valid = training.epoch_inputs()
        training.loss_sums.zero_()
        bar = tqdm(
            range(len(users)),
            desc=f"{first.name if len(group) == 1 else f'{len(group)} runs'} epoch "
            f"{first.epoch(epoch)}/{first.epoch(config.epochs)}",
            leave=False,
            dynamic_ncols=True,
            disable=None,  # no bar when stderr is a log file, only the per-evaluation lines
            # The last epoch's numbers: the loss is read once per epoch, never per step.
            postfix={"last_loss": f"{last_losses[0]:.4f}", "valid_ndcg": f"{first.last_ndcg:.4f}"},
        )
        for index in bar:
            training.users.copy_(users[index])
            training.valid.copy_(valid[index])
            step()
        last_losses = (training.loss_sums / len(users)).tolist()
        for state, loss in zip(group, last_losses, strict=True):
            if not math.isfinite(loss):
                # Its weights are damaged now: evaluating or saving them would report NDCG 0 or an
                # earlier epoch's results as this run's. The checkpoint keeps the last finite epoch.
                raise CatrecError(
                    f"{state.name} run {state.run.state_dir}: the training loss of epoch "
                    f"{state.epoch(epoch)} is {loss}; stopped, no metrics written (a diverged run: lower "
                    "train.lr, or check the pretrained weights)"
                )
        seconds = time.perf_counter() - started
        training.stack.write_back()
        for index, state in enumerate(group):
            state.progress.seconds += seconds
            state.progress.epoch = epoch
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                state.evaluate(epoch, last_losses[index])
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                state.save(training.run_state(index))
