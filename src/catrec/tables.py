"""Tidy summary CSVs (``catrec collect``) and Tables 1 and 2 of the paper, each beside the paper's numbers.

Every table is written three ways by one writer: CSV with raw numbers (for further analysis), Markdown and
LaTeX (booktabs) with formatted, human-readable cells. All files are written atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from catrec.errors import CatrecError
from catrec.io import atomic_path, write_text_atomically
from catrec.schemas import ATTACK_COLUMNS, CURVE_COLUMNS, METHODS, METRICS, METRICS_COLUMNS, RUN_KEYS

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


def require_columns(frame: pd.DataFrame, columns: Iterable[str], source: Path | str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise CatrecError(f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}")


def read_table_csv(path: Path, columns: Iterable[str] = (), numeric: Iterable[str] = ()) -> pd.DataFrame:
    """Read a CSV, check it has ``columns`` and that ``numeric`` columns hold numbers."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise CatrecError(f"{path}: file not found") from exc
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CatrecError(f"{path}: not a readable CSV ({exc})") from exc
    require_columns(frame, [*columns, *numeric], path)
    for column in numeric:
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError) as exc:
            raise CatrecError(f"{path}: column '{column}' holds a non-number ({exc})") from exc
    return frame


def _read_json(path: Path, keys: Iterable[str]) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CatrecError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise CatrecError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise CatrecError(f"{path}: expected a JSON object")
    missing = [key for key in keys if key not in record]
    if missing:
        raise CatrecError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)}")
    return record


# ---------------------------------------------------------------------------------------------------------
# One table model, three renderings
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    """A formatted table for Markdown and LaTeX.

    ``groups`` are (title, width) spans over the header (LaTeX ``\\multicolumn``; Markdown, which has a single
    header row, prefixes the title to each column name). ``breaks`` are the row indices preceded by a rule.
    """

    header: list[str]
    rows: list[list[Cell]]
    align: str
    caption: str
    groups: list[tuple[str, int]] = field(default_factory=list)
    breaks: set[int] = field(default_factory=set)


def _markdown(table: Table) -> str:
    header = table.header
    if table.groups:
        titles = [title for title, width in table.groups for _ in range(width)]
        header = [f"{title} {name}".strip() for title, name in zip(titles, header, strict=True)]
    rule = ["---:" if align == "r" else "---" for align in table.align]
    lines = [f"**{table.caption}**", "", _markdown_row(header), _markdown_row(rule)]
    lines += [_markdown_row([f"**{c.text}**" if c.bold else c.text for c in row]) for row in table.rows]
    return "\n".join(lines) + "\n"


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    MISSING: "---",
}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(char, char) for char in text)


def _latex(table: Table) -> str:
    lines = [
        "% generated by catrec; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_tex(table.caption)}}}",
        f"\\begin{{tabular}}{{{table.align}}}",
        "\\toprule",
    ]
    if table.groups:
        spans, rules, start = [], [], 1
        for title, width in table.groups:
            spans.append(
                f"\\multicolumn{{{width}}}{{c}}{{{_tex(title)}}}" if title else " & ".join([""] * width)
            )
            if title:
                rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines += [" & ".join(spans) + " \\\\", " ".join(rules)]
    lines += [" & ".join(_tex(name) for name in table.header) + " \\\\", "\\midrule"]
    for index, row in enumerate(table.rows):
        if index in table.breaks:
            lines.append("\\midrule")
        cells = [f"\\textbf{{{_tex(c.text)}}}" if c.bold else _tex(c.text) for c in row]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _write_table(
    prefix: Path, frame: pd.DataFrame, table: Table, formats: Sequence[str] = ("csv", "md", "tex")
) -> None:
    """Write ``prefix.csv`` from the raw ``frame`` and ``prefix.md`` / ``prefix.tex`` from ``table``."""
    renderers = {"md": _markdown, "tex": _latex}
    for suffix in formats:
        path = prefix.with_name(f"{prefix.name}.{suffix}")
        if suffix == "csv":
            write_csv(frame, path)
        else:
            text = renderers[suffix](table)
            write_text_atomically(path, text)


