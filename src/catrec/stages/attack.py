"""Stage ``attack``: item-replacement attacks (section 5.6) against one trained model; the attacks CSV."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catrec.attack import attack_rows
from catrec.commands import Command, add_training_args
from catrec.io import atomic_path
from catrec.runtime import configure
from catrec.stages.common import load_model_and_data, prepare
from catrec.vocabulary import ATTACK_COLUMNS


def write_attack_csv(rows: list[dict[str, Any]], output: str | Path) -> None:
    """Write ``rows`` with exactly ``ATTACK_COLUMNS`` to ``output`` atomically."""
    with atomic_path(output) as temp, open(temp, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=ATTACK_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def run_attacks(
    *,
    data_dir: str | Path,
    hparams: Mapping[str, Any],
    dataset: str,
    model_name: str,
    method: str,
    checkpoint: str | Path,
    output: str | Path,
    device: str = "auto",
    threads: int = 1,
) -> None:
    """Attack the model in ``checkpoint`` on the test inputs of ``data_dir``; write the tidy attacks CSV."""
    settings = prepare(hparams, "attack", model=model_name)
    config = settings.attack_config()
    model, data = load_model_and_data(
        checkpoint,
        data_dir,
        model_name=model_name,
        max_len=settings.max_len,
        device=configure(device, threads),
    )
    rows = attack_rows(
        model, data.eval_inputs("test"), data.eval_targets("test"), data.eval_exclude("test"), config
    )
    labels = {"dataset": dataset, "model": model_name, "method": method}
    write_attack_csv([{**labels, **row} for row in rows], output)


def _declare_attack(parser: argparse.ArgumentParser) -> None:
    add_training_args(parser)
    parser.add_argument("--method", required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="tidy CSV of metrics under attack")


COMMANDS = (
    Command(
        "attack",
        "Item-replacement attacks (section 5.6) against one trained model.",
        _declare_attack,
        Command.calling(run_attacks),
    ),
)
