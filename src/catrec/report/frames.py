"""Reading and writing tidy CSV, and the paper's names and order of datasets, models and methods.

Shared by the collectors, the tables and the plots of ``catrec.report``.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from catrec.errors import CatrecError
from catrec.io import atomic_path, read_text
from catrec.vocabulary import METHODS, RUN_KEYS

# Display order follows the paper; anything else (e.g. the toy dataset) comes after, alphabetically.
DATASET_ORDER = ("ml-1m", "beauty", "video", "clothing")
MODEL_ORDER = ("sasrec", "gru4rec")
# Curve files are named after the run, and `pretrain` is a run but not a method of Table 2.
RUN_ORDER = ("pretrain", *METHODS)
LABELS = {
    "ml-1m": "ML-1M",
    "beauty": "Beauty",
    "video": "Video",
    "clothing": "Clothing",
    "toy": "Toy",
    "sasrec": "SASRec",
    "gru4rec": "GRU4Rec",
    "ndcg@10": "NDCG@10",
    "hit@10": "HT@10",
}
MISSING = "—"

STATS_KEYS = ("users", "items", "interactions", "density")


def label(name: str) -> str:
    """The paper's spelling of a dataset, model or metric name (the name itself when unknown)."""
    return LABELS.get(name, name)


def ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """The distinct ``values``: those in ``preferred`` in its order, then the others alphabetically."""
    present = set(values)
    return [value for value in preferred if value in present] + sorted(present - set(preferred))


def sort_runs(frame: pd.DataFrame, then: Sequence[str] = ()) -> pd.DataFrame:
    """Sort by dataset, model and run in the paper's order, then by the ``then`` columns."""
    preferred = {"dataset": DATASET_ORDER, "model": MODEL_ORDER, "method": RUN_ORDER}
    rank = {
        column: {value: i for i, value in enumerate(ordered(frame[column], order))}
        for column, order in preferred.items()
    }

    def key(column: pd.Series) -> pd.Series:
        return column.map(rank[column.name]) if column.name in rank else column

    return frame.sort_values([*RUN_KEYS, *then], key=key, kind="stable").reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as temp:
        frame.to_csv(temp, index=False)


def note_code_versions(digests: pd.Series, what: str) -> None:
    """Say in one line (stderr) when ``digests`` (the ``code_digest`` of each row) name several versions
    of the catrec code, so rows computed by different code are never combined without a word."""
    versions = sorted(set(digests.fillna("unrecorded").astype(str)))
    if len(versions) > 1:
        shown = ", ".join(version[:12] for version in versions)
        print(
            f"warning: {what} combines rows from {len(versions)} versions of the catrec code ({shown}); "
            "rerun after a code change with --forcerun preprocess (README, 'After a code change')",
            file=sys.stderr,
        )


def require_columns(frame: pd.DataFrame, columns: Iterable[str], source: Path | str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise CatrecError(f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}")


def read_table_csv(
    path: Path,
    columns: Iterable[str] = (),
    numeric: Iterable[str] = (),
    *,
    bounded: Mapping[str, tuple[float, float]] | None = None,
    choices: Mapping[str, Collection[str]] | None = None,
) -> pd.DataFrame:
    """Read a CSV, check it has ``columns``, that every row has the header's fields (a truncated row would
    become blanks) and that ``numeric`` columns hold numbers; a bad row is named ``file:line``.

    ``bounded`` columns (numeric too) must hold finite numbers within their (low, high), blanks refused;
    ``choices`` columns one of their values.
    """
    bounded, choices = bounded or {}, choices or {}
    text = read_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise CatrecError(f"{path}: not a readable CSV ({exc})") from exc
    numeric = list(dict.fromkeys([*numeric, *bounded]))
    require_columns(frame, [*columns, *numeric, *choices], path)
    lines = _row_lines(path, text)

    def refuse(bad: pd.Series, column: str, holds: str) -> None:
        """Name the first row of ``bad``: ``holds`` formats the value it holds."""
        if bad.any():
            row = int(bad.to_numpy().argmax())
            value = frame[column].iloc[row]
            what = holds.format(repr(getattr(value, "item", lambda: value)()))  # 0.5, not np.float64(0.5)
            raise CatrecError(f"{path}:{lines[row]}: column '{column}' holds {what}")

    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        refuse(values.isna() & frame[column].notna(), column, "a non-number: {}")
        frame[column] = values
    for column, (low, high) in bounded.items():
        refuse(~frame[column].between(low, high), column, f"{{}}, not a number within [{low}, {high}]")
    for column, allowed in choices.items():
        refuse(~frame[column].isin(allowed), column, f"{{}}, not one of {', '.join(allowed)}")
    return frame


def _row_lines(path: Path, text: str) -> list[int]:
    """The line number of each data row of a CSV (blank lines skipped, as pandas skips them); a row whose
    number of fields differs from the header's is refused."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    lines = []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise CatrecError(
                f"{path}:{reader.line_num}: {len(row)} field(s), the header has {len(header)} "
                "(a truncated or damaged row)"
            )
        lines.append(reader.line_num)
    return lines
