"""Table 2 of the paper: every method's test metrics per dataset and model (mean ± std over seeds, the
improvement over base), and the comparison with the paper's numbers."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from catrec.commands import Command, add_output_prefix, add_paper
from catrec.errors import CatrecError
from catrec.report.frames import (
    DATASET_ORDER,
    MISSING,
    MODEL_ORDER,
    label,
    note_code_versions,
    ordered,
    read_table_csv,
    sort_runs,
)
from catrec.report.render import Cell, Table, format_number, require_unique, write_table
from catrec.vocabulary import METHODS, METRICS, RUN_KEYS


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
    require_unique(test, [*RUN_KEYS, "seed"], metrics_csv)
    if "code_digest" in test.columns:  # a summary collected before catrec recorded it has none
        note_code_versions(test["code_digest"], "table2")
    # Several seeds of one run are averaged (sample std beside, NaN for one seed); `seeds` counts them.
    means = test.groupby(RUN_KEYS, as_index=False).agg(
        **{metric: (metric, "mean") for metric in METRICS},
        **{f"{metric}_std": (metric, "std") for metric in METRICS},
        seeds=("seed", "nunique"),
    )
    columns = [*RUN_KEYS]
    for metric in METRICS:
        columns += [metric, f"{metric}_std", f"{metric}_vs_base_pct"]
    return sort_runs(_vs_base(means))[[*columns, "seeds"]]


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
                        MISSING
                        if method == "base"
                        else format_number(values[f"{metric}_vs_base_pct"], ".2f", "%")
                    )
                    spread = values[f"{metric}_std"]
                    text = format_number(values[metric], ".4f")
                    if not math.isnan(spread):
                        text += f" ± {spread:.4f}"
                    row += [
                        Cell(text, bold),
                        Cell(improvement, bold and improvement != MISSING),
                    ]
            rows.append(row)
    return Table(
        header=["Model", "Method", *["NDCG@10", "vs Base", "HT@10", "vs Base"] * len(datasets)],
        rows=rows,
        align="ll" + "rrrr" * len(datasets),
        caption="Table 2: Test accuracy of each training method (mean ± std over seeds where there are "
        "several); vs Base is the relative improvement of the mean over the base model; best per model "
        "in bold.",
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
    require_unique(paper, RUN_KEYS, paper_path)
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
        texts += [format_number(record[c], ".4f") for c in ("paper", "ours")]
        texts += [format_number(record["diff"], "+.4f"), format_number(record["diff_pct"], "+.1f", "%")]
        texts += [format_number(record[c], "+.2f", "%") for c in ("paper_vs_base_pct", "ours_vs_base_pct")]
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
    """Write ``prefix/table2.{csv,md,tex,html}`` and ``prefix/table2_vs_paper.{csv,md,html}``."""
    ours = _table2_frame(metrics_csv)
    write_table(prefix / "table2", ours, _table2_layout(ours))
    comparison = _comparison_frame(ours, paper_path)
    write_table(
        prefix / "table2_vs_paper", comparison, _comparison_layout(comparison), formats=("csv", "md", "html")
    )


def _declare_table2(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        dest="metrics_csv",
        metavar="METRICS",
        type=Path,
        required=True,
        help="tidy metrics CSV (catrec collect metrics)",
    )
    add_paper(parser, "Table 2")
    add_output_prefix(parser, "directory for the table2* files")


COMMANDS = (
    Command(
        "table2",
        "Render Table 2 and the comparison with the paper's numbers.",
        _declare_table2,
        Command.calling(write_table2),
    ),
)
