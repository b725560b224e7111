"""bench/paper_cost.py end to end on the real Beauty set: its line, its JSON, and where it times a stack."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BEAUTY_PATH, REPO_ROOT, require_shared

from catrec.config import load_config

LINE = re.compile(
    r"^whole paper: [\d.]+ min \(packed [\d.]+ min\) on CPU \(\d+ threads?\)(; unstacked [\d.]+ min)?$"
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
    assert all(set(layouts) == {"packed", "padded"} for layouts in timings["step_seconds"].values())
    assert report["capture"] is False  # no CUDA graph on the CPU
    assert timings["eval_seconds"] > 0 and timings["attack_seconds"] > 0
    assert ("stack_step_seconds" in timings) is stacked
    assert (
        result.stdout.splitlines()[-1].endswith(f"unstacked {report['projected_minutes_unstacked']:.1f} min")
        is stacked
    )
    # Stacked, the two runs at the paper's epsilon cost the stack's steps instead of their own (one seed).
    epochs = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["train"]["finetune_epochs"]
    own = timings["step_seconds"]["adv_linear"]["padded"] + timings["step_seconds"]["adv_cas"]["padded"]
    saved = (
        (own - timings.get("stack_step_seconds", own))
        * epochs
        * report["stages"]["beauty"]["steps_per_epoch"]
    )
    assert report["projected_minutes"] == pytest.approx(report["projected_minutes_unstacked"] - saved / 60)
    assert report["projected_minutes_packed"] > 0 and report["projected_minutes_unstacked"] > 0


def paper_cost_module() -> Any:
    spec = importlib.util.spec_from_file_location("paper_cost", REPO_ROOT / "bench" / "paper_cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_planned_job_is_projected_a_pretraining_stack_as_its_seeds(tmp_path: Path) -> None:
    """Two seeds and ``train.stack: true``: Snakemake plans one ``pretrain_stack`` job per dataset x model,
    which costs what the seeds' pretrainings cost (it was projected at 0 s). Timings made up: no training."""
    paper_cost = paper_cost_module()
    path = beauty_config(tmp_path, True)
    config = yaml.safe_load(path.read_text())
    config["seeds"] = [1, 2]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    config = load_config(path)
    losses = {"continued", "adv_linear", "adv_cas"}
    timings = {"eval_seconds": 2.0, "attack_seconds": 3.0, "stack_step_seconds": 0.08}
    timings["step_seconds"] = {loss: {"packed": 0.1, "padded": 0.05} for loss in losses}
    stages = {"beauty": {"steps_per_epoch": 10, "cascade_seconds": 1.0, "gru4rec": timings}}
    jobs = paper_cost.planned_jobs(path)
    assert ("pretrain_stack", {"dataset": "beauty", "model": "gru4rec"}) in jobs
    seconds = {rule: 0.0 for rule, _ in jobs}
    for rule, wildcards in jobs:
        seconds[rule] += paper_cost.job_seconds(rule, wildcards, config, stages, "padded", stacked=True)
    pretraining = {"dataset": "beauty", "model": "gru4rec", "seed": "1"}
    alone = paper_cost.job_seconds("pretrain", pretraining, config, stages, "padded", stacked=True)
    assert alone > 0 and seconds["pretrain_stack"] == pytest.approx(2 * alone)
