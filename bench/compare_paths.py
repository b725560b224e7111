"""Training speed of this checkout's packed layout against a baseline checkout's eager engine, alternating.

Not a test. Issue 31 asks that the one training path, in the packed layout (the CPU's), train within 5% of
the eager engine it replaced. Two persistent worker processes, one per checkout (each its own interpreter and
``src`` on PYTHONPATH, one torch thread each), train SASRec and GRU4Rec on the real Beauty set with the
pretraining settings of config/config.yaml (hidden 100, batch 128, T = 50, random batches:
``bucket_by_length: false``, the clean loss); on request a worker trains ``--steps`` steps (default: one whole
epoch, so both sides train every user once and the batch widths average out) and answers the seconds. The two
alternate round by round, the order flipping each round, so load beside the bench hits both alike; the
result is the median seconds per step of each and the ratio new / old of the medians.

    .venv/bin/python bench/compare_paths.py --baseline /work/main [--baseline-python PATH] [--rounds 5]
        [--steps 0] [--models sasrec gru4rec] [--beauty PATH] [--csv docs/evidence/one-path/speed.csv]

The baseline worker runs this file with ``--baseline-python`` (default ``<baseline>/.venv/bin/python``) and
``PYTHONPATH=<baseline>/src``; it trains with the baseline's ``catrec.engine.make_engine('eager', ...)``, the
new one with ``catrec.training.Training`` in the packed layout, as ``catrec.trainer`` runs it.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BEAUTY_PATH = REPO_ROOT.parent / "shared" / "data" / "beauty" / "Beauty.txt"
MODELS = ("sasrec", "gru4rec")
WARMUP_STEPS = 5  # untimed steps after a worker builds a model: first-call allocations
PATHS = ("old eager", "new packed")


# --- the workers: each imports only its own checkout's catrec -------------------------------------------


def _hparams(model_name: str) -> dict[str, Any]:
    from catrec.config import load_config, stage_hparams

    values = stage_hparams(
        load_config(Path("config") / "config.yaml"), "pretrain", dataset="beauty", model=model_name, seed=0
    )
    return {**values, "max_len": 50, "bucket_by_length": False}


def _old_trainer(data: Any, model_name: str) -> Callable[[int], tuple[float, float]]:
    """The baseline's eager engine: ``train(steps)`` trains ``steps`` steps (0: one epoch), answers the
    seconds and the mean loss. Its imports are the baseline's catrec (``catrec.engine``: gone from this
    checkout)."""
    import importlib
    import itertools

    import torch

    from catrec.models import ModelConfig, build_model
    from catrec.trainer import TrainConfig

    make_engine = importlib.import_module("catrec.engine").make_engine
    bce_loss = importlib.import_module("catrec.losses").bce_loss
    hparams = {**_hparams(model_name), "engine": "eager"}
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_hparams(hparams, data.num_items)).train()
    engine = make_engine(
        "eager", [model], data, [bce_loss], TrainConfig.from_hparams(hparams), torch.device("cpu")
    )

    def train(steps: int) -> tuple[float, float]:
        started = time.perf_counter()
        for _ in itertools.islice(engine.epoch(), steps or None):
            pass
        (loss,) = engine.mean_losses()
        return time.perf_counter() - started, loss

    for _ in itertools.islice(engine.epoch(), WARMUP_STEPS):
        pass
    return train


def _new_trainer(data: Any, model_name: str) -> Callable[[int], tuple[float, float]]:
    """This checkout's one path, packed, uncaptured: the epoch loop of ``catrec.trainer._train_group``."""
    import torch

    from catrec.adversarial import CLEAN_LOSS
    from catrec.models import build_model
    from catrec.settings import PretrainSettings
    from catrec.training import Training

    settings = PretrainSettings.of(_hparams(model_name), model=model_name)
    config = settings.train_config("packed", False)
    torch.manual_seed(0)
    model = build_model(settings.model_config(data.num_items))
    training = Training([model], data, [CLEAN_LOSS], [config.seed], config, torch.device("cpu"))

    def train(steps: int) -> tuple[float, float]:
        started = time.perf_counter()
        users, valid = training.epoch_inputs()
        training.loss_sums.zero_()
        count = min(steps, len(users)) if steps else len(users)
        for index in range(count):
            training.users.copy_(users[index])
            training.valid.copy_(valid[index])
            training.step()
        (loss,) = training.loss_sums.tolist()  # reads the loss, as the trainer does once per epoch
        return time.perf_counter() - started, loss / count

    train(WARMUP_STEPS)
    return train


