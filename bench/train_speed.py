"""Training and evaluation speed of SASRec and GRU4Rec: random batches (the default) vs. length-bucketed.

Not a test. For each dataset and model it times one training epoch (batch 128, hidden 100) with random
batches, ``bucket_by_length=False`` (the reference sampler's batches; with the eager engine each trimmed to
its longest sequence, SASRec on the packed real positions), and with ``bucket_by_length=True`` (users of
similar length share a batch: faster, but another training), and the full-ranking evaluation of every user
(validation split). The steps are the trainer's own (``catrec.engine.make_engine``, ``--engine`` as
``train.engine``). Datasets: the real Beauty set (T=50) from the shared data folder
and a synthetic set shaped like ML-1M (6,040 users, 3,416 items, about 165 items per user, T=200).

    .venv/bin/python bench/train_speed.py [--epochs 1] [--device auto] [--engine auto]
        [--datasets beauty ml1m-shaped] [--threads N] [--quick]

``--quick`` times at most QUICK_BATCHES batches of each batching and extrapolates to a whole epoch (random
batches are alike on average; bucketed ones come in a random order of length buckets, so their estimate is
rougher).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from catrec.config import load_config, stage_hparams
from catrec.data.batches import num_batches
from catrec.data.formats import load_sequences
from catrec.data.sequences import SequenceData
from catrec.engine import WARMUP_STEPS, make_engine
from catrec.losses import bce_loss
from catrec.models import ModelConfig, build_model
from catrec.models.dropout import DropoutMasks
from catrec.runtime import ENGINES, resolve_device, resolve_engine, set_precision
from catrec.trainer import TrainConfig, evaluate

REPO_ROOT = Path(__file__).resolve().parents[1]
BEAUTY_PATH = REPO_ROOT.parent / "shared" / "data" / "beauty" / "Beauty.txt"
PAPER_CONFIG = REPO_ROOT / "config" / "config.yaml"
BATCH_SIZE = 128
# Warm-up: past the static engine's uncaptured steps and its capture, so only replays are timed.
QUICK_BATCHES, WARMUP_BATCHES = 20, WARMUP_STEPS + 2
MODELS = ("sasrec", "gru4rec")


def beauty(path: Path) -> SequenceData:
    if not path.is_file():
        raise SystemExit(f"{path}: no Beauty file (--beauty PATH names it)")
    sequences = load_sequences(path)
    return SequenceData.from_sequences(sequences, max(map(max, sequences)), max_len=50)


def ml1m_shaped(users: int = 6040, items: int = 3416, seed: int = 0) -> SequenceData:
    """Random sequences with ML-1M's size and a long-tailed length distribution (min 20, mean about 165)."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(20 + rng.exponential(145, users).astype(int), items - 1)
    sequences = [(rng.permutation(items)[:length] + 1).tolist() for length in lengths]
    return SequenceData.from_sequences(sequences, items, max_len=200)


DATASETS: dict[str, Callable[[Path], SequenceData]] = {
    "beauty": beauty,
    "ml1m-shaped": lambda _beauty: ml1m_shaped(),
}


def paper_hparams(model_name: str, max_len: int, *, bucket_by_length: bool, engine: str) -> dict[str, object]:
    """The pretraining settings of config/config.yaml (hidden 100, batch 128, ...) at this T, batching and
    engine."""
    values = stage_hparams(load_config(PAPER_CONFIG), "pretrain", dataset="beauty", model=model_name, seed=0)
    assert values["batch_size"] == BATCH_SIZE
    return {**values, "max_len": max_len, "bucket_by_length": bucket_by_length, "engine": engine}


def epoch_seconds(
    data: SequenceData,
    model_name: str,
    bucket: bool,
    device: torch.device,
    engine_name: str,
    epochs: int,
    max_batches: int | None,
) -> tuple[float, bool]:
    """Mean seconds per training epoch, and whether it was extrapolated from ``max_batches`` batches."""
    hparams = paper_hparams(model_name, data.max_len, bucket_by_length=bucket, engine=engine_name)
    config = TrainConfig.from_hparams(hparams)
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_hparams(hparams, data.num_items)).to(device).train()
    engine = make_engine(engine_name, [model], data, [bce_loss], config, device)
    for _ in itertools.islice(engine.epoch(), WARMUP_BATCHES):
        pass
    engine.mean_losses()
    total = num_batches(data, BATCH_SIZE)
    timed = total if max_batches is None else min(total, max_batches)
    seconds = 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        for _ in itertools.islice(engine.epoch(), timed):
            pass
        engine.mean_losses()  # reads the loss: waits for the device
        seconds += time.perf_counter() - started
    return seconds / epochs * total / timed, timed < total


def eval_seconds(data: SequenceData, model_name: str, device: torch.device, engine_name: str) -> float:
    """Seconds to rank all items for every user (validation split), after one warm-up batch.

    As the trainer evaluates with ``engine_name``: 'static' on the device's copy of the data, static layout.
    """
    hparams = paper_hparams(model_name, data.max_len, bucket_by_length=True, engine=engine_name)
    model = build_model(ModelConfig.from_hparams(hparams, data.num_items)).to(device)
    warmup = SequenceData.from_sequences([[1, 2, 3]], data.num_items, data.max_len)
    if engine_name == "static":
        model.use_static(DropoutMasks())
        data, warmup = data.to(device), warmup.to(device)
    evaluate(model, warmup, "valid")
    started = time.perf_counter()
    evaluate(model, data, "valid")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per setting (mean reported)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--engine", default="auto", choices=ENGINES, help="train.engine (auto: per device)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--beauty", type=Path, default=BEAUTY_PATH, help="the real Beauty set")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--quick", action="store_true", help=f"time at most {QUICK_BATCHES} batches of a kind, extrapolated"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    set_precision(load_config(PAPER_CONFIG)["train"]["precision"])  # as the pipeline's jobs compute
    engine = resolve_engine(args.engine, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device {device}, engine {engine}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    )
    header = "| dataset | model | random s/epoch | bucketed s/epoch | speed-up | eval s (all users) |"
    rows = [header, "|---|---|---:|---:|---:|---:|"]
    for name in args.datasets:
        data = DATASETS[name](args.beauty)
        lengths = (data.train_inputs() != 0).sum(1).float()
        print(
            f"{name}: {data.num_users} users, {data.num_items} items, T={data.max_len}, "
            f"mean training input length {lengths.mean():.1f}"
        )
        for model_name in args.models:
            timed = QUICK_BATCHES if args.quick else None
            baseline, extrapolated = epoch_seconds(
                data, model_name, False, device, engine, args.epochs, timed
            )
            bucketed, _ = epoch_seconds(data, model_name, True, device, engine, args.epochs, timed)
            evaluation = eval_seconds(data, model_name, device, engine)
            mark = "*" if extrapolated else ""
            rows.append(
                f"| {name} | {model_name} | {baseline:.2f}{mark} | {bucketed:.2f}{mark} | "
                f"{baseline / bucketed:.1f}x | {evaluation:.2f} |"
            )
            print(rows[-1], flush=True)
    print("\n".join(["", *rows]))
    if args.quick:
        print(f"* extrapolated from {QUICK_BATCHES} batches (--quick)")


if __name__ == "__main__":
    main()
