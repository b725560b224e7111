"""``catrec robustness``: do the robustness claims of section 5.6 hold beyond noise? From per-user metrics.

The inputs are the per-user files of ``catrec attack --users`` (one per run; the run's identity comes from the
path, as ``catrec.paths.parse_run`` reads it). Within one dataset x model x seed, for each attack (gradient,
random) and metric, each row is a Wilcoxon signed-rank test paired over users
(``catrec.report.significance.wilcoxon_test``: two-sided, zero differences dropped), of values ``a`` of the
run ``method``/``epsilon`` against values ``b``; a user's drop is its clean metric minus its metric under
attack. ``question`` says which values:

- ``position`` (Figure 5), every run: the drop with the last item replaced (a) against the drop with the item
  ``against`` (``first`` or ``middle``) replaced (b), ``k`` = 1. The paper: mean_a > mean_b.
- ``last_k_drop`` (Figure 6), each run of the reference method (adv_cas; each epsilon present) against each
  run of another method of the same seed (``against``: ``base``, ``adv_global/eps10``, ...), the last ``k``
  items replaced (k = 1..max_k): the reference's drop (a) against the other's drop (b), each from its own
  clean metric. The paper: mean_a < mean_b (adv_cas loses least).
- ``last_k_accuracy``: the same pairs, the metrics under attack themselves (mean_a > mean_b: adv_cas is the
  more accurate one after the attack).
- ``vs_clean_base``: the reference with the last ``k`` items replaced (a) against ``base`` on the clean inputs
  (b, ``against`` = ``base``). The paper: mean_a > mean_b at k = 5.

``n`` counts the users paired, ``mean_a`` and ``mean_b`` are the means over them; statistic and p-value are
NaN where every pair ties. A setting either run lacks gives no row. ``robustness_frame`` is pure;
``write_robustness`` reads the per-user files and writes the table.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from catrec.commands import Command, add_output_prefix
from catrec.errors import CatrecError
from catrec.paths import epsilon_label
from catrec.report.frames import DATASET_ORDER, MODEL_ORDER, label, ordered, read_table_csv
from catrec.report.render import Cell, Table, format_number, write_table
from catrec.report.significance import add_reference, p_value_cell, run_identity, wilcoxon_test
from catrec.vocabulary import (
    ATTACK_USER_COLUMN,
    ATTACK_USERS_COLUMNS,
    METHODS,
    METRICS,
    ROBUSTNESS_COLUMNS,
    SIGNIFICANCE_REFERENCE,
)

QUESTIONS = ("position", "last_k_drop", "last_k_accuracy", "vs_clean_base")
# The run whose clean metrics the reference's attacked ones must beat (vs_clean_base).
CLEAN_BASELINE = "base"
# Figure 5 compares the last item with each of these.
EARLIER_POSITIONS = ("first", "middle")
_UNIT = ["dataset", "model", "method", "epsilon", "seed"]
# ATTACK_USER_COLUMN read back; `position` may hold an underscore (last_k), the regex backtracks to it.
_SETTING_COLUMN = re.compile(r"(?P<attack>[a-z]+)_(?P<position>[a-z_]+)_k(?P<k>\d+)_(?P<metric>.+)")


def attack_settings(columns: Iterable[str]) -> tuple[list[str], list[int]]:
    """The attacks (in column order) and the K >= 1 of ``last_k`` (ascending) that per-user columns hold."""
    matches = [match for column in columns if (match := _SETTING_COLUMN.fullmatch(column))]
    attacks = list(dict.fromkeys(match["attack"] for match in matches))
    last_k = sorted({int(match["k"]) for match in matches if match["position"] == "last_k"} - {0})
    return attacks, last_k


@dataclass(frozen=True)
class _Run:
    """One run's per-user metrics, indexed by user."""

    identity: dict[str, Any]
    users: pd.DataFrame

    @property
    def method(self) -> str:
        return str(self.identity["method"])

    @property
    def epsilon(self) -> float:
        return float(self.identity["epsilon"])

    @property
    def name(self) -> str:
        """``method``, or ``method/eps<epsilon>`` as in the run's paths."""
        return self.method if math.isnan(self.epsilon) else f"{self.method}/eps{epsilon_label(self.epsilon)}"

    def clean(self, metric: str) -> pd.Series:
        return self.users[f"clean_{metric}"]

    def attacked(self, attack: str, position: str, k: int, metric: str) -> pd.Series | None:
        """The metric under attack; None where the run lacks the setting."""
        column = ATTACK_USER_COLUMN.format(attack=attack, position=position, k=k, metric=metric)
        values = self.users.get(column)
        return None if values is None or values.isna().all() else values

    def drop(self, attack: str, position: str, k: int, metric: str) -> pd.Series | None:
        attacked = self.attacked(attack, position, k, metric)
        return None if attacked is None else self.clean(metric) - attacked