def _number(value: float, spec: str, suffix: str = "") -> str:
    """Format a number for display; NaN (no such value) shows as a dash."""
    return MISSING if pd.isna(value) else f"{value:{spec}}{suffix}"


# ---------------------------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------------------------


def write_table1(stats_paths: Mapping[str, Path], paper_path: Path, prefix: Path) -> None:
    """Dataset statistics (our ``stats.json`` per dataset, in the given order) beside the paper's Table 1."""
    paper = read_table_csv(paper_path, ["dataset"], numeric=STATS_KEYS)
    _require_unique(paper, ["dataset"], paper_path)
    paper = paper.set_index("dataset")
    rows = []
    for dataset, path in stats_paths.items():
        stats = _read_json(path, STATS_KEYS)
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
        counts = [Cell(_number(row[column], ",")) for column in columns[:3]]
        return [*counts, Cell(_number(100 * row[columns[3]], ".3f", "%"))]

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
    _write_table(prefix, frame, table)


def _require_unique(frame: pd.DataFrame, keys: list[str], source: Path) -> None:
    duplicated = frame[frame.duplicated(keys, keep=False)]
    if not duplicated.empty:
        first = ", ".join(str(duplicated.iloc[0][key]) for key in keys)
        raise CatrecError(f"{source}: duplicate rows for ({', '.join(keys)}) = ({first})")


# ---------------------------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------------------------


def _metrics_rows(path: Path) -> pd.DataFrame:
    record = _read_json(path, ["dataset", "model", "method", "seed", "valid", "test"])
    # Only sweep runs need to record epsilon; an absent one stays blank (NaN) in the summary.
    epsilon = record.get("epsilon")
    if epsilon is None:
        epsilon = math.nan
    elif isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise CatrecError(f"{path}: key 'epsilon' must be a number, got {epsilon!r}")
    rows = []
    for split in ("valid", "test"):
        scores = record[split]
        if not isinstance(scores, dict) or any(metric not in scores for metric in METRICS):
            raise CatrecError(f"{path}: key '{split}' must be an object with {', '.join(METRICS)}")
        identity = {key: record[key] for key in ("dataset", "model", "method", "seed")}
        rows.append({**identity, "epsilon": float(epsilon), "split": split, **scores})
    return pd.DataFrame(rows)


def _curve_rows(path: Path) -> pd.DataFrame:
    # The run's identity lives only in its path: results/curves/{dataset}/{model}/{run}.csv.
    if len(path.parts) < 3:
        raise CatrecError(f"{path}: expected a curve path .../{{dataset}}/{{model}}/{{run}}.csv")
    curve = read_table_csv(path, CURVE_COLUMNS)
    return curve.assign(dataset=path.parent.parent.name, model=path.parent.name, method=path.stem)


def _attack_rows(path: Path) -> pd.DataFrame:
    return read_table_csv(path, ATTACK_COLUMNS)


@dataclass(frozen=True)
class _Kind:
    read: Callable[[Path], pd.DataFrame]
    columns: list[str]
    sort_then: tuple[str, ...]


_KINDS = {
    "metrics": _Kind(_metrics_rows, METRICS_COLUMNS, ("epsilon", "seed", "split")),
    "curves": _Kind(_curve_rows, [*RUN_KEYS, *CURVE_COLUMNS], ("epoch", "split")),
    "attacks": _Kind(_attack_rows, ATTACK_COLUMNS, ("attack", "position", "k")),
}


