"""Stage ``user-metrics``: per-user test NDCG@10 and HT@10 of one trained model (the input of significance).

Post hoc: the saved weights (the ones a run's metrics JSON reports) are ranked as ``catrec.trainer.evaluate``
ranks them, and each user's values are kept instead of their mean.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from catrec.commands import Command, add_data, add_device, add_model, positive
from catrec.io import atomic_path
from catrec.metrics import rank_users
from catrec.runtime import configure
from catrec.stages.common import load_model_and_data
from catrec.vocabulary import USER_METRICS_COLUMNS


def write_user_metrics(
    *,
    data_dir: str | Path,
    max_len: int,
    model_name: str,
    checkpoint: str | Path,
    output: str | Path,
    split: str = "test",
    device: str = "auto",
    threads: int = 1,
) -> None:
    """Write ``user, ndcg@10, hit@10`` of every user on ``split`` (``user``: 1..m, sequences.txt order)."""
    model, data = load_model_and_data(
        checkpoint, data_dir, model_name=model_name, max_len=max_len, device=configure(device, threads)
    )
    ndcg, hit = rank_users(model, data.eval_inputs(split), data.eval_targets(split), data.eval_exclude(split))
    # SequenceData keeps the users in id order; catrec preprocess numbers them 1..m, so `user` is that id.
    rows = zip(range(1, data.num_users + 1), ndcg.tolist(), hit.tolist(), strict=True)
    with atomic_path(output) as temp, open(temp, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(USER_METRICS_COLUMNS)
        writer.writerows(rows)


def _declare_user_metrics(parser: argparse.ArgumentParser) -> None:
    add_data(parser)
    parser.add_argument("--max-len", type=positive(int), required=True, help="T")
    add_model(parser)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="CSV: user, ndcg@10, hit@10")
    add_device(parser)


COMMANDS = (
    Command(
        "user-metrics",
        "Per-user test NDCG@10 and HT@10 of one trained model.",
        _declare_user_metrics,
        Command.calling(write_user_metrics),
    ),
)
