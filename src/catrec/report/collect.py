"""``catrec collect``: per-run result files into one tidy CSV, each row with its run's full identity.

Impossible values are refused, naming the file: a metric that is no finite number in [0, 1], a split other
than valid / test, two rows with one key (the same run, epoch, split, ...: a file given twice). The metrics
summary records each run's ``code_digest``; rows from several versions of the code are named in one line.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from catrec.commands import Command
from catrec.errors import CatrecError
from catrec.io import read_json
from catrec.paths import parse_run
from catrec.report.frames import note_code_versions, read_table_csv, sort_runs, write_csv
from catrec.vocabulary import (
    ATTACK_COLUMNS,
    ATTACK_SUMMARY_COLUMNS,
    CURVE_COLUMNS,
    CURVE_SUMMARY_COLUMNS,
    METRICS,
    METRICS_COLUMNS,
    METRICS_LONG_COLUMNS,
    PROFILE_COLUMNS,
    PROFILE_SUMMARY_COLUMNS,
    RUN_KEYS,
    SPLITS,
)

# Every NDCG and hit rate lies in [0, 1]; a value outside (or NaN) is a damaged or foreign file.
_SCORE_RANGE = (0.0, 1.0)


def _check_score(path: Path, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise CatrecError(f"{path}: key '{key}' must be a number within [0, 1], got {value!r}")


def _metrics_rows(path: Path) -> pd.DataFrame:
    record = read_json(path, ["dataset", "model", "method", "seed", "valid", "test"])
    # Only sweep runs need to record epsilon; an absent one stays blank (NaN) in the summary.
    epsilon = record.get("epsilon")
    if epsilon is None:
        epsilon = math.nan
    elif isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise CatrecError(f"{path}: key 'epsilon' must be a number, got {epsilon!r}")
    rows = []
    for split in SPLITS:
        scores = record[split]
        if not isinstance(scores, dict) or any(metric not in scores for metric in METRICS):
            raise CatrecError(f"{path}: key '{split}' must be an object with {', '.join(METRICS)}")
        for metric in METRICS:
            _check_score(path, f"{split}.{metric}", scores[metric])
        identity = {key: record[key] for key in ("dataset", "model", "method", "seed")}
        code = record.get("code_digest")  # absent from the results of a catrec before it was recorded
        rows.append({**identity, "epsilon": float(epsilon), "split": split, **scores, "code_digest": code})
    return pd.DataFrame(rows)


def _identity(path: Path) -> dict[str, object]:
    """Dataset, model, method, epsilon and seed of a run file, read from its path (``catrec.paths``)."""
    try:
        return parse_run(path)
    except ValueError as exc:
        raise CatrecError(str(exc)) from exc


def _curve_rows(path: Path) -> pd.DataFrame:
    numeric = [column for column in CURVE_COLUMNS if column not in ("phase", "split")]
    bounded = dict.fromkeys(METRICS, _SCORE_RANGE)
    rows = read_table_csv(path, CURVE_COLUMNS, numeric=numeric, bounded=bounded, choices={"split": SPLITS})
    return rows.assign(**_identity(path))


def _labelled_rows(
    path: Path, columns: list[str], numeric: list[str], scores: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A per-run CSV whose rows name their run (dataset, model, method): checked against the path;
    ``scores`` columns must lie in [0, 1]."""
    identity = _identity(path)
    rows = read_table_csv(path, columns, numeric=numeric, bounded=dict.fromkeys(scores, _SCORE_RANGE))
    for key in RUN_KEYS:
        if (rows[key].astype(str) != identity[key]).any():
            raise CatrecError(f"{path}: column '{key}' disagrees with the path ({identity[key]})")
    return rows.assign(epsilon=identity["epsilon"], seed=identity["seed"])


def _attack_rows(path: Path) -> pd.DataFrame:
    # After the run's keys: the attack and the position (names), then k and the metrics (numbers).
    scores = (*METRICS, *(f"clean_{metric}" for metric in METRICS))
    return _labelled_rows(path, ATTACK_COLUMNS, ATTACK_COLUMNS[len(RUN_KEYS) + 2 :], scores)


def _profile_rows(path: Path) -> pd.DataFrame:
    return _labelled_rows(path, PROFILE_COLUMNS, PROFILE_COLUMNS[len(RUN_KEYS) :])


@dataclass(frozen=True)
class _Kind:
    """How to read one kind of result file; a row's key is its run's keys, then ``sort_then``."""

    read: Callable[[Path], pd.DataFrame]
    columns: list[str]
    sort_then: tuple[str, ...]

    @property
    def key(self) -> list[str]:
        return [*RUN_KEYS, *self.sort_then]


_KINDS = {
    "metrics": _Kind(_metrics_rows, METRICS_COLUMNS, ("epsilon", "seed", "split")),
    "curves": _Kind(_curve_rows, CURVE_SUMMARY_COLUMNS, ("epsilon", "seed", "epoch", "split")),
    "attacks": _Kind(_attack_rows, ATTACK_SUMMARY_COLUMNS, ("epsilon", "seed", "attack", "position", "k")),
    "profiles": _Kind(_profile_rows, PROFILE_SUMMARY_COLUMNS, ("epsilon", "seed", "position_from_end")),
}


def collect(kind: str, inputs: Sequence[Path], output: Path, *, long: bool = False) -> None:
    """Concatenate per-run results of one ``kind`` into a tidy CSV, sorted so reruns give identical files.

    ``long`` (metrics only) writes one row per metric instead: ``METRICS_LONG_COLUMNS``.
    """
    if kind not in _KINDS:
        raise CatrecError(f"unknown kind '{kind}' (expected one of {', '.join(_KINDS)})")
    if not inputs:
        raise CatrecError(f"collect {kind}: no input files")
    if long and kind != "metrics":
        raise CatrecError(f"collect {kind}: --long applies to metrics only")
    spec = _KINDS[kind]
    frame = pd.concat(
        [spec.read(Path(path))[spec.columns].assign(_file=str(path)) for path in inputs], ignore_index=True
    )
    _require_unique_keys(frame, spec.key, kind)
    frame = sort_runs(frame.drop(columns="_file"), then=spec.sort_then)
    if kind == "metrics":
        note_code_versions(frame["code_digest"], f"collect {kind}")
    if long:
        identity = [column for column in METRICS_COLUMNS if column not in METRICS]
        frame = frame.melt(id_vars=identity, value_vars=list(METRICS), var_name="metric", value_name="value")
        frame = sort_runs(frame, then=("epsilon", "seed", "split", "metric"))[METRICS_LONG_COLUMNS]
    write_csv(frame, output)


def _require_unique_keys(frame: pd.DataFrame, key: list[str], kind: str) -> None:
    """Refuse two rows with one ``key`` (a file given twice, an epoch written twice), naming the files."""
    repeated = frame[frame.duplicated(key, keep=False)]
    if not repeated.empty:
        _, rows = next(iter(repeated.groupby(key, dropna=False, sort=False)))
        described = ", ".join(f"{column}={rows.iloc[0][column]}" for column in key)
        files = " and ".join(dict.fromkeys(rows["_file"]))
        raise CatrecError(f"collect {kind}: two rows for {described} (in {files})")


def _declare_collect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["metrics", "curves", "attacks", "profiles"])
    parser.add_argument("inputs", type=Path, nargs="+")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--long", action="store_true", help="metrics: one row per metric (metric, value)")


COMMANDS = (
    Command(
        "collect", "Gather per-run results into one tidy CSV.", _declare_collect, Command.calling(collect)
    ),
)
