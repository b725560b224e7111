"""Table 1 of the paper: our dataset statistics after preprocessing beside the paper's."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from catrec.commands import Command, add_output_prefix, add_paper, named_path
from catrec.errors import CatrecError
from catrec.io import read_json
from catrec.report.frames import STATS_KEYS, label, read_table_csv
from catrec.report.render import Cell, Table, format_number, require_unique, write_table


def write_table1(stats_paths: Mapping[str, Path], paper_path: Path, prefix: Path) -> None:
    """Dataset statistics (our ``stats.json`` per dataset, in the given order) beside the paper's Table 1."""
    paper = read_table_csv(paper_path, ["dataset"], numeric=STATS_KEYS)
    require_unique(paper, ["dataset"], paper_path)
    paper = paper.set_index("dataset")
    rows = []
    for dataset, path in stats_paths.items():
        stats = read_json(path, STATS_KEYS)
        for key in STATS_KEYS:
            if isinstance(stats[key], bool) or not isinstance(stats[key], int | float):
                raise CatrecError(f"{path}: key '{key}' must be a number, got {stats[key]!r}")
        theirs = paper.loc[dataset, list(STATS_KEYS)] if dataset in paper.index else {}
        rows.append(
            {"dataset": dataset, **{key: stats[key] for key in STATS_KEYS}}
            | {f"paper_{key}": theirs.get(key, math.nan) for key in STATS_KEYS}
        )
    frame = pd.DataFrame(rows)
    # Nullable integers: a dataset the paper lacks must not turn the paper's counts into floats.
    for key in ("users", "items", "interactions"):
        for column in (key, f"paper_{key}"):
            frame[column] = frame[column].round().astype("Int64")

    def cells(row: pd.Series, columns: Sequence[str]) -> list[Cell]:
        counts = [Cell(format_number(row[column], ",")) for column in columns[:3]]
        return [*counts, Cell(format_number(100 * row[columns[3]], ".3f", "%"))]

    names = ["#Users", "#Items", "#Interactions", "Density"]
    table = Table(
        header=["Dataset", *names, *names],
        rows=[
            [
                Cell(label(row["dataset"])),
                *cells(row, STATS_KEYS),
                *cells(row, [f"paper_{k}" for k in STATS_KEYS]),
            ]
            for _, row in frame.iterrows()
        ],
        align="l" + "r" * 8,
        caption="Table 1: Statistics of the datasets (ours after preprocessing, and the paper's).",
        groups=[("", 1), ("ours", 4), ("paper", 4)],
    )
    write_table(prefix, frame, table)


def _declare_table1(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stats",
        dest="stats_paths",
        type=named_path,
        action="append",
        required=True,
        metavar="NAME=STATS_JSON",
    )
    add_paper(parser, "Table 1")
    add_output_prefix(parser, "writes PREFIX.{csv,md,tex,html}")


def _run_table1(args: argparse.Namespace) -> None:
    write_table1(dict(args.stats_paths), args.paper_path, args.prefix)


COMMANDS = (
    Command(
        "table1", "Render Table 1 (dataset statistics beside the paper's).", _declare_table1, _run_table1
    ),
)
