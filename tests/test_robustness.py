"""The robustness tests of section 5.6 (``catrec robustness``) on hand-made per-user metrics whose answers are
known, their pairing by user within a seed, and the command on the per-user files of ``catrec attack``."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import save_untrained_model
from scipy import stats

from catrec import paths
from catrec.cli import main
from catrec.errors import CatrecError
from catrec.report.robustness import attack_settings, robustness_frame
from catrec.vocabulary import ATTACK_USER_COLUMN, ATTACK_USERS_COLUMNS, ROBUSTNESS_COLUMNS

USERS = 30


def run_users(
    method: str,
    epsilon: float,
    clean: np.ndarray,
    drops: dict[tuple[str, int], np.ndarray],
    *,
    seed: int = 1,
    attacks: tuple[str, ...] = ("gradient",),
) -> pd.DataFrame:
    """One run's per-user file as a frame: NDCG@10 clean and with each (position, k)'s drop; HT@10 is 1
    wherever NDCG@10 > 0 (so every HT@10 pair ties here)."""
    columns = {"user": range(1, USERS + 1), "clean_ndcg@10": clean, "clean_hit@10": (clean > 0) * 1.0}
    for attack in attacks:
        for (position, k), drop in drops.items():
            attacked = clean - drop
            name = {"attack": attack, "position": position, "k": k}
            columns[ATTACK_USER_COLUMN.format(**name, metric="ndcg@10")] = attacked
            columns[ATTACK_USER_COLUMN.format(**name, metric="hit@10")] = (attacked > 0) * 1.0
    identity = {"dataset": "toy", "model": "sasrec", "method": method, "epsilon": epsilon, "seed": seed}
    return pd.DataFrame(columns).assign(**identity)


def attacked_runs() -> dict[str, pd.DataFrame]:
    """base: the last item costs 0.3, the first and middle 0.01-0.02, the last K 0.1 K; adv_cas (ε = 10) is
    0.2 more accurate and loses 0.02 K; adv_cas at ε = 5 loses exactly what base loses; adv_global 0.05 K.
    Every drop has its own per-user noise below 0.01, so that no two users' differences tie."""
    rng = np.random.default_rng(0)

    def noise() -> np.ndarray:
        return rng.uniform(0, 0.01, USERS)

    def last_k(per_item: float) -> dict[tuple[str, int], np.ndarray]:
        return {("last_k", k): per_item * k + noise() for k in (1, 2)}

    clean = rng.uniform(0.4, 0.6, USERS)
    positions = {("first", 1): 0.01 + noise(), ("middle", 1): 0.02 + noise(), ("last", 1): 0.3 + noise()}
    base = {**positions, **last_k(0.1)}
    return {
        "base": run_users("base", math.nan, clean, base),
        "adv_cas": run_users("adv_cas", 10.0, clean + 0.2, {**positions, **last_k(0.02)}),
        "adv_cas_5": run_users("adv_cas", 5.0, clean, base),
        "adv_global": run_users("adv_global", 10.0, clean, {**positions, **last_k(0.05)}),
    }


def select(frame: pd.DataFrame, **where: object) -> pd.DataFrame:
    """The rows with each column's value (None: empty, as base's epsilon)."""
    for column, value in where.items():
        frame = frame[frame[column].isna()] if value is None else frame[frame[column] == value]
    return frame


def one(frame: pd.DataFrame, **where: object) -> pd.Series:
    rows = select(frame, **where)
    assert len(rows) == 1, where
    return rows.iloc[0]


def test_the_last_item_costs_more_than_the_first_and_the_middle() -> None:
    frame = robustness_frame(pd.concat(attacked_runs().values(), ignore_index=True))
    assert list(frame.columns) == ROBUSTNESS_COLUMNS
    position = select(frame, question="position", metric="ndcg@10")
    # Every run, each against first and middle.
    assert len(position) == 4 * 2 and set(position["against"]) == {"first", "middle"}
    assert (position["k"] == 1).all() and (position["n"] == USERS).all()
    base = one(position, method="base", against="first", epsilon=None)
    # Every user's last drop is larger: the smallest possible signed-rank statistic and p = 2 / 2^30.
    assert base["mean_a"] > base["mean_b"]
    assert base["statistic"] == 0 and base["p_value"] == pytest.approx(2 / 2**USERS)
    run = attacked_runs()["base"]
    drop_last = run["clean_ndcg@10"] - run["gradient_last_k1_ndcg@10"]
    assert base["mean_a"] == pytest.approx(drop_last.mean())
    # HT@10 never moves here: every pair ties, nothing to test.
    hit = one(frame, question="position", method="base", against="middle", metric="hit@10", epsilon=None)
    assert hit["n"] == USERS and math.isnan(hit["p_value"]) and math.isnan(hit["statistic"])


