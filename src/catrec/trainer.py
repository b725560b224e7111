"""The trainer: Adam on a loss, periodic evaluation, learning curves and resumable checkpoints.

``fit`` runs the epochs of one run. Its state directory (``catrec.state``) belongs to one run identity, so a
checkpoint found there is always this run's: resuming continues it bit for bit (model, optimizer and every
random stream are restored). The steps themselves are run by the engine of ``TrainConfig.engine``
(``catrec.engine``).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from catrec.data.batches import num_batches
from catrec.data.sequences import SPLITS, SequenceData
from catrec.engine import make_engine
from catrec.errors import CatrecError
from catrec.io import atomic_path, load_torch_file, save_torch_file
from catrec.losses import LossFn
from catrec.metrics import rank_users
from catrec.models import SequentialRecommender
from catrec.vocabulary import CURVE_COLUMNS

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """The schedule of one run: the training keys of its ``--hparams`` (validated by ``catrec.config``)."""

    seed: int
    batch_size: int
    lr: float
    l2: float
    epochs: int
    eval_every: int
    checkpoint_every: int
    bucket_by_length: bool
    engine: str  # eager | static, resolved (catrec.runtime.resolve_engine)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> TrainConfig:
        """The schedule keys of a validated ``--hparams`` (the stage checked it holds exactly its keys)."""
        missing = [item.name for item in fields(cls) if item.name not in hparams]
        if missing:
            raise CatrecError(f"--hparams lacks '{missing[0]}'")
        return cls(**{item.name: hparams[item.name] for item in fields(cls)})


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


def fit(
    model: SequentialRecommender,
    data: SequenceData,
    loss_fn: LossFn,
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

    The engine ``config.engine`` runs the steps; 'static' also evaluates on ``device``. The model is left in
    its eager layout.

    ``state_dir`` must belong to this run alone (``catrec.state.run_state``): its checkpoint is resumed as is.

    Valid and test are evaluated every ``eval_every`` epochs and after the last one; the curve CSV is
    rewritten from memory after each evaluation. ``model_selection`` 'best_valid' ends with the weights of
    the evaluated epoch of highest validation NDCG@10 (the earliest on ties), 'last' with the final ones.
    """
    if model_selection not in ("last", "best_valid"):
        raise ValueError(f"unknown model_selection '{model_selection}' (expected 'last' or 'best_valid')")
    model.to(device)
    if config.engine == "static":
        data = data.to(device)
    engine = make_engine(config.engine, model, data, loss_fn, config, device)
    torch.manual_seed(config.seed)
    checkpoint = Path(state_dir) / CHECKPOINT_NAME
    progress = _Progress()
    if checkpoint.exists():
        progress = _restore(checkpoint, model, engine.optimizer, engine.sampler)
        print(f"{phase}: resuming from {checkpoint} at epoch {epoch_offset + progress.epoch}")

    def evaluate_epoch(epoch: int, loss: float) -> float:
        metrics = {split: evaluate(model, data, split) for split in SPLITS}
        for split in SPLITS:
            row = {"epoch": epoch_offset + epoch, "phase": phase, "split": split, **metrics[split]}
            progress.rows.append({**row, "loss": loss, "seconds": progress.seconds})
        _write_curve(curve_path, progress.rows)
        ndcg = metrics["valid"]["ndcg@10"]
        if model_selection == "best_valid" and ndcg > progress.best_ndcg:
            progress.best_epoch, progress.best_ndcg = epoch, ndcg
            progress.best_weights = {
                name: value.detach().cpu().clone() for name, value in model.state_dict().items()
            }
        tqdm.write(
            f"{phase} epoch {epoch_offset + epoch}: loss {loss:.4f}  "
            + "  ".join(f"{split} ndcg@10 {metrics[split]['ndcg@10']:.4f}" for split in SPLITS)
        )
        return ndcg

    valid_rows = [row for row in progress.rows if row["split"] == "valid"]
    last_ndcg = valid_rows[-1]["ndcg@10"] if valid_rows else math.nan
    last_loss = math.nan
    total_batches = num_batches(data, config.batch_size)
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        bar = tqdm(
            engine.epoch(),
            total=total_batches,
            desc=f"{phase} epoch {epoch_offset + epoch}/{epoch_offset + config.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=None,  # no bar when stderr is a log file, only the per-evaluation lines
            # The last epoch's numbers: the static engine reads its loss once per epoch, never per step.
            postfix={"last_loss": f"{last_loss:.4f}", "valid_ndcg": f"{last_ndcg:.4f}"},
        )
        for _ in bar:
            pass
        last_loss = engine.mean_loss()
        progress.seconds += time.perf_counter() - started
        progress.epoch = epoch
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            last_ndcg = evaluate_epoch(epoch, last_loss)
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            _save_checkpoint(checkpoint, model, engine.optimizer, engine.sampler, progress)
    model.use_static(None)
    if not progress.rows:
        # Zero epochs requested: report the model as given.
        evaluate_epoch(0, math.nan)
    _write_curve(curve_path, progress.rows)
    if model_selection == "best_valid":
        assert progress.best_weights is not None  # set by the first evaluation, and every run evaluates
        model.load_state_dict(progress.best_weights)
        selected = progress.best_epoch
    else:
        selected = progress.rows[-1]["epoch"] - epoch_offset
    metrics = {row["split"]: row for row in progress.rows if row["epoch"] == epoch_offset + selected}
    return FitResult(
        selected_epoch=epoch_offset + selected,
        valid={key: metrics["valid"][key] for key in ("ndcg@10", "hit@10")},
        test={key: metrics["test"][key] for key in ("ndcg@10", "hit@10")},
        train_seconds=progress.seconds,
        epochs_trained=progress.epoch,
    )


def _save_checkpoint(
    path: Path,
    model: SequentialRecommender,
    optimizer: torch.optim.Optimizer,
    sampler: torch.Generator,
    progress: _Progress,
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler_rng": sampler.get_state(),
        "progress": vars(progress),
    }
    save_torch_file(path, state)


def _restore(
    path: Path,
    model: SequentialRecommender,
    optimizer: torch.optim.Optimizer,
    sampler: torch.Generator,
) -> _Progress:
    state = load_torch_file(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["cpu_rng"])
    if torch.cuda.is_available() and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    sampler.set_state(state["sampler_rng"])
    return _Progress(**state["progress"])
