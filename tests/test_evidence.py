"""The committed real-data evidence recomputes from its own committed files.

Every ``significance*.csv`` beside a ``users/`` folder under docs/evidence is what ``catrec significance``
writes from those per-user files, and every per-user file's means are its run's test metrics in the folder's
``metrics.csv``: a p-value in the docs can be rechecked by anyone from the clone alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from catrec.cli import main
from catrec.paths import parse_run

REPO_ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = REPO_ROOT / "docs" / "evidence"
# (folder, method_a) of every committed significance table recomputable from committed per-user files.
TABLES = [
    (path.parent, path.stem)
    for path in sorted(EVIDENCE.glob("**/significance*.csv"))
    if (path.parent / "users").is_dir()
]
REFERENCE = {"significance": "adv_cas", "significance-vs-base": "base"}


def user_files(folder: Path) -> list[Path]:
    return sorted((folder / "users").rglob("*.csv.gz"))


def test_some_evidence_is_recomputable() -> None:
    assert TABLES, "no committed significance table beside per-user files"


@pytest.mark.parametrize(("folder", "stem"), TABLES, ids=lambda value: str(value))
def test_significance_recomputes_from_committed_users(folder: Path, stem: str, tmp_path: Path) -> None:
    prefix = tmp_path / stem
    arguments = ["significance", "--users", *map(str, user_files(folder))]
    assert main([*arguments, "--output-prefix", str(prefix), "--method-a", REFERENCE[stem]]) == 0
    committed = pd.read_csv(folder / f"{stem}.csv")
    pd.testing.assert_frame_equal(pd.read_csv(f"{prefix}.csv"), committed)


@pytest.mark.parametrize("folder", sorted({folder for folder, _ in TABLES}), ids=lambda value: value.name)
def test_user_files_average_to_the_committed_test_metrics(folder: Path) -> None:
    metrics = pd.read_csv(folder / "metrics.csv")
    test = metrics[metrics["split"] == "test"]
    for path in user_files(folder):
        run = parse_run(path)
        users = pd.read_csv(path)
        rows = test[
            (test["model"] == run["model"])
            & (test["method"] == run["method"])
            & (test["seed"] == run["seed"])
            & (test["epsilon"].isna() if math.isnan(run["epsilon"]) else test["epsilon"] == run["epsilon"])
        ]
        for metric in ("ndcg@10", "hit@10"):
            (value,) = rows.loc[rows["metric"] == metric, "value"]
            assert users[metric].astype("float64").mean() == pytest.approx(value, rel=1e-12, abs=0), path
