"""The perturbation profile (issue 10): norms by position from the end of hand-made perturbations, the
``catrec profile`` CLI on the toy data (equal budgets: total norm epsilon in the input space), collection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, save_untrained_model

from catrec import paths
from catrec.cli import main
from catrec.config import load_config, stage_hparams
from catrec.profile import position_profile
from catrec.report.collect import collect
from catrec.stages.cascade import write_cascade
from catrec.vocabulary import CASCADE_TERMS_OF, PROFILE_COLUMNS, PROFILE_SUMMARY_COLUMNS

MAX_LEN = 20


def test_position_profile_by_position_from_end() -> None:
    # Batch 1: user 0 has three items, user 1 two (left-padded); batch 2: one user with one item.
    first = torch.tensor(
        [
            [[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]],  # norms 5, 1, 2
            [[9.0, 9.0], [0.0, 3.0], [0.0, 4.0]],  # padding (ignored), 3, 4
        ]
    )
    first_real = torch.tensor([[True, True, True], [False, True, True]])
    second = torch.tensor([[[6.0, 8.0]]])  # norm 10 at the last (only) column
    rows = position_profile([first, second], [first_real, torch.tensor([[True]])])
    assert [row["position_from_end"] for row in rows] == [1, 2, 3]
    # Position 1 (the last item): 2, 4 and 10; position 2: 1 and 3; position 3: 5 alone.
    assert [row["mean_norm"] for row in rows] == pytest.approx([16 / 3, 2.0, 5.0])
    # The batch's total norm over its real positions (the padding's 9s left out), averaged over batches.
    total = (math.sqrt(25 + 1 + 4 + 9 + 16) + 10) / 2
    assert all(row["total_norm"] == pytest.approx(total) for row in rows)


def test_position_profile_skips_positions_nobody_has() -> None:
    perturbation = torch.ones(1, 3, 2)
    rows = position_profile([perturbation], [torch.tensor([[False, True, True]])])
    assert [row["position_from_end"] for row in rows] == [1, 2]
    with pytest.raises(ValueError):
        position_profile([], [])


def _save_model(directory: Path, name: str, num_items: int) -> Path:
    return save_untrained_model(directory / f"{name}.pt", name, num_items, MAX_LEN)


def _hparams(model: str, method: str) -> dict[str, object]:
    config = load_config(REPO_ROOT / "config" / "smoke.yaml")
    config["datasets"]["toy"]["max_len"] = MAX_LEN
    return stage_hparams(config, "finetune", dataset="toy", model=model, seed=42, method=method)


@pytest.mark.parametrize(
    ("model", "method"), [("sasrec", "adv_cas"), ("sasrec", "adv_global"), ("gru4rec", "adv_seq")]
)
def test_profile_cli_gives_equal_budgets_in_input_space(
    tmp_path: Path, toy_data_dir: Path, model: str, method: str
) -> None:
    num_items = json.loads((toy_data_dir / "stats.json").read_text())["items"]
    checkpoint = _save_model(tmp_path, model, num_items)
    hparams = _hparams(model, method)
    output = tmp_path / "profile.csv"
    argv = ["profile", "--data", str(toy_data_dir), "--hparams", json.dumps(hparams), "--dataset", "toy"]
    argv += ["--model", model, "--method", method, "--checkpoint", str(checkpoint), "--output", str(output)]
    argv += ["--batches", "3", "--device", "cpu"]
    if method in CASCADE_TERMS_OF:
        cascade = tmp_path / "cascade.pt"
        terms = CASCADE_TERMS_OF[method]
        write_cascade(
            toy_data_dir, max_len=MAX_LEN, batch_size=hparams["batch_size"], terms=terms, output=cascade
        )
        argv += ["--cascade", str(cascade)]
    assert main(argv) == 0
    profile = pd.read_csv(output)
    assert list(profile.columns) == PROFILE_COLUMNS
    assert set(profile["method"]) == {method} and set(profile["model"]) == {model}
    assert profile["position_from_end"].tolist() == list(range(1, len(profile) + 1))
    assert len(profile) > 1 and (profile["mean_norm"] > 0).all()
    # Every method that perturbs S adds epsilon in the network's input space (batch norm scope), whatever
    # SASRec's sqrt(d) scaling of the rows: the perturbation was scaled back to the input.
    assert hparams["grad_norm_scope"] == "batch" and hparams["perturb_space"] == "input"
    assert profile["total_norm"].tolist() == pytest.approx([hparams["epsilon"]] * len(profile), rel=1e-4)


def test_profile_cli_refuses_a_method_without_perturbation_of_s(tmp_path: Path, toy_data_dir: Path) -> None:
    num_items = json.loads((toy_data_dir / "stats.json").read_text())["items"]
    checkpoint = _save_model(tmp_path, "sasrec", num_items)
    argv = ["profile", "--data", str(toy_data_dir), "--hparams", json.dumps(_hparams("sasrec", "adv_linear"))]
    argv += ["--dataset", "toy", "--model", "sasrec", "--method", "adv_linear"]
    argv += ["--checkpoint", str(checkpoint), "--output", str(tmp_path / "p.csv"), "--device", "cpu"]
    assert main(argv) == 2
    assert not (tmp_path / "p.csv").exists()


def test_profile_cli_needs_the_cascade_of_adv_cas(tmp_path: Path, toy_data_dir: Path) -> None:
    num_items = json.loads((toy_data_dir / "stats.json").read_text())["items"]
    checkpoint = _save_model(tmp_path, "sasrec", num_items)
    argv = ["profile", "--data", str(toy_data_dir), "--hparams", json.dumps(_hparams("sasrec", "adv_cas"))]
    argv += ["--dataset", "toy", "--model", "sasrec", "--method", "adv_cas"]
    argv += ["--checkpoint", str(checkpoint), "--output", str(tmp_path / "p.csv"), "--device", "cpu"]
    assert main(argv) == 2


def test_collect_profiles_adds_epsilon_and_seed_from_the_path(tmp_path: Path) -> None:
    inputs = []
    for seed, method in ((1, "adv_cas"), (2, "adv_global")):
        path = tmp_path / paths.run_file(
            "profiles", dataset="toy", model="sasrec", seed=seed, method=method, epsilon=10
        )
        path.parent.mkdir(parents=True)
        rows = [
            {"dataset": "toy", "model": "sasrec", "method": method, "position_from_end": position}
            | {"mean_norm": 1.0 / position, "total_norm": 10.0}
            for position in (1, 2)
        ]
        pd.DataFrame(rows, columns=PROFILE_COLUMNS).to_csv(path, index=False)
        inputs.append(path)
    output = tmp_path / "summary.csv"
    collect("profiles", inputs, output)
    summary = pd.read_csv(output)
    assert list(summary.columns) == PROFILE_SUMMARY_COLUMNS
    assert summary["method"].tolist() == ["adv_global", "adv_global", "adv_cas", "adv_cas"]
    assert set(summary["epsilon"]) == {10.0} and summary["seed"].tolist() == [2, 2, 1, 1]
    assert main(["collect", "profiles", str(inputs[0]), "--output", str(tmp_path / "again.csv")]) == 0
