"""Tables 1 and 2, ``collect``, and the paper's numbers in config/paper/."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from catrec.errors import CatrecError
from catrec.report.collect import collect
from catrec.report.table1 import write_table1
from catrec.report.table2 import write_table2
from catrec.vocabulary import (
    ATTACK_COLUMNS,
    ATTACK_SUMMARY_COLUMNS,
    CURVE_COLUMNS,
    CURVE_SUMMARY_COLUMNS,
    RUN_KEYS,
)

PAPER_DIR = Path(__file__).resolve().parents[1] / "config" / "paper"


def write_json(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def write_frame(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# --- the paper's numbers ------------------------------------------------------------------------------------


def test_paper_table2_is_complete_and_matches_spot_checks() -> None:
    paper = pd.read_csv(PAPER_DIR / "table2.csv")
    assert len(paper) == 40
    assert not paper.duplicated(["dataset", "model", "method"]).any()
    assert set(paper["dataset"]) == {"ml-1m", "beauty", "video", "clothing"}
    assert set(paper["method"]) == {"base", "adv_linear", "adv_seq", "adv_global", "adv_cas"}
    cell = paper.set_index(["dataset", "model", "method"])
    assert cell.loc[("beauty", "sasrec", "adv_cas"), "ndcg@10"] == 0.0320
    assert cell.loc[("ml-1m", "gru4rec", "adv_global"), "hit@10"] == 0.2543
    assert cell.loc[("clothing", "sasrec", "adv_linear"), "ndcg@10"] == 0.0074
    assert cell.loc[("video", "gru4rec", "base"), "hit@10"] == 0.0872


def test_paper_table1_values() -> None:
    paper = pd.read_csv(PAPER_DIR / "table1.csv").set_index("dataset")
    assert paper.loc["clothing", "users"] == 39387
    assert paper.loc["ml-1m", "interactions"] == 987540
    assert paper.loc["ml-1m", "density"] == pytest.approx(0.04786)
    # Density is consistent with the counts, to the paper's rounding.
    for dataset, row in paper.iterrows():
        expected = row["interactions"] / (row["users"] * row["items"])
        assert row["density"] == pytest.approx(expected, abs=6e-6), dataset


# --- Table 1 ------------------------------------------------------------------------------------------------


def test_write_table1(tmp_path: Path) -> None:
    stats = {
        "ml-1m": write_json(
            tmp_path / "ml" / "stats.json",
            {"users": 6040, "items": 3416, "interactions": 987540, "density": 0.0478637},
        ),
        "toy": write_json(
            tmp_path / "toy" / "stats.json",
            {"users": 300, "items": 100, "interactions": 6000, "density": 0.2},
        ),
    }
    prefix = tmp_path / "out" / "table1"
    write_table1(stats, PAPER_DIR / "table1.csv", prefix)

    table = pd.read_csv(prefix.with_suffix(".csv")).set_index("dataset")
    assert list(table.index) == ["ml-1m", "toy"]
    assert table.loc["toy", "users"] == 300
    assert table.loc["ml-1m", "paper_items"] == 3416
    assert pd.isna(table.loc["toy", "paper_users"])

    markdown = prefix.with_suffix(".md").read_text()
    assert "| ML-1M | 6,040 | 3,416 | 987,540 | 4.786% | 6,040 | 3,416 | 987,540 | 4.786% |" in markdown
    assert "| Toy | 300 | 100 | 6,000 | 20.000% | — | — | — | — |" in markdown
    latex = prefix.with_suffix(".tex").read_text()
    assert "ML-1M & 6,040 & 3,416 & 987,540 & 4.786\\% &" in latex
    assert "Toy & 300 & 100 & 6,000 & 20.000\\% & --- & --- & --- & --- \\\\" in latex
    assert "\\#Users" in latex
    page = prefix.with_suffix(".html").read_text()
    assert '<tr><th colspan="1"></th><th colspan="4">ours</th><th colspan="4">paper</th></tr>' in page
    assert '<td class="l">Toy</td><td class="r">300</td>' in page and '<th class="r">#Users</th>' in page
    assert "<caption>Table 1: Statistics of the datasets" in page
    assert not list(prefix.parent.glob(".*.part")), "temp files must not be left behind"


def test_write_table1_without_paper_datasets(tmp_path: Path) -> None:
    stats = write_json(tmp_path / "stats.json", {"users": 3, "items": 2, "interactions": 5, "density": 5 / 6})
    write_table1({"toy": stats}, PAPER_DIR / "table1.csv", tmp_path / "table1")
    assert "| Toy | 3 | 2 | 5 | 83.333% | — | — | — | — |" in (tmp_path / "table1.md").read_text()
    assert pd.read_csv(tmp_path / "table1.csv")["paper_density"].isna().all()


def test_write_table1_names_missing_key(tmp_path: Path) -> None:
    stats = write_json(tmp_path / "stats.json", {"users": 1, "items": 2, "interactions": 3})
    with pytest.raises(CatrecError, match=r"stats\.json.*'density'"):
        write_table1({"toy": stats}, PAPER_DIR / "table1.csv", tmp_path / "table1")


# --- collect ------------------------------------------------------------------------------------------------


def metrics_record(dataset: str, method: str, seed: int, ndcg: float, **extra: float) -> dict:
    return {
        "dataset": dataset,
        "model": "sasrec",
        "method": method,
        "seed": seed,
        "valid": {"ndcg@10": ndcg + 0.01, "hit@10": 2 * ndcg + 0.01},
        "test": {"ndcg@10": ndcg, "hit@10": 2 * ndcg},
        **extra,
    }


def test_collect_metrics(tmp_path: Path) -> None:
    inputs = [
        write_json(tmp_path / "a.json", metrics_record("video", "adv_cas", 0, 0.3, epsilon=10.0)),
        write_json(tmp_path / "b.json", metrics_record("video", "base", 0, 0.2)),
        write_json(tmp_path / "c.json", metrics_record("beauty", "base", 1, 0.1)),
    ]
    output = tmp_path / "summary" / "metrics.csv"
    collect("metrics", inputs, output)
    frame = pd.read_csv(output)
    assert list(frame.columns) == [
        "dataset",
        "model",
        "method",
        "epsilon",
        "seed",
        "split",
        "ndcg@10",
        "hit@10",
        "code_digest",
    ]
    # Paper order: beauty before video, base before adv_cas; one row per split.
    assert list(zip(frame["dataset"], frame["method"], frame["split"], strict=True)) == [
        ("beauty", "base", "test"),
        ("beauty", "base", "valid"),
        ("video", "base", "test"),
        ("video", "base", "valid"),
        ("video", "adv_cas", "test"),
        ("video", "adv_cas", "valid"),
    ]
    assert frame["epsilon"].isna().sum() == 4
    assert frame.loc[4, "epsilon"] == 10.0
    assert frame.loc[5, "hit@10"] == pytest.approx(0.61)
    # Deterministic: the same inputs in another order give the same bytes.
    again = tmp_path / "again.csv"
    collect("metrics", list(reversed(inputs)), again)
    assert again.read_bytes() == output.read_bytes()


def test_collect_metrics_long_has_one_row_per_metric(tmp_path: Path) -> None:
    inputs = [
        write_json(tmp_path / "a.json", metrics_record("video", "adv_cas", 0, 0.3, epsilon=10.0)),
        write_json(tmp_path / "b.json", metrics_record("video", "base", 0, 0.2)),
    ]
    collect("metrics", inputs, tmp_path / "wide.csv")
    collect("metrics", inputs, tmp_path / "long.csv", long=True)
    wide, long = pd.read_csv(tmp_path / "wide.csv"), pd.read_csv(tmp_path / "long.csv")
    assert list(long.columns) == [*RUN_KEYS, "epsilon", "seed", "split", "metric", "value", "code_digest"]
    assert len(long) == 2 * len(wide) and set(long["metric"]) == {"ndcg@10", "hit@10"}
    back = long.pivot_table(index=[*RUN_KEYS, "seed", "split"], columns="metric", values="value")
    merged = wide.merge(back.reset_index(), on=[*RUN_KEYS, "seed", "split"], suffixes=("", "_long"))
    assert (merged["ndcg@10"] == merged["ndcg@10_long"]).all()
    assert long.loc[long["method"] == "base", "epsilon"].isna().all()
    with pytest.raises(CatrecError, match="metrics only"):
        collect("attacks", inputs, tmp_path / "x.csv", long=True)


def test_collect_metrics_names_missing_split(tmp_path: Path) -> None:
    record = metrics_record("video", "base", 0, 0.2)
    del record["test"]["hit@10"]
    path = write_json(tmp_path / "bad.json", record)
    with pytest.raises(CatrecError, match=r"bad\.json.*'test'"):
        collect("metrics", [path], tmp_path / "out.csv")


def curve_rows(epochs: range, phase: str) -> list[dict]:
    return [
        {"epoch": e, "phase": phase, "split": s, "ndcg@10": 0.1, "hit@10": 0.2, "loss": 0.5, "seconds": e}
        for e in epochs
        for s in ("valid", "test")
    ]


def test_collect_curves_takes_identity_from_path(tmp_path: Path) -> None:
    runs = tmp_path / "curves" / "ml-1m" / "gru4rec"
    finetune = write_frame(runs / "seed3" / "adv_cas" / "eps0.1.csv", curve_rows(range(11, 13), "finetune"))
    continued = write_frame(runs / "seed3" / "continued.csv", curve_rows(range(11, 12), "finetune"))
    pretrain = write_frame(runs / "seed3" / "pretrain.csv", curve_rows(range(1, 3), "pretrain"))
    other_seed = write_frame(runs / "seed1" / "pretrain.csv", curve_rows(range(1, 2), "pretrain"))
    output = tmp_path / "curves.csv"
    collect("curves", [finetune, continued, pretrain, other_seed], output)
    frame = pd.read_csv(output)
    assert list(frame.columns) == CURVE_SUMMARY_COLUMNS
    assert list(frame.columns) == ["dataset", "model", "method", "epsilon", "seed", *CURVE_COLUMNS]
    assert set(frame["dataset"]) == {"ml-1m"} and set(frame["model"]) == {"gru4rec"}
    assert list(zip(frame["method"], frame["seed"], frame["epoch"], strict=True)) == [
        ("pretrain", 1, 1),
        ("pretrain", 1, 1),
        ("pretrain", 3, 1),
        ("pretrain", 3, 1),
        ("pretrain", 3, 2),
        ("pretrain", 3, 2),
        ("continued", 3, 11),
        ("continued", 3, 11),
        ("adv_cas", 3, 11),
        ("adv_cas", 3, 11),
        ("adv_cas", 3, 12),
        ("adv_cas", 3, 12),
    ]
    assert frame.loc[frame["method"] == "adv_cas", "epsilon"].eq(0.1).all()
    assert frame.loc[frame["method"] != "adv_cas", "epsilon"].isna().all()


def test_collect_curves_names_missing_column(tmp_path: Path) -> None:
    rows = [
        {key: value for key, value in row.items() if key != "loss"}
        for row in curve_rows(range(1, 2), "pretrain")
    ]
    path = write_frame(tmp_path / "toy" / "sasrec" / "seed0" / "pretrain.csv", rows)
    with pytest.raises(CatrecError, match=r"pretrain\.csv.*'loss'"):
        collect("curves", [path], tmp_path / "out.csv")


def test_collect_refuses_a_path_without_the_run_identity(tmp_path: Path) -> None:
    # The old layout (no seed level) does not say which seed the rows belong to.
    path = write_frame(tmp_path / "toy" / "sasrec" / "pretrain.csv", curve_rows(range(1, 2), "pretrain"))
    with pytest.raises(CatrecError, match=r"pretrain\.csv: not a run path"):
        collect("curves", [path], tmp_path / "out.csv")


def attack_rows(method: str, positions: list[str]) -> list[dict]:
    row = dict.fromkeys(ATTACK_COLUMNS, 0.5)
    return [
        {
            **row,
            "dataset": "video",
            "model": "sasrec",
            "method": method,
            "attack": "gradient",
            "position": position,
            "k": 1,
        }
        for position in positions
    ]


def test_collect_attacks_concatenates_sorted(tmp_path: Path) -> None:
    runs = tmp_path / "attacks" / "video" / "sasrec"
    inputs = [
        write_frame(runs / "seed1" / "adv_cas" / "eps10.csv", attack_rows("adv_cas", ["last", "first"])),
        write_frame(runs / "seed0" / "adv_cas" / "eps10.csv", attack_rows("adv_cas", ["middle"])),
        write_frame(runs / "seed0" / "base.csv", attack_rows("base", ["middle"])),
    ]
    output = tmp_path / "attacks.csv"
    collect("attacks", inputs, output)
    frame = pd.read_csv(output)
    assert list(frame.columns) == ATTACK_SUMMARY_COLUMNS
    assert list(zip(frame["method"], frame["seed"], frame["position"], strict=True)) == [
        ("base", 0, "middle"),
        ("adv_cas", 0, "middle"),
        ("adv_cas", 1, "first"),
        ("adv_cas", 1, "last"),
    ]
    assert math.isnan(frame.loc[0, "epsilon"]) and (frame.loc[1:, "epsilon"] == 10.0).all()


def test_collect_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(CatrecError, match="unknown kind 'figures'"):
        collect("figures", [tmp_path / "x.csv"], tmp_path / "out.csv")


# --- Table 2 ------------------------------------------------------------------------------------------------


def metric_rows(
    dataset: str, model: str, method: str, ndcg: float, hit: float, **extra: object
) -> list[dict]:
    base = {"dataset": dataset, "model": model, "method": method, "epsilon": None, "seed": 0}
    base.update(extra)
    return [
        {**base, "split": "test", "ndcg@10": ndcg, "hit@10": hit},
        # Validation rows must not leak into Table 2.
        {**base, "split": "valid", "ndcg@10": 9.0, "hit@10": 9.0},
    ]


@pytest.fixture()
def table2_dir(tmp_path: Path) -> Path:
    rows = [
        *metric_rows("beauty", "sasrec", "base", 0.0200, 0.0500),
        *metric_rows("beauty", "sasrec", "adv_cas", 0.0250, 0.0550, epsilon=10.0),
        *metric_rows("beauty", "sasrec", "adv_linear", 0.0300, 0.0450),
        # Two seeds of continued are averaged: (0.0100 + 0.0300) / 2 = 0.0200.
        *metric_rows("beauty", "sasrec", "continued", 0.0100, 0.0400),
        *metric_rows("beauty", "sasrec", "continued", 0.0300, 0.0400, seed=1),
        # An epsilon-sweep point beside the plain adv_linear run: excluded.
        *metric_rows("beauty", "sasrec", "adv_linear", 0.9, 0.9, epsilon=0.1),
        *metric_rows("toy", "sasrec", "base", 0.1000, 0.2000),
    ]
    metrics = write_frame(tmp_path / "metrics.csv", rows)
    out = tmp_path / "tables"
    write_table2(metrics, PAPER_DIR / "table2.csv", out)
    return out


def test_table2_csv_vs_base_and_seed_mean(table2_dir: Path) -> None:
    table = pd.read_csv(table2_dir / "table2.csv")
    assert list(zip(table["dataset"], table["method"], strict=True)) == [
        ("beauty", "base"),
        ("beauty", "continued"),
        ("beauty", "adv_linear"),
        ("beauty", "adv_cas"),
        ("toy", "base"),
    ]
    row = table.set_index(["dataset", "method"])
    assert row.loc[("beauty", "adv_cas"), "ndcg@10_vs_base_pct"] == pytest.approx(25.0)
    assert row.loc[("beauty", "adv_linear"), "hit@10_vs_base_pct"] == pytest.approx(-10.0)
    assert row.loc[("beauty", "continued"), "ndcg@10"] == pytest.approx(0.02)
    assert row.loc[("beauty", "continued"), "seeds"] == 2
    assert row.loc[("beauty", "base"), "ndcg@10_vs_base_pct"] == 0
    # Sample standard deviation over seeds; undefined (blank) for a single seed.
    assert row.loc[("beauty", "continued"), "ndcg@10_std"] == pytest.approx(0.02 / math.sqrt(2))
    assert row.loc[("beauty", "continued"), "hit@10_std"] == pytest.approx(0.0)
    assert row.loc[[("beauty", "base"), ("beauty", "adv_cas"), ("toy", "base")], "ndcg@10_std"].isna().all()
    assert list(table.columns) == [
        "dataset",
        "model",
        "method",
        "ndcg@10",
        "ndcg@10_std",
        "ndcg@10_vs_base_pct",
        "hit@10",
        "hit@10_std",
        "hit@10_vs_base_pct",
        "seeds",
    ]


def test_table2_cells_show_the_spread_of_several_seeds(table2_dir: Path) -> None:
    markdown = (table2_dir / "table2.md").read_text()
    rows = {line.split(" | ")[1]: line for line in markdown.splitlines() if line.startswith("| ")}
    # continued has two seeds: mean ± sample std; the single-seed runs show the mean alone.
    assert "| 0.0200 ± 0.0141 | 0.00% | 0.0400 ± 0.0000 | -20.00% |" in rows["continued"]
    for method in ("base", "adv_linear", "adv_cas"):
        assert "±" not in rows[method]
    latex = (table2_dir / "table2.tex").read_text()
    assert "continued & 0.0200 $\\pm$ 0.0141 & 0.00\\% & 0.0400 $\\pm$ 0.0000" in latex


def test_table2_with_one_seed_shows_no_spread(tmp_path: Path) -> None:
    rows = [
        *metric_rows("beauty", "sasrec", "base", 0.0200, 0.0500),
        *metric_rows("beauty", "sasrec", "continued", 0.0100, 0.0400),
    ]
    write_table2(write_frame(tmp_path / "metrics.csv", rows), PAPER_DIR / "table2.csv", tmp_path / "out")
    markdown = (tmp_path / "out" / "table2.md").read_text()
    assert "| 0.0100 | -50.00% | 0.0400 | -20.00% |" in markdown
    assert "±" not in markdown.replace("mean ± std", "")


def test_table2_markdown_latex_and_html_bold_the_best(table2_dir: Path) -> None:
    markdown = (table2_dir / "table2.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| Model"))
    assert "Beauty NDCG@10 | Beauty vs Base | Beauty HT@10" in header and "Toy NDCG@10" in header
    rows = {
        line.split(" | ")[1]: line
        for line in markdown.splitlines()
        if line.startswith("| SASRec") or "| adv" in line
    }
    # Best NDCG@10 on Beauty is adv_linear, best HT@10 is adv_cas; each with its vs Base cell.
    assert "| **0.0300** | **50.00%** | 0.0450 | -10.00% |" in rows["adv_linear"]
    assert "| 0.0250 | 25.00% | **0.0550** | **10.00%** |" in rows["adv_cas"]
    # adv_cas has no toy run: dashes.
    assert rows["adv_cas"].endswith("| — | — | — | — |")
    latex = (table2_dir / "table2.tex").read_text()
    assert "\\multicolumn{4}{c}{Beauty}" in latex
    assert "adv\\_linear & \\textbf{0.0300} & \\textbf{50.00\\%} & 0.0450 & -10.00\\%" in latex
    page = (table2_dir / "table2.html").read_text()
    assert '<td class="r"><b>0.0300</b></td><td class="r"><b>50.00%</b></td>' in page


def test_table2_vs_paper(table2_dir: Path) -> None:
    comparison = pd.read_csv(table2_dir / "table2_vs_paper.csv")
    cell = comparison.set_index(["dataset", "model", "method", "metric"])
    adv_cas = cell.loc[("beauty", "sasrec", "adv_cas", "ndcg@10")]
    assert adv_cas["paper"] == 0.0320
    assert adv_cas["ours"] == pytest.approx(0.0250)
    assert adv_cas["diff"] == pytest.approx(-0.0070)
    assert adv_cas["diff_pct"] == pytest.approx(-21.875)
    assert adv_cas["paper_vs_base_pct"] == pytest.approx(100 * (0.0320 - 0.0264) / 0.0264)
    assert adv_cas["ours_vs_base_pct"] == pytest.approx(25.0)
    # Paper-only rows (the paper's 40 runs x 2 metrics) and ours-only rows all appear, with blanks.
    assert len(comparison) == 80 + 2 * 2
    assert pd.isna(cell.loc[("ml-1m", "gru4rec", "adv_seq", "hit@10"), "ours"])
    assert pd.isna(cell.loc[("toy", "sasrec", "base", "ndcg@10"), "paper"])
    assert pd.isna(cell.loc[("beauty", "sasrec", "continued", "hit@10"), "diff"])
    markdown = (table2_dir / "table2_vs_paper.md").read_text()
    assert "| Beauty | SASRec | adv_cas | NDCG@10 | 0.0320 | 0.0250 | -0.0070 | -21.9% |" in markdown
    assert not (table2_dir / "table2_vs_paper.tex").exists()


def test_table2_refuses_mixed_sweep(tmp_path: Path) -> None:
    rows = [
        *metric_rows("video", "sasrec", "adv_cas", 0.1, 0.2, epsilon=10.0),
        *metric_rows("video", "sasrec", "adv_cas", 0.1, 0.2, epsilon=20.0),
    ]
    metrics = write_frame(tmp_path / "metrics.csv", rows)
    with pytest.raises(CatrecError, match=r"metrics\.csv.*'epsilon'.*video/sasrec/adv_cas"):
        write_table2(metrics, PAPER_DIR / "table2.csv", tmp_path / "out")


def test_table2_names_missing_column(tmp_path: Path) -> None:
    metrics = write_frame(tmp_path / "metrics.csv", [{"dataset": "toy", "model": "sasrec", "method": "base"}])
    with pytest.raises(CatrecError, match=r"metrics\.csv.*'seed'"):
        write_table2(metrics, PAPER_DIR / "table2.csv", tmp_path / "out")