def _runs(frame: pd.DataFrame) -> list[_Run]:
    """The runs of ``frame``, in the order of Table 2's methods, then by epsilon."""
    runs = [
        _Run(identity=dict(zip(_UNIT, key, strict=True)), users=rows.set_index("user"))
        for key, rows in frame.groupby(_UNIT, dropna=False, sort=False)
    ]
    rank = {method: index for index, method in enumerate(ordered(frame["method"], METHODS))}

    return sorted(runs, key=lambda run: (rank[run.method], math.isnan(run.epsilon), run.epsilon))


def _test(
    run: _Run,
    question: str,
    setting: tuple[str, int, str],
    against: str,
    a: pd.Series | None,
    b: pd.Series | None,
) -> list[dict[str, object]]:
    """The row of the Wilcoxon test of ``a`` against ``b`` paired by user; none where either is missing."""
    if a is None or b is None:
        return []
    paired = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    if paired.empty:
        return []
    statistic, p_value = wilcoxon_test(paired["a"].to_numpy(), paired["b"].to_numpy())
    attack, k, metric = setting
    return [
        {
            **run.identity,
            "question": question,
            "attack": attack,
            "k": k,
            "metric": metric,
            "against": against,
            "n": len(paired),
            "mean_a": paired["a"].mean(),
            "mean_b": paired["b"].mean(),
            "statistic": statistic,
            "p_value": p_value,
        }
    ]


def _position_rows(run: _Run, attacks: list[str]) -> list[dict[str, object]]:
    rows = []
    for attack in attacks:
        for metric in METRICS:
            last = run.drop(attack, "last", 1, metric)
            for earlier in EARLIER_POSITIONS:
                drop = run.drop(attack, earlier, 1, metric)
                rows += _test(run, "position", (attack, 1, metric), earlier, last, drop)
    return rows


def _last_k_rows(run: _Run, other: _Run, attacks: list[str], last_k: list[int]) -> list[dict[str, object]]:
    rows = []
    for attack in attacks:
        for k in last_k:
            for metric in METRICS:
                setting = (attack, k, metric)
                drops = (run.drop(attack, "last_k", k, metric), other.drop(attack, "last_k", k, metric))
                rows += _test(run, "last_k_drop", setting, other.name, *drops)
                accuracies = (
                    run.attacked(attack, "last_k", k, metric),
                    other.attacked(attack, "last_k", k, metric),
                )
                rows += _test(run, "last_k_accuracy", setting, other.name, *accuracies)
    return rows


def _vs_clean_rows(run: _Run, base: _Run, attacks: list[str], last_k: list[int]) -> list[dict[str, object]]:
    rows = []
    for attack in attacks:
        for k in last_k:
            for metric in METRICS:
                attacked, clean = run.attacked(attack, "last_k", k, metric), base.clean(metric)
                rows += _test(run, "vs_clean_base", (attack, k, metric), base.name, attacked, clean)
    return rows


def robustness_frame(users: pd.DataFrame, reference: str = SIGNIFICANCE_REFERENCE) -> pd.DataFrame:
    """Every test of the module's questions (columns ``ROBUSTNESS_COLUMNS``).

    ``users``: one row per run and user: ``dataset, model, method, epsilon, seed``, ``ATTACK_USERS_COLUMNS``
    and the per-setting columns (``ATTACK_USER_COLUMN``); ``reference`` is the method of ``last_k_*`` and
    ``vs_clean_base``.
    """
    duplicated = users.duplicated([*_UNIT, "user"])
    if duplicated.any():
        row = users[duplicated].iloc[0]
        raise CatrecError(f"user {row['user']} appears twice in run {dict(row[_UNIT])}")
    attacks, last_k = attack_settings(users.columns)
    rows = []
    for dataset in ordered(users["dataset"], DATASET_ORDER):
        for model in ordered(users.loc[users["dataset"] == dataset, "model"], MODEL_ORDER):
            group = users[(users["dataset"] == dataset) & (users["model"] == model)]
            for seed in sorted(group["seed"].unique()):
                runs = _runs(group[group["seed"] == seed])
                for run in runs:
                    rows += _position_rows(run, attacks)
                others = [run for run in runs if run.method != reference]
                bases = [run for run in runs if run.method == CLEAN_BASELINE]
                for run in (run for run in runs if run.method == reference):
                    for other in others:
                        rows += _last_k_rows(run, other, attacks, last_k)
                    for base in bases:
                        rows += _vs_clean_rows(run, base, attacks, last_k)
    frame = pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)
    return frame.astype({"seed": "Int64", "k": "Int64", "n": "Int64", "epsilon": float})