def test_adv_cas_loses_least_over_the_last_k_and_beats_clean_base() -> None:
    frame = robustness_frame(pd.concat(attacked_runs().values(), ignore_index=True))
    drop = select(frame, question="last_k_drop", metric="ndcg@10")
    # adv_cas at each epsilon against each run of another method; never adv_cas against itself.
    assert set(zip(drop["epsilon"], drop["against"], strict=True)) == {
        (eps, other) for eps in (5.0, 10.0) for other in ("base", "adv_global/eps10")
    }
    assert set(drop["method"]) == {"adv_cas"} and sorted(set(drop["k"])) == [1, 2]
    for k in (1, 2):
        against_base = one(drop, epsilon=10.0, against="base", k=k)
        assert against_base["mean_a"] == pytest.approx(0.02 * k, abs=0.01)
        assert against_base["mean_b"] == pytest.approx(0.1 * k, abs=0.01)
        assert against_base["p_value"] == pytest.approx(2 / 2**USERS)
        # ε = 5 loses exactly what base loses: every pair ties.
        assert math.isnan(one(drop, epsilon=5.0, against="base", k=k)["p_value"])

    accuracy = one(frame, question="last_k_accuracy", metric="ndcg@10", epsilon=10.0, against="base", k=2)
    runs = attacked_runs()
    assert accuracy["mean_a"] == pytest.approx(runs["adv_cas"]["gradient_last_k_k2_ndcg@10"].mean())
    assert accuracy["mean_b"] == pytest.approx(runs["base"]["gradient_last_k_k2_ndcg@10"].mean())
    expected = stats.wilcoxon(
        runs["adv_cas"]["gradient_last_k_k2_ndcg@10"], runs["base"]["gradient_last_k_k2_ndcg@10"]
    )
    assert (accuracy["statistic"], accuracy["p_value"]) == pytest.approx(
        (expected.statistic, expected.pvalue)
    )

    clean_base = select(frame, question="vs_clean_base", metric="ndcg@10")
    assert set(clean_base["against"]) == {"base"} and set(clean_base["epsilon"]) == {5.0, 10.0}
    after_two = one(clean_base, epsilon=10.0, k=2)
    # adv_cas is 0.2 more accurate and loses about 0.04: above base's clean accuracy for every user.
    assert after_two["mean_a"] > after_two["mean_b"] and after_two["p_value"] == pytest.approx(2 / 2**USERS)
    assert after_two["mean_b"] == pytest.approx(runs["base"]["clean_ndcg@10"].mean())
    below = one(clean_base, epsilon=5.0, k=1)
    assert below["mean_a"] < below["mean_b"] and below["p_value"] < 1e-6


def test_users_pair_by_id_within_one_seed() -> None:
    runs = attacked_runs()
    other_seed = {name: frame.assign(seed=2) for name, frame in runs.items() if name != "adv_global"}
    # Shuffled rows pair by user; base of seed 2 lacks its first five users.
    other_seed["base"] = other_seed["base"].iloc[5:].sample(frac=1, random_state=0)
    users = pd.concat([*runs.values(), *other_seed.values()], ignore_index=True)
    frame = robustness_frame(users)
    assert frame["seed"].tolist() == sorted(frame["seed"])
    drop = select(frame, question="last_k_drop", metric="ndcg@10", epsilon=10.0, k=1)
    assert one(drop, seed=1, against="base")["n"] == USERS
    seed_2 = select(drop, seed=2)
    assert seed_2["against"].tolist() == ["base"]  # adv_global ran seed 1 only
    assert seed_2["n"].tolist() == [USERS - 5]
    kept = runs["adv_cas"]["user"] > 5
    drops = [
        runs[name]["clean_ndcg@10"] - runs[name]["gradient_last_k_k1_ndcg@10"] for name in ("adv_cas", "base")
    ]
    expected = stats.wilcoxon(drops[0][kept], drops[1][kept])
    assert seed_2["p_value"].tolist() == pytest.approx([expected.pvalue])
    with pytest.raises(CatrecError, match="appears twice"):
        robustness_frame(pd.concat([runs["base"], runs["base"]]))


