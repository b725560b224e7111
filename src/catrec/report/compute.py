"""``catrec compute``: what each job cost, from the ``benchmark:`` files Snakemake wrote for it.

Every job of ``catrec.vocabulary.BENCHMARK_STAGES`` has a benchmark file (``catrec.paths``, under
``benchmarks/``): Snakemake's tab-separated table with a header and one row per repetition of the job (one
without ``repeat``). ``seconds`` is the mean of column ``s`` (the job's wall-clock time), ``max_rss_mb`` the
largest ``max_rss`` (peak resident memory of the job's processes, MiB); Snakemake writes ``NA`` (or ``-``)
when a job ended before its first memory sample, which becomes an empty cell. The identity comes from the
path: ``stage`` is the rule (``finetune`` for ``finetune_clean`` too), ``method`` is empty for pretrain and
the cascade, and so are ``model`` and ``seed`` for the cascade; ``epsilon`` is empty (NaN) for a run without
one.

``read_benchmark`` parses one file and ``compute_frame`` gathers files, both without writing anything (with
``allow_missing``, a job whose file does not exist, one run before benchmarks were recorded, is a row
without numbers); ``write_compute`` writes ``PREFIX.csv`` (``COMPUTE_COLUMNS``), ``.md`` and ``.html``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from catrec.commands import Command, add_output_prefix
from catrec.errors import CatrecError
from catrec.io import read_text
from catrec.paths import parse_benchmark
from catrec.report.frames import label, sort_runs
from catrec.report.render import Cell, Table, format_number, write_table
from catrec.vocabulary import BENCHMARK_STAGES, COMPUTE_COLUMNS

BENCHMARK_COLUMNS = ("s", "max_rss")
_MISSING_VALUES = ("NA", "-", "")


def _number_or_nan(path: Path, line_number: int, column: str, text: str) -> float:
    if text.strip() in _MISSING_VALUES:
        return math.nan
    try:
        value = float(text)
    except ValueError as exc:
        raise CatrecError(f"{path}:{line_number}: column '{column}' is not a number: {text!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise CatrecError(f"{path}:{line_number}: column '{column}' must be finite and >= 0, got {text!r}")
    return value


def _identity(path: Path) -> dict[str, object]:
    """stage, dataset, model, method, epsilon and seed of a benchmark file, from its path (catrec.paths)."""
    try:
        identity = parse_benchmark(path)
    except ValueError as exc:
        raise CatrecError(str(exc)) from exc
    return {
        "stage": identity["stage"],
        "dataset": identity["dataset"],
        "model": identity["model"],
        "method": None if identity["method"] == "pretrain" else identity["method"],
        "epsilon": identity["epsilon"],
        "seed": identity["seed"],
    }


def read_benchmark(path: str | Path) -> dict[str, object]:
    """One benchmark file as a row of ``COMPUTE_COLUMNS``: its identity (from the path) and its cost."""
    path = Path(path)
    identity = _identity(path)
    lines = read_text(path).splitlines()
    if not lines:
        raise CatrecError(f"{path}: empty benchmark file")
    header = lines[0].split("\t")
    missing = [column for column in BENCHMARK_COLUMNS if column not in header]
    if missing:
        raise CatrecError(f"{path}:1: missing column(s) {', '.join(repr(c) for c in missing)} in the header")
    seconds, memory = [], []
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise CatrecError(f"{path}:{line_number}: expected {len(header)} fields, got {len(fields)}")
        row = dict(zip(header, fields, strict=True))
        seconds.append(_number_or_nan(path, line_number, "s", row["s"]))
        memory.append(_number_or_nan(path, line_number, "max_rss", row["max_rss"]))
    if not seconds:
        raise CatrecError(f"{path}: no benchmark rows")
    measured = [value for value in memory if not math.isnan(value)]
    return {
        **identity,
        "seconds": math.fsum(seconds) / len(seconds),
        "max_rss_mb": max(measured) if measured else math.nan,
    }


def compute_frame(paths: Sequence[str | Path], *, allow_missing: bool = False) -> pd.DataFrame:
    """Every benchmark file as one row of ``COMPUTE_COLUMNS``, by stage, then dataset, model, method, seed.

    ``allow_missing``: a file that does not exist (its job ran before benchmarks were recorded) is a row with
    empty ``seconds`` and ``max_rss_mb`` instead of an error.
    """
    if not paths:
        raise CatrecError("compute: no benchmark files")
    rows = [
        {**_identity(Path(path)), "seconds": math.nan, "max_rss_mb": math.nan}
        if allow_missing and not Path(path).exists()
        else read_benchmark(path)
        for path in paths
    ]
    frame = pd.DataFrame(rows, columns=COMPUTE_COLUMNS)
    frame["seed"] = frame["seed"].astype("Int64")
    # The paper's order of datasets, models and methods (sort_runs), within the pipeline's order of stages;
    # the cascade's empty model and method, and pretraining's empty method, come first.
    frame = frame.fillna({"model": "", "method": ""})
    frame = sort_runs(frame, then=("epsilon", "seed"))
    rank = {stage: index for index, stage in enumerate(BENCHMARK_STAGES)}
    return frame.sort_values("stage", key=lambda stages: stages.map(rank), kind="stable").reset_index(
        drop=True
    )


def _layout(frame: pd.DataFrame) -> Table:
    def text(value: object) -> str:
        return "" if pd.isna(value) else label(str(value))

    rows = [
        [
            Cell(record["stage"]),
            Cell(text(record["dataset"])),
            Cell(text(record["model"])),
            Cell(text(record["method"])),
            Cell("" if pd.isna(record["epsilon"]) else f"{record['epsilon']:g}"),
            Cell(text(record["seed"])),
            Cell(format_number(record["seconds"], ",.1f")),
            Cell(format_number(record["max_rss_mb"], ",.0f")),
        ]
        for _, record in frame.iterrows()
    ]
    peak = frame["max_rss_mb"].max()
    unmeasured = int(frame["seconds"].isna().sum())
    rows.append(
        [
            Cell(f"all {len(frame)} jobs", bold=True),
            *(Cell("") for _ in range(5)),
            Cell(format_number(frame["seconds"].sum(), ",.1f"), bold=True),
            Cell(format_number(peak, ",.0f"), bold=True),
        ]
    )
    return Table(
        header=["stage", "dataset", "model", "method", "ε", "seed", "seconds", "max RSS (MiB)"],
        rows=rows,
        align="llllrlrr",
        caption="Compute cost of every job (Snakemake benchmark files): wall-clock seconds and peak resident "
        "memory; the last row sums the seconds (one job at a time) and gives the largest peak."
        + (f" — marks the {unmeasured} job(s) run before benchmarks were recorded." if unmeasured else ""),
    )


def write_compute(paths: Sequence[str | Path], prefix: Path, *, allow_missing: bool = False) -> None:
    """Write ``prefix.csv`` (``COMPUTE_COLUMNS``), ``.md`` and ``.html`` from the benchmark files."""
    frame = compute_frame(paths, allow_missing=allow_missing)
    write_table(prefix, frame, _layout(frame), formats=("csv", "md", "html"))


def _declare_compute(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        metavar="benchmarks",
        type=Path,
        nargs="+",
        help="benchmark files, benchmarks/{stage}/<run>.tsv",
    )
    add_output_prefix(parser, "writes PREFIX.csv, .md and .html")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="a benchmark file that does not exist (a job run before benchmarks were recorded) is a row "
        "without numbers instead of an error",
    )


COMMANDS = (
    Command(
        "compute",
        "Tabulate the cost of every job (seconds, peak memory) from Snakemake's benchmark files.",
        _declare_compute,
        Command.calling(write_compute),
    ),
)
