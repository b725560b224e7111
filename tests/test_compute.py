"""Compute costs: benchmark paths carry the job identity; Snakemake benchmark TSVs become compute.csv."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from catrec import paths
from catrec.cli import main
from catrec.errors import CatrecError
from catrec.report.compute import compute_frame, read_benchmark
from catrec.vocabulary import COMPUTE_COLUMNS

# As Snakemake 9 writes it: a header and one row per repetition; NA where no memory sample was taken.
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
ROW = "{s}\t0:02:03\t{rss}\t2048.10\t500.00\t510.00\t1.20\t0.30\t95.00\t120.00\n"


def write_benchmark(root: Path, relative: str, *rows: tuple[str, str]) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(ROW.format(s=s, rss=rss) for s, rss in rows))
    return path


@pytest.mark.parametrize(
    ("stage", "identity", "expected"),
    [
        (
            "pretrain",
            {"dataset": "toy", "model": "sasrec", "seed": 42},
            "pretrain/toy/sasrec/seed42/pretrain",
        ),
        (
            "finetune",
            {"dataset": "toy", "model": "gru4rec", "seed": 1, "method": "base"},
            "finetune/toy/gru4rec/seed1/base",
        ),
        (
            "attack",
            {"dataset": "ml-1m", "model": "sasrec", "seed": 3, "method": "adv_cas", "epsilon": 10.0},
            "attack/ml-1m/sasrec/seed3/adv_cas/eps10",
        ),
        (
            "user_metrics",
            {"dataset": "toy", "model": "sasrec", "seed": 42, "method": "adv_seq", "epsilon": 0.1},
            "user_metrics/toy/sasrec/seed42/adv_seq/eps0.1",
        ),
        ("cascade", {"dataset": "beauty", "terms": "temporal"}, "cascade/beauty/temporal"),
    ],
)
def test_benchmark_paths_round_trip(stage: str, identity: dict, expected: str) -> None:
    path = paths.benchmark_file(stage, **identity)
    assert path == f"benchmarks/{expected}.tsv"
    parsed = paths.parse_benchmark(Path("/somewhere") / path)
    assert parsed["stage"] == stage
    for key, value in identity.items():
        assert parsed[key] == value
    if "epsilon" not in identity:
        assert math.isnan(parsed["epsilon"])


def test_benchmark_templates_have_the_wildcards_of_the_logs() -> None:
    assert paths.benchmark_template("finetune", "epsilon") == (
        "benchmarks/finetune/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.tsv"
    )
    assert paths.benchmark_template("attack", "clean") == (
        "benchmarks/attack/{dataset}/{model}/seed{seed}/{method}.tsv"
    )
    assert paths.benchmark_template("cascade") == "benchmarks/cascade/{dataset}/{terms}.tsv"
    assert paths.benchmark_template("pretrain") == (
        "benchmarks/pretrain/{dataset}/{model}/seed{seed}/pretrain.tsv"
    )
    with pytest.raises(ValueError, match="unknown benchmarked stage"):
        paths.benchmark_template("plot")


@pytest.mark.parametrize(
    "path",
    [
        "results/metrics/toy/sasrec/seed42/base.json",  # a run file, not a benchmark
        "benchmarks/plot/toy/sasrec/seed42/base.tsv",  # not a benchmarked stage
        "benchmarks/finetune/toy/sasrec/base.tsv",  # no seed level
        "benchmarks/finetune/toy/sasrec/seed42/adv_cas/eps10.json",
    ],
)
def test_parse_benchmark_refuses_other_paths(path: str) -> None:
    with pytest.raises(ValueError, match="not a benchmark path"):
        paths.parse_benchmark(path)


def test_read_benchmark_of_a_hand_written_tsv(tmp_path: Path) -> None:
    path = write_benchmark(
        tmp_path, "benchmarks/finetune/toy/sasrec/seed42/adv_cas/eps10.tsv", ("123.45", "812.50")
    )
    assert read_benchmark(path) == {
        "stage": "finetune",
        "dataset": "toy",
        "model": "sasrec",
        "method": "adv_cas",
        "epsilon": 10.0,
        "seed": 42,
        "seconds": 123.45,
        "max_rss_mb": 812.5,
    }
    # repeat(): the mean time and the largest peak; NA (no memory sample) is skipped, or empty if all are NA.
    repeated = write_benchmark(
        tmp_path,
        "benchmarks/pretrain/toy/gru4rec/seed1/pretrain.tsv",
        ("10", "NA"),
        ("20", "300"),
        ("30", "-"),
    )
    row = read_benchmark(repeated)
    assert (row["stage"], row["method"], row["seconds"], row["max_rss_mb"]) == ("pretrain", None, 20.0, 300.0)
    short = write_benchmark(tmp_path, "benchmarks/cascade/toy/both.tsv", ("0.31", "NA"))
    row = read_benchmark(short)
    assert (row["stage"], row["dataset"], row["model"], row["method"], row["seed"]) == (
        "cascade",
        "toy",
        None,
        None,
        None,
    )
    assert row["seconds"] == 0.31 and math.isnan(row["max_rss_mb"])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "empty benchmark file"),
        (HEADER, "no benchmark rows"),
        ("h:m:s\tmax_rss\n0:00:01\t5\n", ":1: missing column(s) 's'"),
        (HEADER + ROW.format(s="fast", rss="1"), ":2: column 's' is not a number"),
        (HEADER + ROW.format(s="-3", rss="1"), ":2: column 's' must be finite and >= 0"),
        (HEADER + "1.0\t2.0\n", ":2: expected 10 fields, got 2"),
    ],
)
def test_malformed_benchmark_names_file_and_line(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "benchmarks" / "attack" / "toy" / "sasrec" / "seed42" / "base.tsv"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(CatrecError, match="base.tsv") as caught:
        read_benchmark(path)
    assert fragment in str(caught.value)


def test_compute_frame_orders_stages_then_runs_and_allows_missing(tmp_path: Path) -> None:
    files = [
        write_benchmark(tmp_path, "benchmarks/attack/toy/sasrec/seed42/base.tsv", ("4", "100")),
        write_benchmark(tmp_path, "benchmarks/finetune/toy/sasrec/seed42/adv_cas/eps10.tsv", ("9", "200")),
        write_benchmark(tmp_path, "benchmarks/finetune/toy/sasrec/seed42/base.tsv", ("1", "90")),
        write_benchmark(tmp_path, "benchmarks/cascade/toy/both.tsv", ("0.5", "80")),
        write_benchmark(tmp_path, "benchmarks/pretrain/toy/sasrec/seed42/pretrain.tsv", ("60", "150")),
    ]
    missing = tmp_path / "benchmarks/profile/toy/sasrec/seed42/adv_cas/eps10.tsv"
    with pytest.raises(CatrecError, match="file not found"):
        compute_frame([*files, missing])
    frame = compute_frame([*files, missing], allow_missing=True)
    assert list(frame.columns) == COMPUTE_COLUMNS
    assert frame["stage"].tolist() == ["pretrain", "cascade", "finetune", "finetune", "attack", "profile"]
    assert frame["method"].tolist() == ["", "", "base", "adv_cas", "base", "adv_cas"]
    assert frame["epsilon"].tolist()[3] == 10.0 and frame["epsilon"].isna().tolist()[:3] == [True] * 3
    assert frame["seconds"].tolist()[:5] == [60.0, 0.5, 1.0, 9.0, 4.0]
    assert math.isnan(frame["seconds"].iloc[5]) and math.isnan(frame["max_rss_mb"].iloc[5])


def test_cli_writes_compute_csv_and_md(tmp_path: Path) -> None:
    files = [
        write_benchmark(tmp_path, "benchmarks/pretrain/toy/sasrec/seed42/pretrain.tsv", ("60", "150")),
        write_benchmark(tmp_path, "benchmarks/cascade/toy/both.tsv", ("0.5", "NA")),
    ]
    prefix = tmp_path / "tables" / "compute"
    assert main(["compute", *map(str, files), "--output-prefix", str(prefix)]) == 0
    written = pd.read_csv(f"{prefix}.csv")
    assert list(written.columns) == COMPUTE_COLUMNS
    assert written["stage"].tolist() == ["pretrain", "cascade"]
    assert written["seed"].iloc[0] == 42 and pd.isna(written["seed"].iloc[1])
    assert written["max_rss_mb"].iloc[0] == 150.0 and pd.isna(written["max_rss_mb"].iloc[1])
    markdown = Path(f"{prefix}.md").read_text()
    assert "| pretrain | Toy | SASRec |  |  | 42 | 60.0 | 150 |" in markdown
    assert "**all 2 jobs**" in markdown and "**60.5**" in markdown
    # A missing file is an error line (exit 2) unless --allow-missing.
    absent = tmp_path / "benchmarks/attack/toy/sasrec/seed42/base.tsv"
    assert main(["compute", str(absent), "--output-prefix", str(prefix)]) == 2
    assert main(["compute", str(absent), "--allow-missing", "--output-prefix", str(prefix)]) == 0
    assert "run before benchmarks were recorded" in Path(f"{prefix}.md").read_text()
