"""Per-user test metrics (``catrec user-metrics``) and the significance of adv_cas against the other methods:
scipy's Wilcoxon and paired t-test values on known samples, pairing, n, and the CLIs on the toy data."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import save_untrained_model
from scipy import stats

from catrec import paths
from catrec.cli import main
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.models import load_model
from catrec.report.significance import (
    pair_significance_frame,
    paired_t_test,
    parse_run_name,
    significance_frame,
    wilcoxon_test,
)
from catrec.trainer import evaluate
from catrec.vocabulary import SIGNIFICANCE_COLUMNS, SIGNIFICANCE_PAIR_COLUMNS, USER_METRICS_COLUMNS

MAX_LEN = 20


def test_wilcoxon_and_t_test_are_scipys() -> None:
    a = [0.5, 0.2, 0.0, 1.0, 0.3, 0.0, 0.7, 0.4]
    b = [0.4, 0.1, 0.0, 0.2, 0.35, 0.0, 0.1, 0.45]
    expected = stats.wilcoxon(a, b, zero_method="wilcox")
    assert wilcoxon_test(a, b) == pytest.approx((expected.statistic, expected.pvalue))
    t = stats.ttest_rel([0.3, 0.32, 0.35], [0.28, 0.31, 0.30])
    assert paired_t_test([0.3, 0.32, 0.35], [0.28, 0.31, 0.30]) == pytest.approx((t.statistic, t.pvalue))
    # Nothing to test: all pairs tie, fewer than two seeds, or constant differences.
    assert all(math.isnan(value) for value in wilcoxon_test([1.0, 0.0], [1.0, 0.0]))
    assert all(math.isnan(value) for value in paired_t_test([0.3], [0.2]))
    assert all(math.isnan(value) for value in paired_t_test([0.5, 0.75], [0.25, 0.5]))


def _users(method: str, epsilon: float, seed: int, values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": "toy",
            "model": "sasrec",
            "method": method,
            "epsilon": epsilon,
            "seed": seed,
            "user": range(1, len(values) + 1),
            "ndcg@10": values,
            "hit@10": [float(value > 0) for value in values],
        }
    )


def test_significance_pairs_users_and_seeds() -> None:
    rng = np.random.default_rng(0)
    values = {
        (method, seed): rng.uniform(0, 1, 30).round(2).tolist()
        for method in ("adv_cas", "base", "adv_global")
        for seed in (1, 2, 3)
    }
    frames = [_users("adv_cas", 10.0, seed, values["adv_cas", seed]) for seed in (1, 2, 3)]
    frames += [_users("base", math.nan, seed, values["base", seed]) for seed in (1, 2, 3)]
    frames += [_users("adv_global", 10.0, seed, values["adv_global", seed]) for seed in (1, 2)]
    # adv_global at another epsilon is not compared with adv_cas at 10; shuffled rows still pair by user.
    frames.append(_users("adv_global", 1.0, 1, [0.0] * 30))
    users = pd.concat(frames, ignore_index=True).sample(frac=1, random_state=0)
    frame = significance_frame(users)
    assert list(frame.columns) == SIGNIFICANCE_COLUMNS
    assert frame["method_b"].unique().tolist() == ["base", "adv_global"]
    assert set(frame["method_a"]) == {"adv_cas"} and set(frame["epsilon"]) == {10.0}

    ndcg = frame[frame["metric"] == "ndcg@10"]
    wilcoxon = ndcg[(ndcg["test"] == "wilcoxon") & (ndcg["method_b"] == "base")].set_index("seed")
    assert wilcoxon.index.tolist() == [1, 2, 3]
    for seed in (1, 2, 3):
        expected = stats.wilcoxon(values["adv_cas", seed], values["base", seed], zero_method="wilcox")
        assert wilcoxon.loc[seed, "statistic"] == pytest.approx(expected.statistic)
        assert wilcoxon.loc[seed, "p_value"] == pytest.approx(expected.pvalue)
        assert wilcoxon.loc[seed, "n"] == 30
        assert wilcoxon.loc[seed, "mean_a"] == pytest.approx(np.mean(values["adv_cas", seed]))

    t_rows = ndcg[ndcg["test"] == "ttest_rel"].set_index("method_b")
    assert t_rows["seed"].isna().all()
    means = {key: np.mean(value) for key, value in values.items()}
    expected = stats.ttest_rel(
        [means["adv_cas", s] for s in (1, 2, 3)], [means["base", s] for s in (1, 2, 3)]
    )
    assert t_rows.loc["base", "statistic"] == pytest.approx(expected.statistic)
    assert t_rows.loc["base", "p_value"] == pytest.approx(expected.pvalue)
    assert t_rows.loc["base", "n"] == 3
    # adv_global ran seeds 1 and 2 only: paired over those two.
    expected = stats.ttest_rel(
        [means["adv_cas", s] for s in (1, 2)], [means["adv_global", s] for s in (1, 2)]
    )
    assert t_rows.loc["adv_global", "n"] == 2
    assert t_rows.loc["adv_global", "p_value"] == pytest.approx(expected.pvalue)
    assert len(frame[(frame["metric"] == "hit@10") & (frame["test"] == "wilcoxon")]) == 5


def test_a_reference_without_epsilon_meets_every_run_at_its_own_epsilon() -> None:
    rng = np.random.default_rng(1)
    runs = [("base", math.nan), ("continued", math.nan)]
    runs += [("adv_cas", 10.0), ("adv_cas", 5.0), ("adv_seq", 10.0)]
    values = {run: rng.uniform(0, 1, 20).round(2).tolist() for run in runs}
    users = pd.concat([_users(method, epsilon, 1, values[method, epsilon]) for method, epsilon in runs])
    frame = significance_frame(users, reference="base")
    wilcoxon = frame[(frame["test"] == "wilcoxon") & (frame["metric"] == "ndcg@10")]
    assert list(zip(wilcoxon["method_b"], wilcoxon["epsilon"], strict=True)) == [
        ("continued", pytest.approx(math.nan, nan_ok=True)),
        ("adv_seq", 10.0),
        ("adv_cas", 5.0),
        ("adv_cas", 10.0),
    ]
    at_five = wilcoxon[wilcoxon["epsilon"] == 5.0].iloc[0]
    expected = stats.wilcoxon(values["base", math.nan], values["adv_cas", 5.0], zero_method="wilcox")
    assert at_five["p_value"] == pytest.approx(expected.pvalue)
    assert at_five["mean_b"] == pytest.approx(np.mean(values["adv_cas", 5.0]))


def test_named_pairs_meet_across_epsilons() -> None:
    rng = np.random.default_rng(2)
    runs = [("base", math.nan), ("adv_cas", 5.0), ("adv_cas", 10.0), ("adv_seq", 10.0)]
    values = {(run, seed): rng.uniform(0, 1, 25).round(2).tolist() for run in runs for seed in (1, 2, 3)}
    users = pd.concat([_users(*run, seed, value) for (run, seed), value in values.items()])
    pairs = [(("adv_cas", 5.0), ("adv_seq", 10.0)), (("adv_cas", 5.0), ("base", math.nan))]
    frame = pair_significance_frame(users, pairs)
    assert list(frame.columns) == SIGNIFICANCE_PAIR_COLUMNS
    ndcg = frame[frame["metric"] == "ndcg@10"]
    assert ndcg["method_b"].tolist() == ["adv_seq"] * 4 + ["base"] * 4
    assert (ndcg["epsilon_a"] == 5.0).all() and ndcg["epsilon_b"].iloc[0] == 10.0
    assert ndcg["epsilon_b"].iloc[4:].isna().all()
    first = ndcg.iloc[0]
    expected = stats.wilcoxon(values[("adv_cas", 5.0), 1], values[("adv_seq", 10.0), 1], zero_method="wilcox")
    assert first["seed"] == 1 and first["p_value"] == pytest.approx(expected.pvalue)
    means = {key: np.mean(value) for key, value in values.items()}
    expected = stats.ttest_rel(
        [means[("adv_cas", 5.0), s] for s in (1, 2, 3)], [means[("base", math.nan), s] for s in (1, 2, 3)]
    )
    t_row = ndcg[(ndcg["test"] == "ttest_rel") & (ndcg["method_b"] == "base")].iloc[0]
    assert t_row["n"] == 3 and t_row["p_value"] == pytest.approx(expected.pvalue)

    with pytest.raises(CatrecError, match="both adv_cas@5 and adv_seq@5"):
        pair_significance_frame(users, [(("adv_cas", 5.0), ("adv_seq", 5.0))])


@pytest.mark.parametrize(
    ("text", "expected"), [("adv_cas@5", ("adv_cas", 5.0)), ("adv_seq@0.5", ("adv_seq", 0.5))]
)
def test_run_names(text: str, expected: tuple[str, float]) -> None:
    assert parse_run_name(text) == expected
    method, epsilon = parse_run_name("base")
    assert method == "base" and math.isnan(epsilon)


@pytest.mark.parametrize("text", ["adv_cas@", "@5", "adv_cas@five"])
def test_bad_run_names_are_refused(text: str) -> None:
    with pytest.raises(CatrecError, match=f"run '{text}'"):
        parse_run_name(text)


def _toy_model(directory: Path, data_dir: Path, seed: int) -> Path:
    num_items = json.loads((data_dir / "stats.json").read_text())["items"]
    return save_untrained_model(directory / f"model{seed}.pt", "sasrec", num_items, MAX_LEN, seed)


def test_user_metrics_and_significance_cli(tmp_path: Path, toy_data_dir: Path) -> None:
    runs = {"adv_cas": 10.0, "base": None, "adv_global": 10.0}
    outputs = []
    for index, (method, epsilon) in enumerate(runs.items()):
        checkpoint = _toy_model(tmp_path, toy_data_dir, index)
        output = tmp_path / paths.run_file(
            "users", dataset="toy", model="sasrec", seed=42, method=method, epsilon=epsilon
        )
        argv = ["user-metrics", "--data", str(toy_data_dir), "--max-len", str(MAX_LEN), "--model", "sasrec"]
        argv += ["--checkpoint", str(checkpoint), "--output", str(output), "--device", "cpu"]
        assert main(argv) == 0
        users = pd.read_csv(output)
        assert list(users.columns) == USER_METRICS_COLUMNS
        data = SequenceData.from_dir(toy_data_dir, MAX_LEN)
        assert users["user"].tolist() == list(range(1, data.num_users + 1))
        # The per-user values average to what the run's metrics report.
        scores = evaluate(load_model(checkpoint, torch.device("cpu")), data, "test")
        assert users["ndcg@10"].mean() == pytest.approx(scores["ndcg@10"], abs=1e-6)
        assert users["hit@10"].mean() == pytest.approx(scores["hit@10"], abs=1e-6)
        outputs.append(output)

    prefix = tmp_path / "tables" / "significance"
    assert main(["significance", "--users", *map(str, outputs), "--output-prefix", str(prefix)]) == 0
    table = pd.read_csv(prefix.with_suffix(".csv"))
    assert list(table.columns) == SIGNIFICANCE_COLUMNS
    assert sorted(set(table["method_b"])) == ["adv_global", "base"]
    # One seed: a Wilcoxon row per comparison and metric, and a t-test row with n = 1 and no p-value.
    wilcoxon = table[table["test"] == "wilcoxon"]
    assert len(wilcoxon) == 4 and (wilcoxon["seed"] == 42).all() and (wilcoxon["n"] == 300).all()
    assert wilcoxon["p_value"].between(0, 1).all()
    t_rows = table[table["test"] == "ttest_rel"]
    assert len(t_rows) == 4 and t_rows["seed"].isna().all() and (t_rows["n"] == 1).all()
    assert t_rows["p_value"].isna().all()
    markdown = prefix.with_suffix(".md").read_text()
    assert "Wilcoxon" in markdown and "adv_global" in markdown

    # The per-user files gzip-compressed (as committed under docs/evidence) give the same table.
    compressed = []
    for output in outputs:
        target = tmp_path / "gz" / output.relative_to(tmp_path).with_name(output.name + ".gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.compress(output.read_bytes()))
        compressed.append(target)
    assert (
        main(["significance", "--users", *map(str, compressed), "--output-prefix", str(tmp_path / "gz/s")])
        == 0
    )
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "gz" / "s.csv"), table)
    truncated = compressed[0].with_name("eps5.csv.gz")
    truncated.write_bytes(compressed[0].read_bytes()[:40])
    assert main(["significance", "--users", str(truncated), "--output-prefix", str(tmp_path / "bad")]) == 2

    # Named pairs, each at its own epsilon; a pair and --method-a together are refused.
    pair = ["--pair", "adv_global@10", "base"]
    assert main(["significance", "--users", *map(str, outputs), "--output-prefix", str(prefix), *pair]) == 0
    pairs = pd.read_csv(prefix.with_suffix(".csv"))
    assert list(pairs.columns) == SIGNIFICANCE_PAIR_COLUMNS
    assert set(pairs["method_a"]) == {"adv_global"} and set(pairs["method_b"]) == {"base"}
    assert "adv_global@10" in prefix.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        main(["significance", "--users", str(outputs[0]), "--output-prefix", "x", "--method-a", "a", *pair])

    # Without adv_cas there is nothing to test.
    assert main(["significance", "--users", str(outputs[1]), "--output-prefix", str(tmp_path / "none")]) == 2
