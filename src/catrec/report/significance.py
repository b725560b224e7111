"""``catrec significance``: is adv_cas better than each other method, beyond noise? From per-user metrics.

Per dataset x model, adv_cas (``method_a``) against every other method (``method_b``) at the same epsilon
(methods without epsilon: their only run), for each metric; a ``method_a`` without epsilon (``--method-a
base``) against every other run, each at its own epsilon (the row's ``epsilon``):

- ``wilcoxon``: a Wilcoxon signed-rank test over the users of one seed, paired by user (``n`` = users paired;
  zero differences, e.g. users both models miss, are dropped as in Wilcoxon's original test,
  ``zero_method='wilcox'``);
- ``ttest_rel``: a paired t-test over seeds of the per-seed mean (``seed`` empty, ``n`` = seeds paired;
  statistic and p-value NaN with fewer than 2 seeds).

``--pair RUN_A RUN_B`` (repeatable; a run ``method`` or ``method@epsilon``) runs the same tests on named pairs
of runs instead, each at its own epsilon (``SIGNIFICANCE_PAIR_COLUMNS``): a method at its better epsilon
against another at its own.

Two-sided p-values (scipy.stats). A test with nothing to compare (all differences zero) gives NaN.
``significance_frame`` is pure; ``write_significance`` reads the per-user CSVs and writes the table.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from catrec.commands import Command, add_output_prefix
from catrec.errors import CatrecError
from catrec.paths import parse_run
from catrec.report.frames import DATASET_ORDER, MODEL_ORDER, label, ordered, read_table_csv
from catrec.report.render import Cell, Table, format_number, write_table
from catrec.vocabulary import (
    METHODS,
    METRICS,
    SIGNIFICANCE_COLUMNS,
    SIGNIFICANCE_PAIR_COLUMNS,
    SIGNIFICANCE_REFERENCE,
    USER_METRICS_COLUMNS,
)

ZERO_METHOD = "wilcox"
_UNIT = ["dataset", "model", "method", "epsilon", "seed"]


def wilcoxon_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(statistic, two-sided p) of the signed-rank test of paired ``a`` - ``b``; NaN if all pairs tie."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.any(differences != 0):
        return math.nan, math.nan
    result = stats.wilcoxon(a, b, zero_method=ZERO_METHOD)
    return float(result.statistic), float(result.pvalue)


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test; NaN with fewer than 2 pairs or constant differences."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(differences) < 2 or np.all(differences == differences[0]):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def _same_epsilon(frame: pd.DataFrame, epsilon: float) -> pd.Series:
    """Runs without epsilon, and those at ``epsilon``."""
    return frame["epsilon"].isna() | (frame["epsilon"] == epsilon)


def _at_epsilon(frame: pd.DataFrame, epsilon: float) -> pd.DataFrame:
    """The runs at ``epsilon``; NaN: the runs without one."""
    return frame[frame["epsilon"].isna() if math.isnan(epsilon) else frame["epsilon"] == epsilon]


def _epsilons(frame: pd.DataFrame) -> list[float]:
    return sorted(frame["epsilon"].unique(), key=lambda value: (math.isnan(value), value))


def significance_frame(users: pd.DataFrame, reference: str = SIGNIFICANCE_REFERENCE) -> pd.DataFrame:
    """The tests of ``reference`` against every other method in ``users`` (columns ``SIGNIFICANCE_COLUMNS``).

    ``users``: one row per run and user: ``dataset, model, method, epsilon, seed, user`` and the metrics.
    """
    duplicated = users.duplicated([*_UNIT, "user"])
    if duplicated.any():
        row = users[duplicated].iloc[0]
        raise CatrecError(f"user {row['user']} appears twice in run {dict(row[_UNIT])}")
    rows = []
    for dataset in ordered(users["dataset"], DATASET_ORDER):
        for model in ordered(users.loc[users["dataset"] == dataset, "model"], MODEL_ORDER):
            group = users[(users["dataset"] == dataset) & (users["model"] == model)]
            runs_a = group[group["method"] == reference]
            for epsilon in _epsilons(runs_a):
                a = _at_epsilon(runs_a, epsilon)
                others = group[(group["method"] != reference) & _same_epsilon(group, epsilon)]
                if math.isnan(epsilon):
                    # A reference without epsilon (base) is tested against every run, each at its own epsilon.
                    others = group[group["method"] != reference]
                for method in ordered(others["method"], METHODS):
                    of_method = others[others["method"] == method]
                    for epsilon_b in _epsilons(of_method):
                        b = _at_epsilon(of_method, epsilon_b)
                        identity = {
                            "dataset": dataset,
                            "model": model,
                            "method_a": reference,
                            "method_b": method,
                            "epsilon": epsilon if math.isnan(epsilon_b) else epsilon_b,
                        }
                        for metric in METRICS:
                            rows += _tests(a, b, metric, {**identity, "metric": metric})
    frame = pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)
    # Integers, the t-test's seed empty (not 42.0 and NaN).
    return frame.astype({"seed": "Int64", "n": "Int64", "epsilon": float})


# A run of one dataset x model: (method, epsilon), epsilon NaN for a method without one.
RunName = tuple[str, float]


def parse_run_name(text: str) -> RunName:
    """``adv_cas@5`` -> ("adv_cas", 5.0); ``base`` -> ("base", NaN)."""
    method, at, epsilon = text.partition("@")
    if not method or (at and not epsilon):
        raise CatrecError(f"significance: run '{text}' is not METHOD or METHOD@EPSILON")
    try:
        return method, float(epsilon) if at else math.nan
    except ValueError:
        raise CatrecError(f"significance: run '{text}': epsilon '{epsilon}' is not a number") from None


def run_name(run: RunName) -> str:
    method, epsilon = run
    return method if math.isnan(epsilon) else f"{method}@{epsilon:g}"


def pair_significance_frame(users: pd.DataFrame, pairs: Sequence[tuple[RunName, RunName]]) -> pd.DataFrame:
    """The tests of each named pair (run a, run b) in every dataset x model holding both runs (columns
    ``SIGNIFICANCE_PAIR_COLUMNS``); a pair no block holds is an error."""
    rows = []
    for run_a, run_b in pairs:
        found = False
        for dataset in ordered(users["dataset"], DATASET_ORDER):
            for model in ordered(users.loc[users["dataset"] == dataset, "model"], MODEL_ORDER):
                group = users[(users["dataset"] == dataset) & (users["model"] == model)]
                a = _at_epsilon(group[group["method"] == run_a[0]], run_a[1])
                b = _at_epsilon(group[group["method"] == run_b[0]], run_b[1])
                if a.empty or b.empty:
                    continue
                found = True
                identity = {
                    "dataset": dataset,
                    "model": model,
                    "method_a": run_a[0],
                    "epsilon_a": run_a[1],
                    "method_b": run_b[0],
                    "epsilon_b": run_b[1],
                }
                for metric in METRICS:
                    rows += _tests(a, b, metric, {**identity, "metric": metric})
        if not found:
            raise CatrecError(
                f"significance: no dataset x model has per-user metrics of both {run_name(run_a)} "
                f"and {run_name(run_b)}"
            )
    frame = pd.DataFrame(rows, columns=SIGNIFICANCE_PAIR_COLUMNS)
    return frame.astype({"seed": "Int64", "n": "Int64", "epsilon_a": float, "epsilon_b": float})


def _tests(
    a: pd.DataFrame, b: pd.DataFrame, metric: str, identity: dict[str, object]
) -> list[dict[str, object]]:
    """The Wilcoxon test of each seed both methods ran, then the t-test over those seeds."""
    rows = []
    seeds = sorted(set(a["seed"]) & set(b["seed"]))
    for seed in seeds:
        paired = pd.merge(
            a.loc[a["seed"] == seed, ["user", metric]],
            b.loc[b["seed"] == seed, ["user", metric]],
            on="user",
            suffixes=("_a", "_b"),
        )
        x, y = paired[f"{metric}_a"].to_numpy(), paired[f"{metric}_b"].to_numpy()
        statistic, p_value = wilcoxon_test(x, y) if len(paired) else (math.nan, math.nan)
        rows.append(
            {
                **identity,
                "seed": seed,
                "test": "wilcoxon",
                "statistic": statistic,
                "p_value": p_value,
                "n": len(paired),
                "mean_a": x.mean() if len(x) else math.nan,
                "mean_b": y.mean() if len(y) else math.nan,
            }
        )
    means_a = a[a["seed"].isin(seeds)].groupby("seed")[metric].mean().sort_index()
    means_b = b[b["seed"].isin(seeds)].groupby("seed")[metric].mean().sort_index()
    statistic, p_value = paired_t_test(means_a.to_numpy(), means_b.to_numpy())
    rows.append(
        {
            **identity,
            "seed": None,
            "test": "ttest_rel",
            "statistic": statistic,
            "p_value": p_value,
            "n": len(seeds),
            "mean_a": means_a.mean() if seeds else math.nan,
            "mean_b": means_b.mean() if seeds else math.nan,
        }
    )
    return rows


def run_identity(path: Path) -> dict[str, object]:
    """The identity of the run a per-user file belongs to, from its path (``catrec.paths.parse_run``)."""
    try:
        return parse_run(path)
    except ValueError as exc:
        raise CatrecError(str(exc)) from exc


def read_user_metrics(paths: Sequence[Path]) -> pd.DataFrame:
    """The per-user CSVs of ``catrec user-metrics``, each row with its run's identity (from the path)."""
    if not paths:
        raise CatrecError("significance: no per-user metrics files")
    frames = [
        read_table_csv(Path(path), numeric=USER_METRICS_COLUMNS).assign(**run_identity(path))
        for path in paths
    ]
    return pd.concat(frames, ignore_index=True)


