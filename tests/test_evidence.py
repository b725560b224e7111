"""The committed real-data evidence recomputes from its own committed files.

Every ``significance*.csv`` beside a ``users/`` folder under docs/evidence is what ``catrec significance``
writes from those per-user files, and every per-user file's means are its run's test metrics in the folder's
``metrics.csv``; every ``robustness.csv`` beside an ``attack-users/`` folder is what ``catrec robustness``
writes from those files, whose means are the folder's ``attacks.csv``: a p-value in the docs can be rechecked
by anyone from the clone alone.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from catrec.cli import main
from catrec.paths import parse_run
from catrec.report.render import write_table
from catrec.report.significance import run_name
from catrec.vocabulary import ATTACK_USER_COLUMN

REPO_ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = REPO_ROOT / "docs" / "evidence"
# (folder, stem) of every committed significance table recomputable from committed per-user files.
TABLES = [
    (path.parent, path.stem)
    for path in sorted(EVIDENCE.glob("**/significance*.csv"))
    if (path.parent / "users").is_dir()
]
ROBUSTNESS = sorted(path.parent for path in EVIDENCE.glob("**/robustness.csv"))


def torch_mean(values: pd.Series) -> float:
    """The mean as catrec.attack takes it: of the float32 values, in float64, by torch's reduction."""
    return torch.from_numpy(values.to_numpy(dtype="float32")).double().mean().item()


def user_files(folder: Path) -> list[Path]:
    return sorted((folder / "users").rglob("*.csv.gz"))


def test_some_evidence_is_recomputable() -> None:
    assert TABLES, "no committed significance table beside per-user files"
    assert ROBUSTNESS, "no committed robustness table"


def _of_run(frame: pd.DataFrame, run: dict[str, object]) -> pd.DataFrame:
    epsilon = run["epsilon"]
    assert isinstance(epsilon, float)
    return frame[
        (frame["model"] == run["model"])
        & (frame["method"] == run["method"])
        & (frame["seed"] == run["seed"])
        & (frame["epsilon"].isna() if math.isnan(epsilon) else frame["epsilon"] == epsilon)
    ]


def table_options(committed: pd.DataFrame) -> list[str]:
    """The ``catrec significance`` options that wrote a committed table: its named pairs, or its method_a."""
    if "epsilon_a" in committed.columns:
        pairs = committed[["method_a", "epsilon_a", "method_b", "epsilon_b"]].drop_duplicates()
        return [
            option
            for a, epsilon_a, b, epsilon_b in pairs.itertuples(index=False)
            for option in ("--pair", run_name((a, epsilon_a)), run_name((b, epsilon_b)))
        ]
    (reference,) = committed["method_a"].unique()
    return ["--method-a", reference]


@pytest.mark.parametrize(("folder", "stem"), TABLES, ids=lambda value: str(value))
def test_significance_recomputes_from_committed_users(folder: Path, stem: str, tmp_path: Path) -> None:
    prefix = tmp_path / stem
    committed = pd.read_csv(folder / f"{stem}.csv")
    arguments = ["significance", "--users", *map(str, user_files(folder))]
    assert main([*arguments, "--output-prefix", str(prefix), *table_options(committed)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(f"{prefix}.csv"), committed)


@pytest.mark.parametrize("folder", sorted({folder for folder, _ in TABLES}), ids=lambda value: value.name)
def test_user_files_average_to_the_committed_test_metrics(folder: Path) -> None:
    metrics = pd.read_csv(folder / "metrics.csv")
    test = metrics[metrics["split"] == "test"]
    for path in user_files(folder):
        run = parse_run(path)
        users = pd.read_csv(path)
        rows = _of_run(test, run)
        for metric in ("ndcg@10", "hit@10"):
            (value,) = rows.loc[rows["metric"] == metric, "value"]
            assert users[metric].astype("float64").mean() == pytest.approx(value, rel=1e-12, abs=0), path


@pytest.mark.parametrize("folder", ROBUSTNESS, ids=lambda value: value.name)
def test_robustness_recomputes_from_committed_attack_users(folder: Path, tmp_path: Path) -> None:
    files = sorted((folder / "attack-users").rglob("*.csv.gz"))
    prefix = tmp_path / "robustness"
    assert main(["robustness", "--users-attacks", *map(str, files), "--output-prefix", str(prefix)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(f"{prefix}.csv"), pd.read_csv(folder / "robustness.csv"))
    # Each per-user column averages to its attack row of attacks.csv (the long form), exactly.
    attacks = pd.read_csv(folder / "attacks.csv")
    for path in files:
        users = pd.read_csv(path)
        rows = _of_run(attacks, parse_run(path))
        rows = rows[~((rows["position"] == "last_k") & (rows["k"] == 0))]
        assert len(rows) > 0, path
        for _, row in rows.iterrows():
            column = ATTACK_USER_COLUMN.format(
                attack=row["attack"], position=row["position"], k=row["k"], metric=row["metric"]
            )
            assert torch_mean(users[column]) == row["attacked"], (path, column)
            assert torch_mean(users[f"clean_{row['metric']}"]) == row["clean"], path


SUMMARIES = sorted(path.parent for path in EVIDENCE.glob("**/seeds.csv"))


@pytest.mark.parametrize("folder", SUMMARIES, ids=lambda value: value.name)
def test_seed_summaries_recompute_from_the_metrics(folder: Path) -> None:
    metrics = pd.read_csv(folder / "metrics.csv", dtype={"epsilon": str}, keep_default_na=False)
    summary = pd.read_csv(folder / "seeds.csv", dtype={"epsilon": str}, keep_default_na=False)
    for row in summary.itertuples(index=False):
        values = metrics.loc[
            (metrics["model"] == row.model)
            & (metrics["method"] == row.method)
            & (metrics["epsilon"] == row.epsilon)
            & (metrics["split"] == row.split)
            & (metrics["metric"] == row.metric),
            "value",
        ]
        assert row.seeds == len(values) and row.mean == pytest.approx(values.mean(), rel=1e-12)
        if len(values) > 1:
            assert float(row.std) == pytest.approx(values.std(ddof=1), rel=1e-9)
    # Each method's better epsilon has its highest mean validation NDCG@10.
    valid = summary[(summary["split"] == "valid") & (summary["metric"] == "ndcg@10")]
    better = pd.read_csv(folder / "better-epsilon.csv", dtype={"epsilon": str}, keep_default_na=False)
    for row in better.itertuples(index=False):
        of_method = valid[(valid["model"] == row.model) & (valid["method"] == row.method)]
        assert row.epsilon == of_method.loc[of_method["mean"].idxmax(), "epsilon"]


def collect_module():
    """docs/evidence/beauty-paper-schedule/collect.py, which writes the seed summaries and their table."""
    spec = importlib.util.spec_from_file_location(
        "collect", EVIDENCE / "beauty-paper-schedule" / "collect.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder", SUMMARIES, ids=lambda value: value.name)
def test_seed_table_renders_from_the_summaries(folder: Path, tmp_path: Path) -> None:
    def read(name: str) -> pd.DataFrame:
        return pd.read_csv(folder / name, dtype={"epsilon": str}).fillna({"epsilon": ""})

    summary = read("seeds.csv")
    write_table(
        tmp_path / "seeds",
        summary,
        collect_module().seeds_table(summary, read("better-epsilon.csv")),
        ("md",),
    )
    assert (folder / "seeds.md").read_text() == (tmp_path / "seeds.md").read_text()