def read_attack_users(paths: Sequence[Path]) -> pd.DataFrame:
    """The per-user files of ``catrec attack --users``, each row with its run's identity (from the path)."""
    if not paths:
        raise CatrecError("robustness: no per-user attack files")
    frames = []
    for path in paths:
        frame = read_table_csv(Path(path), numeric=ATTACK_USERS_COLUMNS)
        for column in frame.columns.difference(ATTACK_USERS_COLUMNS, sort=False):
            match = _SETTING_COLUMN.fullmatch(column)
            if match is None or match["metric"] not in METRICS:
                raise CatrecError(f"{path}: column '{column}' is not named {ATTACK_USER_COLUMN}")
            if not pd.api.types.is_numeric_dtype(frame[column]):
                raise CatrecError(f"{path}: column '{column}' holds something other than numbers")
        frames.append(frame.assign(**run_identity(path)))
    return pd.concat(frames, ignore_index=True)


def _run_label(record: pd.Series) -> str:
    epsilon = "" if pd.isna(record["epsilon"]) else f" ε={format_number(record['epsilon'], 'g')}"
    return f"{record['method']}{epsilon}"


def _layout(frame: pd.DataFrame, reference: str) -> Table:
    rows = [
        [
            Cell(label(record["dataset"])),
            Cell(label(record["model"])),
            Cell(str(int(record["seed"]))),
            Cell(record["question"]),
            Cell(_run_label(record)),
            Cell(record["attack"]),
            Cell(str(int(record["k"]))),
            Cell(label(record["metric"])),
            Cell(record["against"]),
            Cell(str(int(record["n"]))),
            Cell(format_number(record["mean_a"], ".4f")),
            Cell(format_number(record["mean_b"], ".4f")),
            p_value_cell(record["p_value"]),
        ]
        for _, record in frame.iterrows()
    ]
    return Table(
        header=[
            "dataset",
            "model",
            "seed",
            "question",
            "run",
            "attack",
            "K",
            "metric",
            "vs",
            "n",
            "a",
            "b",
            "p",
        ],
        rows=rows,
        align="lllllllllrrrr",
        caption="Robustness (section 5.6), Wilcoxon signed-rank over users (zero differences dropped), "
        "two-sided p, bold p < 0.05. position: drop with the last item replaced (a) vs with the first or "
        f"middle replaced (b); last_k_drop / last_k_accuracy: {reference}'s drop / metric with the last K "
        f"items replaced (a) vs the other run's (b); vs_clean_base: {reference} with the last K replaced (a) "
        f"vs {CLEAN_BASELINE} on clean inputs (b). Drop = clean - attacked.",
    )


def write_robustness(inputs: Sequence[Path], prefix: Path, reference: str = SIGNIFICANCE_REFERENCE) -> None:
    """Write ``prefix.{csv,md}`` from the per-user metrics under attack (the CSV: raw numbers)."""
    frame = robustness_frame(read_attack_users(inputs), reference)
    write_table(prefix, frame, _layout(frame, reference), formats=("csv", "md"))


def _declare_robustness(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--users-attacks",
        dest="inputs",
        metavar="USERS",
        type=Path,
        nargs="+",
        required=True,
        help="per-user metrics under attack (catrec attack --users), one file per run",
    )
    add_output_prefix(parser, "writes PREFIX.csv and .md")
    add_reference(parser, "the method whose robustness is tested against the others")


COMMANDS = (
    Command(
        "robustness",
        "Wilcoxon tests over users of the robustness claims (Figures 5-6), from per-user attack metrics.",
        _declare_robustness,
        Command.calling(write_robustness),
    ),
)
