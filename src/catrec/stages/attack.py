"""Stage ``attack``: item-replacement attacks (section 5.6) against one trained model; the attacks CSV and,
with ``--users``, each user's metrics under every attack (the input of ``catrec robustness``)."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catrec.attack import AttackResults, attack_rows, attack_users
from catrec.commands import Command, add_training_args
from catrec.io import atomic_path, open_text_atomically
from catrec.runtime import configure
from catrec.stages.common import load_model_and_data, prepare
from catrec.vocabulary import ATTACK_COLUMNS, ATTACK_USER_COLUMN, ATTACK_USERS_COLUMNS


def write_attack_csv(rows: list[dict[str, Any]], output: str | Path) -> None:
    """Write ``rows`` with exactly ``ATTACK_COLUMNS`` to ``output`` atomically."""
    with atomic_path(output) as temp, open(temp, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=ATTACK_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_attack_users(results: AttackResults, output: str | Path) -> None:
    """Write each user's metrics, clean and under each attack setting (``ATTACK_USERS_COLUMNS``, then
    ``ATTACK_USER_COLUMN`` per setting and metric), to ``output`` atomically (gzip where it ends in .gz)."""
    columns = dict(zip(ATTACK_USERS_COLUMNS[1:], results.clean.by_metric().values(), strict=True))
    for (attack, position, k), metrics in results.attacked.items():
        if k == 0:
            continue  # nothing replaced: the clean columns
        for metric, values in metrics.by_metric().items():
            name = ATTACK_USER_COLUMN.format(attack=attack, position=position, k=k, metric=metric)
            columns[name] = values
    # The float32 values as Python floats: their repr reads back as exactly the value, so a column's mean
    # recomputes the attacks CSV's mean. `user`: 1..m, as catrec user-metrics numbers them.
    users = range(1, len(results.clean.ndcg) + 1)
    rows = zip(users, *(values.tolist() for values in columns.values()), strict=True)
    with open_text_atomically(output) as stream:
        writer = csv.writer(stream)
        writer.writerow([ATTACK_USERS_COLUMNS[0], *columns])
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
    users: str | Path | None = None,
    device: str = "auto",
    threads: int = 1,
) -> None:
    """Attack the model in ``checkpoint`` on the test inputs of ``data_dir``; write the tidy attacks CSV and,
    given ``users``, the per-user metrics there."""
    settings = prepare(hparams, "attack", model=model_name)
    config = settings.attack_config()
    model, data = load_model_and_data(
        checkpoint,
        data_dir,
        model_name=model_name,
        max_len=settings.max_len,
        device=configure(device, threads),
    )
    results = attack_users(
        model, data.eval_inputs("test"), data.eval_targets("test"), data.eval_exclude("test"), config
    )
    labels = {"dataset": dataset, "model": model_name, "method": method}
    if users is not None:
        write_attack_users(results, users)
    write_attack_csv([{**labels, **row} for row in attack_rows(results)], output)


def _declare_attack(parser: argparse.ArgumentParser) -> None:
    add_training_args(parser)
    parser.add_argument("--method", required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="tidy CSV of metrics under attack")
    parser.add_argument(
        "--users",
        type=Path,
        help="also write each user's metrics, clean and under each attack, here (.csv, or .csv.gz: gzip)",
    )


COMMANDS = (
    Command(
        "attack",
        "Item-replacement attacks (section 5.6) against one trained model.",
        _declare_attack,
        Command.calling(run_attacks),
    ),
)