def worker(kind: str, beauty: Path) -> None:
    """Answer requests on stdin, one a line: ``model <name>`` builds and warms up a model, ``train <steps>``
    trains and prints ``<seconds> <steps> <mean loss>``, ``quit`` ends."""
    import torch

    from catrec.data.formats import load_sequences
    from catrec.data.sequences import SequenceData
    from catrec.runtime import set_precision

    torch.set_num_threads(1)
    set_precision("fp32")
    sequences = load_sequences(beauty)
    data = SequenceData.from_sequences(sequences, max(map(max, sequences)), max_len=50)
    steps_per_epoch = -(-data.num_users // 128)
    build = _old_trainer if kind == "old" else _new_trainer
    train: Callable[[int], tuple[float, float]] | None = None
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "model":
            train = build(data, argument)
            print("ready", flush=True)
        elif command == "train" and train is not None:
            steps = int(argument)
            seconds, loss = train(steps)
            count = min(steps, steps_per_epoch) if steps else steps_per_epoch
            print(f"{seconds} {count} {loss}", flush=True)
        elif command == "quit":
            return
        else:
            raise SystemExit(f"worker {kind}: unknown request '{line.strip()}'")


# --- the driver ---------------------------------------------------------------------------------------


class Worker:
    def __init__(self, kind: str, python: Path, checkout: Path, beauty: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "OMP_NUM_THREADS": "1"}
        command = [str(python), str(Path(__file__).resolve()), "--worker", kind, "--beauty", str(beauty)]
        self.process = subprocess.Popen(
            command, cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, request: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise SystemExit(f"a worker ended on '{request}' (exit {self.process.wait()})")
        return answer.strip()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="the baseline checkout (a git worktree of main)")
    parser.add_argument("--baseline-python", type=Path, help="its interpreter (default <baseline>/.venv)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per model (>= 5)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per round (0: one whole epoch)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--beauty", type=Path, default=BEAUTY_PATH, help="the real Beauty set")
    parser.add_argument("--csv", type=Path, help="write every round here")
    parser.add_argument("--worker", choices=("old", "new"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.beauty.is_file():
        raise SystemExit(f"{args.beauty}: no Beauty file (--beauty PATH names it)")
    if args.worker:
        worker(args.worker, args.beauty.resolve())
        return
    if args.baseline is None:
        parser.error("--baseline is required")
    baseline = args.baseline.resolve()
    python = args.baseline_python or baseline / ".venv" / "bin" / "python"
    workers = {
        "old eager": Worker("old", python, baseline, args.beauty.resolve()),
        "new packed": Worker("new", Path(sys.executable), REPO_ROOT, args.beauty.resolve()),
    }
    rows: list[dict[str, Any]] = []
    print(f"baseline {baseline} ({python}), new {REPO_ROOT}; {args.rounds} rounds, one thread each")
    try:
        for model_name in args.models:
            for path in PATHS:
                workers[path].ask(f"model {model_name}")
            for round_index in range(args.rounds):
                order = PATHS if round_index % 2 == 0 else PATHS[::-1]
                for position, path in enumerate(order):
                    seconds, steps, loss = workers[path].ask(f"train {args.steps}").split()
                    row = {
                        "model": model_name,
                        "round": round_index + 1,
                        "position": position + 1,
                        "path": path,
                        "steps": int(steps),
                        "seconds": round(float(seconds), 4),
                        "seconds_per_step": round(float(seconds) / int(steps), 6),
                        "mean_loss": round(float(loss), 4),  # the two should train alike
                    }
                    rows.append(row)
                    print(
                        f"{model_name} round {row['round']} {path}: {row['seconds_per_step']:.5f} s/step "
                        f"({row['seconds']:.2f} s, {row['steps']} steps, mean loss {row['mean_loss']:.4f})",
                        flush=True,
                    )
    finally:
        for process in workers.values():
            process.close()
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(
        "\n| model | rounds | old eager s/step (median) | new packed s/step (median) | new / old "
        "| median of the rounds' new / old |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for model_name in args.models:
        median = {
            path: statistics.median(
                r["seconds_per_step"] for r in rows if r["model"] == model_name and r["path"] == path
            )
            for path in PATHS
        }
        ratio = median["new packed"] / median["old eager"]
        # Paired within each round (the two ran back to back): robust to load that changes between rounds.
        of_round = {(r["round"], r["path"]): r["seconds_per_step"] for r in rows if r["model"] == model_name}
        paired = statistics.median(
            of_round[(n, "new packed")] / of_round[(n, "old eager")] for n in range(1, args.rounds + 1)
        )
        print(
            f"| {model_name} | {args.rounds} | {median['old eager']:.5f} | {median['new packed']:.5f} | "
            f"{ratio:.3f} | {paired:.3f} |"
        )


if __name__ == "__main__":
    main()
