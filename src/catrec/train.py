"""Training: leave-one-out data, batches with negatives, the BCE loss of Eq. 3.5, the resumable loop.

Every user's chronological sequence is split leave-one-out (``catrec.data.leave_one_out``): the last item is
the test target, the second last the validation target, the rest the training sequence. Following section 3.2,
each training position predicts the next item with one sampled negative. Matrices are (m, T), left-padded with
item 0 so the most recent item is in the last column; batches keep only their last L columns (all-padding
columns dropped), which the models support (``catrec.models``).
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from catrec.data import leave_one_out, load_sequences
from catrec.errors import CatrecError
from catrec.io import atomic_path, load_torch_file
from catrec.metrics import rank_users
from catrec.models import ModelConfig, SequentialRecommender, build_model
from catrec.schemas import CURVE_COLUMNS

SPLITS = ("valid", "test")
CHECKPOINT_NAME = "checkpoint.pt"


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; an explicit 'cuda' without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CatrecError(f"device '{name}' requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _pad(rows: Sequence[Sequence[int]], width: int, *, left: bool) -> torch.Tensor:
    """(len(rows), width) int64 matrix of ``rows`` padded with 0 (rows must fit in ``width``)."""
    matrix = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        if row:
            if left:
                matrix[index, width - len(row) :] = row
            else:
                matrix[index, : len(row)] = row
    return torch.from_numpy(matrix)


@dataclass(frozen=True, eq=False)
class SequenceData:
    """One dataset split leave-one-out, as padded tensors (shared: callers must not modify them).

    ``_history`` holds each user's distinct items (training, validation and test) in ascending order, right
    padded with 0; ``_gaps`` and ``_free`` serve ``sample_negatives``.
    """

    num_items: int
    max_len: int
    _train_inputs: torch.Tensor
    _train_targets: torch.Tensor
    _eval_inputs: dict[str, torch.Tensor]
    _eval_targets: dict[str, torch.Tensor]
    _eval_exclude: dict[str, torch.Tensor]
    _history: torch.Tensor
    _gaps: torch.Tensor
    _free: torch.Tensor

    @classmethod
    def from_dir(cls, data_dir: str | Path, max_len: int) -> SequenceData:
        """Read ``sequences.txt`` and ``stats.json`` as written by ``catrec preprocess``."""
        data_dir = Path(data_dir)
        stats = json.loads((data_dir / "stats.json").read_text())
        return cls.from_sequences(load_sequences(data_dir / "sequences.txt"), int(stats["items"]), max_len)

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], num_items: int, max_len: int) -> SequenceData:
        if max_len < 1:
            raise ValueError(f"max_len must be positive, got {max_len}")
        training, valid_targets, test_targets, histories = [], [], [], []
        for user, sequence in enumerate(sequences):
            if not all(1 <= item <= num_items for item in sequence):
                raise CatrecError(f"user {user}: item ids must lie in 1..{num_items}")
            try:
                train, valid, test = leave_one_out(list(sequence))
            except ValueError as exc:
                raise CatrecError(f"user {user}: {exc}") from exc
            distinct = sorted(set(sequence))
            if len(distinct) == num_items:
                raise CatrecError(f"user {user} interacted with every item: no negative can be sampled")
            training.append(train)
            valid_targets.append(valid)
            test_targets.append(test)
            histories.append(distinct)

        def last(rows: Sequence[Sequence[int]]) -> torch.Tensor:
            return _pad([row[-max_len:] for row in rows], max_len, left=True)

        def right_padded(rows: Sequence[Sequence[int]]) -> torch.Tensor:
            return _pad(rows, max(1, max(map(len, rows))), left=False)

        with_valid = [train + [valid] for train, valid in zip(training, valid_targets, strict=True)]
        history = right_padded(histories)
        real = history != 0
        # gaps[j] = how many never-interacted items lie below the j-th history item (see sample_negatives);
        # padding gets num_items, above every drawable rank.
        gaps = torch.where(real, history - 1 - torch.arange(history.shape[1]), num_items)
        return cls(
            num_items=num_items,
            max_len=max_len,
            _train_inputs=last([train[:-1] for train in training]),
            _train_targets=last([train[1:] for train in training]),
            _eval_inputs={"valid": last(training), "test": last(with_valid)},
            _eval_targets={"valid": torch.tensor(valid_targets), "test": torch.tensor(test_targets)},
            _eval_exclude={"valid": right_padded(training), "test": right_padded(with_valid)},
            _history=history,
            _gaps=gaps,
            _free=num_items - real.sum(1),
        )

    @property
    def num_users(self) -> int:
        return self._train_inputs.shape[0]

    def train_inputs(self) -> torch.Tensor:
        """(m, T): each training sequence without its last item, the last T kept, left-padded."""
        return self._train_inputs

    def train_targets(self) -> torch.Tensor:
        """(m, T): the next item after each position of ``train_inputs``, 0 at padding."""
        return self._train_targets

    def eval_inputs(self, split: str) -> torch.Tensor:
        """(m, T): the history before the target (training, plus the validation item for 'test'), last T."""
        return self._eval_inputs[_check_split(split)]

    def eval_targets(self, split: str) -> torch.Tensor:
        """(m,): the validation or test item."""
        return self._eval_targets[_check_split(split)]

    def eval_exclude(self, split: str) -> torch.Tensor:
        """(m, H): every item of the full (untruncated) history before the target, right-padded with 0."""
        return self._eval_exclude[_check_split(split)]

    def history(self) -> torch.Tensor:
        """(m, H): each user's distinct items of all three parts, ascending, right-padded with 0."""
        return self._history

    def sample_negatives(self, users: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
        """(B, width) items drawn uniformly, independently, from the items each user never interacted with.

        Sampling by inversion instead of rejection: draw the rank r of the negative among the user's free
        items, then r-th free item = r + 1 + #{history items h_j below it} = r + 1 + #{j: gaps_j <= r}, where
        gaps_j counts the free items below h_j (non-decreasing, so a binary search finds the count). One
        draw per position, no retry loop, whatever the share of items the user has seen.
        """
        free = self._free[users].unsqueeze(1)
        uniform = torch.rand(len(users), width, generator=generator, dtype=torch.float64)
        # float64 makes uniform * free exact enough; the clamp guards the rounding of values just below 1.
        rank = torch.minimum((uniform * free).long(), free - 1)
        return rank + 1 + torch.searchsorted(self._gaps[users], rank, right=True)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (expected one of {SPLITS})")
    return split


@dataclass
class Batch:
    """Users (B,) and their last L columns of inputs, next items (positives) and negatives, all (B, L)."""

    users: torch.Tensor
    seqs: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{field.name: getattr(self, field.name).to(device) for field in fields(self)})


