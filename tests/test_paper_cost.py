"""bench/paper_cost.py end to end on the real Beauty set: its line, its JSON, and where it times a stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BEAUTY_PATH, REPO_ROOT, require_shared

LINE = re.compile(
    r"^whole paper: [\d.]+ min \(eager [\d.]+ min\) on CPU \(\d+ threads?\)(; unstacked [\d.]+ min)?$"
)


def beauty_config(tmp_path: Path, stack: bool | str) -> Path:
    """config/config.yaml cut to Beauty, GRU4Rec and two stacked methods, with ``train.stack: stack``."""
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config["datasets"] = {"beauty": config["datasets"]["beauty"]}
    config["models"] = ["gru4rec"]
    config["methods"] = ["base", "continued", "adv_linear", "adv_cas"]
    config["train"]["stack"] = stack
    config["epsilon_sweep"] = {"datasets": ["beauty"], "models": ["gru4rec"], "values": [10]}
    config["figures"]["fig5"] = {"dataset": "beauty", "model": "gru4rec", "methods": ["base", "adv_cas"]}
    config["figures"]["fig6"] = {
        "model": "gru4rec",
        "supplementary_model": "gru4rec",
        "methods": ["base", "adv_linear", "adv_cas"],
    }
    path = tmp_path / f"config-{stack}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["auto", True])
def test_paper_cost_projects_a_config_and_times_a_stack_only_where_the_config_stacks(
    tmp_path: Path, stack: bool | str
) -> None:
    require_shared(BEAUTY_PATH)
    report_path = tmp_path / "paper_cost.json"
    command = [sys.executable, str(REPO_ROOT / "bench" / "paper_cost.py"), "--device", "cpu", "--quick"]
    command += ["--configfile", str(beauty_config(tmp_path, stack)), "--json", str(report_path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert LINE.match(result.stdout.splitlines()[-1]), result.stdout
    report = json.loads(report_path.read_text())
    stacked = stack is True  # auto stacks on CUDA only, as the pipeline plans it
    assert report["stacked"] is stacked
    assert report["device"].startswith("CPU") and report["datasets"] == {"beauty": "real"}
    timings = report["stages"]["beauty"]["gru4rec"]
    assert set(timings["step_seconds"]) == {"adv_cas", "adv_linear", "continued"}
    assert all(set(engines) == {"eager", "static"} for engines in timings["step_seconds"].values())
    assert timings["eval_seconds"] > 0 and timings["attack_seconds"] > 0
    assert ("stack_step_seconds" in timings) is stacked
    assert (
        result.stdout.splitlines()[-1].endswith(f"unstacked {report['projected_minutes_unstacked']:.1f} min")
        is stacked
    )
    # Stacked, the two runs at the paper's epsilon cost the stack's steps instead of their own (one seed).
    epochs = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["train"]["finetune_epochs"]
    own = timings["step_seconds"]["adv_linear"]["static"] + timings["step_seconds"]["adv_cas"]["static"]
    saved = (
        (own - timings.get("stack_step_seconds", own))
        * epochs
        * report["stages"]["beauty"]["steps_per_epoch"]
    )
    assert report["projected_minutes"] == pytest.approx(report["projected_minutes_unstacked"] - saved / 60)
    assert report["projected_minutes_eager"] > 0 and report["projected_minutes_unstacked"] > 0