def collect(kind: str, inputs: Sequence[Path], output: Path) -> None:
    """Concatenate per-run results of one ``kind`` into a tidy CSV, sorted so reruns give identical files."""
    if kind not in _KINDS:
        raise CatrecError(f"unknown kind '{kind}' (expected one of {', '.join(_KINDS)})")
    if not inputs:
        raise CatrecError(f"collect {kind}: no input files")
    spec = _KINDS[kind]
    frame = pd.concat([spec.read(Path(path))[spec.columns] for path in inputs], ignore_index=True)
    write_csv(sort_runs(frame, then=spec.sort_then), output)


# ---------------------------------------------------------------------------------------------------------
# Table 2
# ---------------------------------------------------------------------------------------------------------


def _vs_base(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``{metric}_vs_base_pct``: the relative improvement in % over the base row of the same block."""
    base = frame.loc[frame["method"] == "base", ["dataset", "model", *METRICS]]
    merged = frame.merge(base, on=["dataset", "model"], how="left", suffixes=("", "_base"))
    improvements = {
        f"{metric}_vs_base_pct": 100 * (merged[metric] - merged[f"{metric}_base"]) / merged[f"{metric}_base"]
        for metric in METRICS
    }
    return frame.reset_index(drop=True).assign(**improvements)


def _main_runs(test: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Drop epsilon-sweep rows, so each run of Table 2 is one configuration.

    A run's JSON may record its epsilon or not; where a block has rows without epsilon, rows with one are
    sweep points. Several distinct epsilons left for one run cannot be told apart from a sweep: refuse.
    """
    has_epsilon = test["epsilon"].notna()
    block_has_plain = (~has_epsilon).groupby([test[key] for key in RUN_KEYS]).transform("any")
    main = test[~(has_epsilon & block_has_plain)]
    counts = main.groupby(RUN_KEYS)["epsilon"].nunique()
    if (counts > 1).any():
        run = "/".join(counts[counts > 1].index[0])
        raise CatrecError(
            f"{source}: column 'epsilon' has several values for {run}; pass the epsilon sweep separately"
        )
    return main


def _table2_frame(metrics_csv: Path) -> pd.DataFrame:
    metrics = read_table_csv(metrics_csv, [*RUN_KEYS, "seed", "split"], numeric=["epsilon", *METRICS])
    test = _main_runs(metrics[metrics["split"] == "test"], metrics_csv)
    if test.empty:
        raise CatrecError(f"{metrics_csv}: no rows with 'test' in column 'split'")
    _require_unique(test, [*RUN_KEYS, "seed"], metrics_csv)
    # Several seeds of one run are averaged; `seeds` records how many went in.
    means = test.groupby(RUN_KEYS, as_index=False).agg(
        **{metric: (metric, "mean") for metric in METRICS}, seeds=("seed", "nunique")
    )
    columns = [*RUN_KEYS, "ndcg@10", "ndcg@10_vs_base_pct", "hit@10", "hit@10_vs_base_pct", "seeds"]
    return sort_runs(_vs_base(means))[columns]


def _table2_layout(frame: pd.DataFrame) -> Table:
    datasets = ordered(frame["dataset"], DATASET_ORDER)
    indexed = frame.set_index(RUN_KEYS)
    rows: list[list[Cell]] = []
    breaks: set[int] = set()
    for model in ordered(frame["model"], MODEL_ORDER):
        block = frame[frame["model"] == model]
        # The paper bolds the best value of each column within a model; compare what is displayed, so
        # values that print the same are bolded alike.
        best = block.groupby("dataset")[list(METRICS)].max()
        if rows:
            breaks.add(len(rows))
        for i, method in enumerate(ordered(block["method"], METHODS)):
            row = [Cell(label(model) if i == 0 else ""), Cell(method)]
            for dataset in datasets:
                key = (dataset, model, method)
                values = indexed.loc[key] if key in indexed.index else None
                for metric in METRICS:
                    if values is None:
                        row += [Cell(MISSING), Cell(MISSING)]
                        continue
                    bold = round(values[metric], 4) == round(best.loc[dataset, metric], 4)
                    improvement = (
                        MISSING if method == "base" else _number(values[f"{metric}_vs_base_pct"], ".2f", "%")
                    )
                    row += [
                        Cell(_number(values[metric], ".4f"), bold),
                        Cell(improvement, bold and improvement != MISSING),
                    ]
            rows.append(row)
    return Table(
        header=["Model", "Method", *["NDCG@10", "vs Base", "HT@10", "vs Base"] * len(datasets)],
        rows=rows,
        align="ll" + "rrrr" * len(datasets),
        caption="Table 2: Test accuracy of each training method; vs Base is the relative improvement "
        "over the base model; best per model in bold.",
        groups=[("", 2), *[(label(dataset), 4) for dataset in datasets]],
        breaks=breaks,
    )


def _long(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run and metric: ``value`` and ``vs_base_pct``."""
    return pd.concat(
        [
            frame[RUN_KEYS].assign(
                metric=metric, value=frame[metric], vs_base_pct=frame[f"{metric}_vs_base_pct"]
            )
            for metric in METRICS
        ],
        ignore_index=True,
    )


def _comparison_frame(ours: pd.DataFrame, paper_path: Path) -> pd.DataFrame:
    paper = read_table_csv(paper_path, RUN_KEYS, numeric=METRICS)
    _require_unique(paper, RUN_KEYS, paper_path)
    merged = _long(_vs_base(paper)).merge(
        _long(ours), on=[*RUN_KEYS, "metric"], how="outer", suffixes=("_paper", "_ours")
    )
    merged = merged.assign(
        paper=merged["value_paper"],
        ours=merged["value_ours"],
        diff=merged["value_ours"] - merged["value_paper"],
        diff_pct=100 * (merged["value_ours"] - merged["value_paper"]) / merged["value_paper"],
        paper_vs_base_pct=merged["vs_base_pct_paper"],
        ours_vs_base_pct=merged["vs_base_pct_ours"],
    )
    metric_rank = {metric: i for i, metric in enumerate(METRICS)}
    merged = merged.assign(metric_rank=merged["metric"].map(metric_rank))
    columns = [
        *RUN_KEYS,
        "metric",
        "paper",
        "ours",
        "diff",
        "diff_pct",
        "paper_vs_base_pct",
        "ours_vs_base_pct",
    ]
    return sort_runs(merged, then=["metric_rank"])[columns]


def _comparison_layout(frame: pd.DataFrame) -> Table:
    def row(record: pd.Series) -> list[Cell]:
        texts = [label(record["dataset"]), label(record["model"]), record["method"], label(record["metric"])]
        texts += [_number(record[c], ".4f") for c in ("paper", "ours")]
        texts += [_number(record["diff"], "+.4f"), _number(record["diff_pct"], "+.1f", "%")]
        texts += [_number(record[c], "+.2f", "%") for c in ("paper_vs_base_pct", "ours_vs_base_pct")]
        return [Cell(text) for text in texts]

    return Table(
        header=[
            "Dataset",
            "Model",
            "Method",
            "Metric",
            "Paper",
            "Ours",
            "Diff",
            "Diff %",
            "Paper vs Base",
            "Ours vs Base",
        ],
        rows=[row(record) for _, record in frame.iterrows()],
        align="llll" + "r" * 6,
        caption="Table 2 against the paper: test metrics, difference (ours - paper), and the improvement "
        "over the base model in each.",
    )


def write_table2(metrics_csv: Path, paper_path: Path, prefix: Path) -> None:
    """Write ``prefix/table2.{csv,md,tex}`` and ``prefix/table2_vs_paper.{csv,md}`` from the tidy metrics."""
    ours = _table2_frame(metrics_csv)
    _write_table(prefix / "table2", ours, _table2_layout(ours))
    comparison = _comparison_frame(ours, paper_path)
    _write_table(
        prefix / "table2_vs_paper", comparison, _comparison_layout(comparison), formats=("csv", "md")
    )