def p_value_cell(value: float) -> Cell:
    """A p-value for display, bold below 0.05."""
    text = "—" if pd.isna(value) else (f"{value:.2e}" if value < 1e-3 else f"{value:.3f}")
    return Cell(text, bold=not pd.isna(value) and value < 0.05)


# The columns every significance table ends with: one test's result.
_TEST_HEADER = ["metric", "test", "seed", "n"]
_TEST_CAPTION = (
    "Wilcoxon signed-rank over users per seed (zero differences dropped), paired t-test over seeds of the "
    "means; two-sided p, bold p < 0.05."
)


def _test_cells(record: pd.Series) -> list[Cell]:
    seed = "all (means)" if pd.isna(record["seed"]) else str(int(record["seed"]))
    return [
        Cell(label(record["metric"])),
        Cell("Wilcoxon" if record["test"] == "wilcoxon" else "paired t"),
        Cell(seed),
        Cell(str(int(record["n"]))),
        Cell(format_number(record["mean_a"], ".4f")),
        Cell(format_number(record["mean_b"], ".4f")),
        Cell(format_number(record["statistic"], ".4g")),
        p_value_cell(record["p_value"]),
    ]


def _layout(frame: pd.DataFrame, reference: str) -> Table:
    rows = [
        [
            Cell(label(record["dataset"])),
            Cell(label(record["model"])),
            Cell(record["method_b"]),
            Cell(format_number(record["epsilon"], "g")),
            *_test_cells(record),
        ]
        for _, record in frame.iterrows()
    ]
    return Table(
        header=["dataset", "model", "vs", "ε", *_TEST_HEADER, reference, "other", "statistic", "p"],
        rows=rows,
        align="lllrllrrrrrr",
        caption=f"{reference} against each other method on test metrics: {_TEST_CAPTION}",
    )