def test_every_attack_is_tested_and_a_run_without_a_setting_gives_no_row() -> None:
    rng = np.random.default_rng(1)
    clean, noise = rng.uniform(0.4, 0.6, USERS), rng.uniform(0, 0.01, (3, USERS))
    drops = {("last", 1): 0.1 + noise[0], ("first", 1): noise[1], ("last_k", 1): 0.1 + noise[0]}
    both = ("gradient", "random")
    base = run_users("base", math.nan, clean, drops, attacks=both)
    adv_cas = run_users("adv_cas", 10.0, clean, {**drops, ("last_k", 3): noise[2]}, attacks=both)
    users = pd.concat([base, adv_cas], ignore_index=True)
    assert attack_settings(users.columns) == (["gradient", "random"], [1, 3])
    frame = robustness_frame(users)
    assert set(frame["attack"]) == {"gradient", "random"}
    # No middle item was replaced; base lacks K = 3, so only vs_clean_base (adv_cas alone) tests it.
    assert set(frame.loc[frame["question"] == "position", "against"]) == {"first"}
    assert set(frame.loc[frame["k"] == 3, "question"]) == {"vs_clean_base"}


def test_robustness_cli_on_the_per_user_files_of_catrec_attack(tmp_path: Path, toy_data_dir: Path) -> None:
    num_items = json.loads((toy_data_dir / "stats.json").read_text())["items"]
    hparams = {
        "max_len": 20,
        "positions": ["first", "middle", "last"],
        "max_k": 2,
        "distance": "cosine",
        "step_size": 0.5,
        "multi": "joint",
        "random_seed": 7,
    }
    files = []
    for index, (method, epsilon) in enumerate({"base": None, "adv_cas": 10.0}.items()):
        checkpoint = save_untrained_model(tmp_path / f"{method}.pt", "sasrec", num_items, 20, index)
        run = {"dataset": "toy", "model": "sasrec", "seed": 1, "method": method, "epsilon": epsilon}
        users = tmp_path / paths.run_file("attack_users", **run)
        argv = ["attack", "--data", str(toy_data_dir), "--hparams", json.dumps(hparams), "--dataset", "toy"]
        argv += ["--model", "sasrec", "--method", method, "--checkpoint", str(checkpoint), "--device", "cpu"]
        argv += ["--output", str(tmp_path / paths.run_file("attacks", **run)), "--users", str(users)]
        assert main(argv) == 0
        assert users.name.endswith(".csv.gz") and gzip.decompress(users.read_bytes()).startswith(b"user,")
        files.append(users)

    prefix = tmp_path / "tables" / "robustness"
    assert main(["robustness", "--users-attacks", *map(str, files), "--output-prefix", str(prefix)]) == 0
    table = pd.read_csv(prefix.with_suffix(".csv"))
    assert list(table.columns) == ROBUSTNESS_COLUMNS
    assert set(table["question"]) == {"position", "last_k_drop", "last_k_accuracy", "vs_clean_base"}
    assert set(table["attack"]) == {"gradient", "random"} and set(table["seed"]) == {1}
    assert table["p_value"].dropna().between(0, 1).all() and (table["n"] == 300).all()
    assert "vs_clean_base" in prefix.with_suffix(".md").read_text()

    # A column that is not a setting is refused, naming the file.
    bad = tmp_path / "bad/toy/sasrec/seed1/base.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text(f"{','.join(ATTACK_USERS_COLUMNS)},gradient_last_ndcg@10\n1,0.5,1.0,0.25\n")
    assert main(["robustness", "--users-attacks", str(bad), "--output-prefix", str(tmp_path / "x")]) == 2
