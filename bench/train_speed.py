"""Training and evaluation speed of SASRec and GRU4Rec: random batches (the default) vs. length-bucketed.

Not a test. For each dataset and model it times one training epoch (batch 128, hidden 100; pretraining's
clean loss, or with ``--method`` that method's fine-tuning loss, adversarial passes included) with random
batches, ``bucket_by_length=False`` (the reference sampler's batches; in the packed layout each trimmed to
its longest sequence and computed on the real positions only), and with ``bucket_by_length=True`` (users of
similar length share a batch: faster, but another training), and the full-ranking evaluation of every user
(validation split). The steps are the trainer's own (``catrec.training.Training.step``, replayed as a CUDA
graph by ``catrec.graph.CapturedStep`` where capture is on; ``--layout`` / ``--capture`` as ``train.layout``
/ ``train.capture``, resolved by ``catrec.config.resolve_layout``). Datasets: the real Beauty set (T=50)
from the shared data folder and a synthetic set shaped like ML-1M (6,040 users, 3,416 items, about 165 items
per user, T=200).

The last two columns put the random-batch step against the machine's limit: its achieved GFLOP/s (the
timed steps' FLOPs, counted with ``torch.utils.flop_counter.FlopCounterMode`` over the same batches trained
again untimed: forward, backward and any adversarial passes, matmuls and attention only, over the timed
seconds) and that rate as a share of the machine's measured fp32 matmul GFLOP/s (a square product, best of
10: 1024 x 1024 with one thread on the CPU, 8192 x 8192 on the GPU on CUDA).

    .venv/bin/python bench/train_speed.py [--epochs 1] [--device auto] [--layout auto] [--capture auto]
        [--datasets beauty ml1m-shaped] [--threads N] [--method pretrain] [--quick]

``--quick`` times at most QUICK_BATCHES batches of each batching and extrapolates to a whole epoch (random
batches are alike on average; bucketed ones come in a random order of length buckets, so their estimate is
rougher).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from catrec.adversarial import CLEAN_LOSS, RunLoss, make_loss
from catrec.cascade import cascade_matrix
from catrec.config import load_config, resolve_layout, stage_hparams
from catrec.data.formats import load_sequences
from catrec.data.sequences import SequenceData
from catrec.graph import WARMUP_STEPS, CapturedStep
from catrec.models import build_model
from catrec.runtime import resolve_device, set_precision
from catrec.settings import PretrainSettings
from catrec.trainer import evaluate
from catrec.training import Training
from catrec.vocabulary import METHOD_SPECS

REPO_ROOT = Path(__file__).resolve().parents[1]
BEAUTY_PATH = REPO_ROOT.parent / "shared" / "data" / "beauty" / "Beauty.txt"
PAPER_CONFIG = REPO_ROOT / "config" / "config.yaml"
BATCH_SIZE = 128
# Warm-up: past a captured step's uncaptured steps and its capture, so only replays are timed.
QUICK_BATCHES, WARMUP_BATCHES = 20, WARMUP_STEPS + 2
MODELS = ("sasrec", "gru4rec")
LAYOUTS = ("auto", "packed", "padded")
CAPTURES = ("auto", "true", "false")


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


def paper_hparams(
    model_name: str, max_len: int, *, bucket_by_length: bool, layout: str, capture: bool
) -> dict[str, object]:
    """The pretraining settings of config/config.yaml (hidden 100, batch 128, ...) at this T, batching,
    layout and capture (resolved: ``catrec.config.resolve_layout``)."""
    values = stage_hparams(load_config(PAPER_CONFIG), "pretrain", dataset="beauty", model=model_name, seed=0)
    assert values["batch_size"] == BATCH_SIZE
    return {
        **values,
        "max_len": max_len,
        "bucket_by_length": bucket_by_length,
        "layout": layout,
        "capture": capture,
    }


@dataclass
class EpochTiming:
    """Seconds per epoch (extrapolated where fewer batches were timed), and the timed steps' FLOPs."""

    seconds: float
    extrapolated: bool
    flops: int = 0  # of the timed steps, counted again untimed (``flop_counter``); 0: not counted
    timed_seconds: float = 0.0  # what those steps took

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s of the training step (the timed steps' FLOPs over their seconds)."""
        return self.flops / self.timed_seconds / 1e9 if self.flops else math.nan


def run_loss(method: str, data: SequenceData, model_name: str) -> RunLoss:
    """The training loss of ``method``: 'pretrain' the clean one, any other its fine-tuning loss at the
    settings of config/config.yaml (the paper's epsilon; a cascade method with its cascade matrix)."""
    if method == "pretrain":
        return CLEAN_LOSS
    config = load_config(PAPER_CONFIG)
    hparams = stage_hparams(config, "finetune", dataset="beauty", model=model_name, seed=0, method=method)
    terms = METHOD_SPECS[method].cascade
    cascade = None if terms is None else cascade_matrix(data.train_inputs(), BATCH_SIZE, terms)
    return make_loss(method, hparams, cascade, data)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(
    data: SequenceData,
    model_name: str,
    bucket: bool,
    device: torch.device,
    layout: tuple[str, bool],
    epochs: int,
    max_batches: int | None,
    count_flops: bool = False,
    loss: RunLoss = CLEAN_LOSS,
) -> EpochTiming:
    """Mean seconds per training epoch of the one path (``catrec.training.Training``, its step replayed as
    a CUDA graph where ``layout`` = (layout, capture) captures), whether it was extrapolated from
    ``max_batches`` batches, and with ``count_flops`` the FLOPs of the timed steps: each timed epoch's batches
    trained again under ``FlopCounterMode`` (forward, backward and any adversarial passes of the step; the
    uncaptured step, as a replayed graph dispatches no operator)."""
    hparams = paper_hparams(
        model_name, data.max_len, bucket_by_length=bucket, layout=layout[0], capture=layout[1]
    )
    settings = PretrainSettings.of(hparams, model=model_name)
    config = settings.train_config(settings.layout, settings.capture)
    torch.manual_seed(0)
    model = build_model(settings.model_config(data.num_items)).to(device)
    training = Training([model], data, [loss], [config.seed], config, device)
    step = CapturedStep(training.step, training.generators(), device) if config.capture else training.step

    def run(users: torch.Tensor, valid: torch.Tensor, count: int, function: Callable[[], None]) -> None:
        for index in range(count):
            training.users.copy_(users[index])
            training.valid.copy_(valid[index])
            function()

    users, valid = training.epoch_inputs()
    run(users, valid, WARMUP_BATCHES, step)  # past a captured step's warm-up and capture: replays timed
    total = len(training.batches)
    timed = total if max_batches is None else min(total, max_batches)
    timing = EpochTiming(0.0, timed < total)
    for _ in range(epochs):
        _synchronize(device)
        started = time.perf_counter()
        users, valid = training.epoch_inputs()
        training.loss_sums.zero_()
        run(users, valid, timed, step)
        training.loss_sums.tolist()  # reads the loss: waits for the device
        seconds = time.perf_counter() - started
        timing.seconds += seconds / epochs * total / timed
        if count_flops:
            with FlopCounterMode(display=False) as counter:
                run(users, valid, timed, training.step)
            timing.flops += counter.get_total_flops()
            timing.timed_seconds += seconds
    return timing


def matmul_size(device: torch.device) -> int:
    """The side of the square product ``matmul_gflops`` times: 1024 on the CPU (tens of milliseconds on one
    core), 8192 on CUDA (a 1024 product is over before a GPU's clock ramps up or its launch is paid)."""
    return 8192 if device.type == "cuda" else 1024


def matmul_gflops(device: torch.device, repeats: int = 10) -> float:
    """The best of ``repeats`` fp32 square products (``matmul_size``) in GFLOP/s: on the CPU with one
    thread, on CUDA the device's (at the configured precision): what the step's rate is held against."""
    size = matmul_size(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        a, b = (torch.randn(size, size, device=device) for _ in range(2))
        out = torch.empty_like(a)
        torch.mm(a, b, out=out)  # warm-up
        best = math.inf
        for _ in range(repeats):
            _synchronize(device)
            started = time.perf_counter()
            torch.mm(a, b, out=out)
            _synchronize(device)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return 2 * size**3 / best / 1e9


def eval_seconds(data: SequenceData, model_name: str, device: torch.device) -> float:
    """Seconds to rank all items for every user (validation split) on the device's copy of the data, as the
    trainer evaluates (``model(seqs)``: packed, no dropout, whatever the training's layout), after one
    warm-up batch."""
    hparams = paper_hparams(model_name, data.max_len, bucket_by_length=True, layout="packed", capture=False)
    model = build_model(PretrainSettings.of(hparams, model=model_name).model_config(data.num_items)).to(
        device
    )
    warmup = SequenceData.from_sequences([[1, 2, 3]], data.num_items, data.max_len).to(device)
    data = data.to(device)
    evaluate(model, warmup, "valid")
    started = time.perf_counter()
    evaluate(model, data, "valid")
    _synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per setting (mean reported)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS, help="train.layout (auto: by device)")
    parser.add_argument("--capture", default="auto", choices=CAPTURES, help="train.capture (auto: by device)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--beauty", type=Path, default=BEAUTY_PATH, help="the real Beauty set")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--method",
        default="pretrain",
        choices=("pretrain", *METHOD_SPECS),
        help="the trained loss (pretrain: the clean one; a method: its adversarial passes too)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"time at most {QUICK_BATCHES} batches of a kind, extrapolated"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    set_precision(load_config(PAPER_CONFIG)["train"]["precision"])  # as the pipeline's jobs compute
    capture = {"true": True, "false": False}.get(args.capture, args.capture)
    layout = resolve_layout(args.layout, capture, cuda=device.type == "cuda", runs=1)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_gflops(device)
    print(
        f"device {device}, layout {layout[0]}{' captured' if layout[1] else ''}, loss of {args.method}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}; fp32 matmul peak {peak:.1f} "
        f"GFLOP/s ({'one thread' if device.type == 'cpu' else device_label(device)}, "
        f"{matmul_size(device)} x {matmul_size(device)}, best of 10)"
    )
    header = (
        "| dataset | model | random s/epoch | bucketed s/epoch | speed-up | eval s (all users) "
        "| random step GFLOP/s | of matmul peak |"
    )
    rows = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in args.datasets:
        data = DATASETS[name](args.beauty)
        lengths = (data.train_inputs() != 0).sum(1).float()
        print(
            f"{name}: {data.num_users} users, {data.num_items} items, T={data.max_len}, "
            f"mean training input length {lengths.mean():.1f}"
        )
        for model_name in args.models:
            timed = QUICK_BATCHES if args.quick else None
            loss = run_loss(args.method, data, model_name)
            baseline = epoch_seconds(
                data, model_name, False, device, layout, args.epochs, timed, count_flops=True, loss=loss
            )
            bucketed = epoch_seconds(data, model_name, True, device, layout, args.epochs, timed, loss=loss)
            evaluation = eval_seconds(data, model_name, device)
            mark = "*" if baseline.extrapolated else ""
            rows.append(
                f"| {name} | {model_name} | {baseline.seconds:.2f}{mark} | {bucketed.seconds:.2f}{mark} | "
                f"{baseline.seconds / bucketed.seconds:.1f}x | {evaluation:.2f} | {baseline.gflops:.2f} | "
                f"{baseline.gflops / peak:.1%} |"
            )
            print(rows[-1], flush=True)
    print("\n".join(["", *rows]))
    if args.quick:
        print(f"* extrapolated from {QUICK_BATCHES} batches (--quick)")


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


if __name__ == "__main__":
    main()