def _pair_layout(frame: pd.DataFrame) -> Table:
    rows = [
        [
            Cell(label(record["dataset"])),
            Cell(label(record["model"])),
            Cell(run_name((record["method_a"], record["epsilon_a"]))),
            Cell(run_name((record["method_b"], record["epsilon_b"]))),
            *_test_cells(record),
        ]
        for _, record in frame.iterrows()
    ]
    return Table(
        header=["dataset", "model", "a", "b", *_TEST_HEADER, "a", "b", "statistic", "p"],
        rows=rows,
        align="llllllrrrrrr",
        caption=f"Run a against run b, each at its own ε, on test metrics: {_TEST_CAPTION}",
    )


def write_significance(
    inputs: Sequence[Path],
    prefix: Path,
    reference: str = SIGNIFICANCE_REFERENCE,
    pairs: Sequence[Sequence[str]] = (),
) -> None:
    """Write ``prefix.{csv,md,html}`` from the per-user metrics of Table 2's runs (the CSV: raw numbers):
    ``reference`` against every other method, or, given ``pairs`` of run names, those pairs."""
    users = read_user_metrics(inputs)
    if pairs:
        named = [(parse_run_name(a), parse_run_name(b)) for a, b in pairs]
        frame = pair_significance_frame(users, named)
        write_table(prefix, frame, _pair_layout(frame), formats=("csv", "md", "html"))
        return
    if reference not in set(users["method"]):
        raise CatrecError(f"significance: no per-user metrics of '{reference}' among the inputs")
    frame = significance_frame(users, reference)
    write_table(prefix, frame, _layout(frame, reference), formats=("csv", "md", "html"))


def _declare_significance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--users",
        dest="inputs",
        metavar="USERS",
        type=Path,
        nargs="+",
        required=True,
        help="per-user metrics CSVs (catrec user-metrics)",
    )
    add_output_prefix(parser, "writes PREFIX.csv, .md and .html")
    # Either every run against one method, or named pairs.
    runs = parser.add_mutually_exclusive_group()
    add_reference(runs, "the method tested against the others")
    runs.add_argument(
        "--pair",
        dest="pairs",
        metavar=("RUN_A", "RUN_B"),
        nargs=2,
        action="append",
        default=[],
        help="test run A against run B instead, each METHOD or METHOD@EPSILON (e.g. adv_cas@5 adv_seq@10); "
        "repeatable",
    )


def add_reference(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help_text: str) -> None:
    """``--method-a METHOD`` (default adv_cas): the method a table tests against the others."""
    parser.add_argument(
        "--method-a", dest="reference", metavar="METHOD", default=SIGNIFICANCE_REFERENCE, help=help_text
    )


COMMANDS = (
    Command(
        "significance",
        "Wilcoxon (over users, per seed) and paired t-tests (over seeds) of adv_cas against each method.",
        _declare_significance,
        Command.calling(write_significance),
    ),
)