def num_batches(data: SequenceData, batch_size: int) -> int:
    return math.ceil(data.num_users / batch_size)


def iterate_batches(
    data: SequenceData, batch_size: int, generator: torch.Generator, bucket_by_length: bool
) -> Iterator[Batch]:
    """One epoch of training batches, with one fresh negative per real position (0 at padding).

    With ``bucket_by_length`` users of similar length share a batch (ties in random order, batches in random
    order) and each batch keeps only as many columns as its longest sequence; without it batches are random
    and padded to T, the straightforward way.
    """
    inputs, targets = data.train_inputs(), data.train_targets()
    lengths = (inputs != 0).sum(1)
    order = torch.randperm(data.num_users, generator=generator)
    if bucket_by_length:
        order = order[torch.argsort(lengths[order], stable=True)]
    chunks = order.split(batch_size)
    if bucket_by_length:
        chunks = [chunks[index] for index in torch.randperm(len(chunks), generator=generator).tolist()]
    for users in chunks:
        width = max(1, int(lengths[users].max())) if bucket_by_length else data.max_len
        pos = targets[users, -width:]
        neg = data.sample_negatives(users, width, generator) * (pos != 0)
        yield Batch(users=users, seqs=inputs[users, -width:], pos=pos, neg=neg)


def bce_from_scores(pos_scores: torch.Tensor, neg_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 3.5 with one negative, -(log sigma(r_pos) + log(1 - sigma(r_neg))), averaged over ``mask`` True.

    log(1 - sigma(x)) = log sigma(-x); logsigmoid stays finite for large scores. Scores at padding are
    replaced (not multiplied by 0) before the loss, so even inf or NaN there reach neither loss nor gradient.
    """
    zero = torch.zeros((), dtype=pos_scores.dtype, device=pos_scores.device)
    losses = -(
        F.logsigmoid(torch.where(mask, pos_scores, zero)) + F.logsigmoid(-torch.where(mask, neg_scores, zero))
    )
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def bce_loss(model: SequentialRecommender, batch: Batch) -> torch.Tensor:
    reps = model(batch.seqs)
    return bce_from_scores(model.score(reps, batch.pos), model.score(reps, batch.neg), batch.pos != 0)


LossFn = Callable[[SequentialRecommender, Batch], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 42
    device: str = "auto"
    threads: int = 1
    max_len: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    l2: float = 1e-5
    epochs: int = 500
    eval_every: int = 20
    checkpoint_every: int = 10
    bucket_by_length: bool = True

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> TrainConfig:
        """The training keys of ``--hparams``; the others belong to other stages."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in hparams.items() if key in names})


def model_config_from_hparams(hparams: Mapping[str, Any], num_items: int) -> ModelConfig:
    for key in ("model", "max_len"):
        if key not in hparams:
            raise CatrecError(f"--hparams lacks '{key}'")
    optional = {field.name for field in fields(ModelConfig)} - {"name", "num_items", "max_len"}
    return ModelConfig(
        name=hparams["model"],
        num_items=num_items,
        max_len=hparams["max_len"],
        **{key: hparams[key] for key in optional if key in hparams},
    )


def make_optimizer(model: SequentialRecommender, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the L2 penalty as weight decay (section 5.3).

    The fused kernel updates all parameters in one pass; on CPU it makes the step ~4x cheaper, which matters
    because the dense item-embedding update dominates a step on short sequences.
    """
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2, fused=True)


def train_step(
    model: SequentialRecommender, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
) -> float:
    """One optimizer step on ``batch`` (already on the model's device); returns the batch loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    return loss.item()


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


def _sampler_seed(seed: int) -> int:
    """A seed for the negative sampler, independent of the global torch stream seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def _fingerprint(
    config: TrainConfig,
    model: SequentialRecommender,
    phase: str,
    epoch_offset: int,
    model_selection: str,
    loss_settings: Mapping[str, Any],
) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (epochs may grow; evaluation settings may change)."""
    training = {
        key: value
        for key, value in asdict(config).items()
        if key not in ("device", "threads", "epochs", "eval_every", "checkpoint_every")
    }
    run = {"phase": phase, "epoch_offset": epoch_offset, "model_selection": model_selection}
    return {**training, **model.config.to_dict(), **run, **loss_settings}


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
    epoch_offset: int = 0,
    model_selection: str = "last",
    loss_settings: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``config.epochs`` epochs with Adam, resuming from ``state_dir`` when it holds a checkpoint.

    ``loss_settings`` (e.g. the method and its epsilon) must match too for a checkpoint to be resumed.

    Valid and test are evaluated every ``eval_every`` epochs and after the last one; the curve CSV is
    rewritten from memory after each evaluation. ``model_selection`` 'best_valid' ends with the weights of
    the evaluated epoch of highest validation NDCG@10 (the earliest on ties), 'last' with the final ones.
    """
    if model_selection not in ("last", "best_valid"):
        raise ValueError(f"unknown model_selection '{model_selection}' (expected 'last' or 'best_valid')")
    device = resolve_device(config.device)
    model.to(device)
    optimizer = make_optimizer(model, config)
    sampler = torch.Generator().manual_seed(_sampler_seed(config.seed))
    torch.manual_seed(config.seed)
    fingerprint = _fingerprint(config, model, phase, epoch_offset, model_selection, loss_settings or {})
    checkpoint = Path(state_dir) / CHECKPOINT_NAME
    progress = _Progress()
    if checkpoint.exists():
        progress = _restore(checkpoint, model, optimizer, sampler, fingerprint)
        if progress.epoch > config.epochs:
            raise CatrecError(
                f"{checkpoint} is at epoch {progress.epoch}, beyond the {config.epochs} requested; "
                "delete the state directory to start over"
            )
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
    total_batches = num_batches(data, config.batch_size)
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        loss_sum = 0.0
        bar = tqdm(
            iterate_batches(data, config.batch_size, sampler, config.bucket_by_length),
            total=total_batches,
            desc=f"{phase} epoch {epoch_offset + epoch}/{epoch_offset + config.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=None,  # no bar when stderr is a log file, only the per-evaluation lines
        )
        for step, batch in enumerate(bar, start=1):
            loss_sum += train_step(model, batch.to(device), loss_fn, optimizer)
            bar.set_postfix(loss=f"{loss_sum / step:.4f}", valid_ndcg=f"{last_ndcg:.4f}", refresh=False)
        progress.seconds += time.perf_counter() - started
        progress.epoch = epoch
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            last_ndcg = evaluate_epoch(epoch, loss_sum / total_batches)
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            _save_checkpoint(checkpoint, model, optimizer, sampler, progress, fingerprint)
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
    fingerprint: dict[str, Any],
) -> None:
    state = {
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler_rng": sampler.get_state(),
        "progress": vars(progress),
    }
    with atomic_path(path) as temp:
        torch.save(state, temp)


def _restore(
    path: Path,
    model: SequentialRecommender,
    optimizer: torch.optim.Optimizer,
    sampler: torch.Generator,
    fingerprint: dict[str, Any],
) -> _Progress:
    state = load_torch_file(path)
    if state["fingerprint"] != fingerprint:
        changed = sorted(key for key in fingerprint if state["fingerprint"].get(key) != fingerprint[key])
        raise CatrecError(
            f"{path} was written with other settings ({', '.join(changed)}); "
            "delete the state directory to start over"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["cpu_rng"])
    if torch.cuda.is_available() and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    sampler.set_state(state["sampler_rng"])
    return _Progress(**state["progress"])


def save_model(path: str | Path, model: SequentialRecommender) -> None:
    with atomic_path(path) as temp:
        torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, temp)


def load_model(path: str | Path, device: torch.device | str) -> SequentialRecommender:
    """The model saved by ``save_model``, on ``device``, in eval mode."""
    payload = load_torch_file(path, map_location=device)
    model = build_model(ModelConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


def write_metrics_json(
    path: str | Path,
    *,
    dataset: str,
    model: str,
    method: str,
    seed: int,
    valid: Mapping[str, float],
    test: Mapping[str, float],
    **extra: Any,
) -> None:
    record = {
        "dataset": dataset,
        "model": model,
        "method": method,
        "seed": seed,
        "valid": {key: valid[key] for key in ("ndcg@10", "hit@10")},
        "test": {key: test[key] for key in ("ndcg@10", "hit@10")},
        **extra,
    }
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(record, indent=2) + "\n")


def pretrain(
    *,
    data_dir: str | Path,
    hparams: Mapping[str, Any],
    dataset: str,
    model_name: str,
    checkpoint: str | Path,
    curve: str | Path,
    metrics: str | Path,
    state_dir: str | Path,
) -> None:
    """Train a base model with the BCE loss (Eq. 3.5) and write its weights, curve and metrics."""
    if hparams.get("model", model_name) != model_name:
        raise CatrecError(f"--model {model_name} disagrees with --hparams model '{hparams['model']}'")
    config = TrainConfig.from_hparams(hparams)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)
    data = SequenceData.from_dir(data_dir, config.max_len)
    model_config = model_config_from_hparams({**hparams, "model": model_name}, data.num_items)
    model = build_model(model_config).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"pretrain {dataset}/{model_name}: device {device}, {data.num_users} users, {data.num_items} items, "
        f"T={config.max_len}, {parameters} parameters, {config.epochs} epochs"
    )
    result = fit(
        model,
        data,
        bce_loss,
        config,
        phase="pretrain",
        curve_path=curve,
        state_dir=state_dir,
        model_selection="last",
    )
    if result.epochs_trained:
        print(f"pretrain {dataset}/{model_name}: {result.train_seconds / result.epochs_trained:.2f} s/epoch")
    save_model(checkpoint, model)
    write_metrics_json(
        metrics,
        dataset=dataset,
        model=model_name,
        method="pretrain",
        seed=config.seed,
        valid=result.valid,
        test=result.test,
    )
