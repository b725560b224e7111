"""Run state keyed by the run's identity (settings and input contents), and pruning state no result uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from catrec.cli import main
from catrec.state import IDENTITY_FILE, RunState, prune_state, run_state

HPARAMS = {"seed": 0, "max_len": 20, "epochs": 4, "lr": 0.01, "checkpoint_every": 2, "epsilon": 1.0}


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    files = {"sequences.txt": "1 1 2 3\n2 3 2 1\n", "pretrained": "weights"}
    for name, text in files.items():
        (tmp_path / "inputs" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "inputs" / name).write_text(text)
    return {name: tmp_path / "inputs" / name for name in files}


def state_of(root: Path, inputs: dict[str, Path], **overrides: Any) -> RunState:
    settings = {"stage": "finetune", "model": "sasrec", "method": "adv_global", "hparams": HPARAMS}
    settings.update(overrides)
    return run_state(root, inputs=inputs, metrics=root / "metrics.json", **settings)


def test_run_state_follows_settings_and_input_contents(tmp_path: Path, inputs: dict[str, Path]) -> None:
    root = tmp_path / "state"
    first = state_of(root, inputs)
    assert first.directory == root / first.run_id and len(first.run_id) == 16
    identity = json.loads((first.directory / IDENTITY_FILE).read_text())
    assert identity["hparams"]["epsilon"] == 1.0 and identity["metrics"] == str(root / "metrics.json")
    # Same settings and same input bytes: the same run, whatever the order of the keys.
    assert state_of(root, inputs, hparams=dict(reversed(HPARAMS.items()))) == first
    # How often the run is saved does not change what it computes.
    assert state_of(root, inputs, hparams={**HPARAMS, "checkpoint_every": 1}) == first
    # Float32 is what every run computed before the setting existed: the same identity as before.
    assert state_of(root, inputs, hparams={**HPARAMS, "precision": "fp32"}) == first

    others = [
        # The layout is part of a run's identity (its random draws differ), no value of it implied.
        state_of(root, inputs, hparams={**HPARAMS, "layout": "packed"}),
        state_of(root, inputs, hparams={**HPARAMS, "layout": "padded"}),
        # `engine` is no longer an implied key: an hparams holding it is another run.
        state_of(root, inputs, hparams={**HPARAMS, "engine": "eager"}),
        state_of(root, inputs, hparams={**HPARAMS, "precision": "tf32"}),
        state_of(root, inputs, hparams={**HPARAMS, "epsilon": 2.0}),
        state_of(root, inputs, hparams={**HPARAMS, "epochs": 5}),
        state_of(root, inputs, method="adv_cas"),
        state_of(root, inputs, model="gru4rec"),
        state_of(root, inputs, stage="pretrain"),
    ]
    inputs["pretrained"].write_text("other weights")
    others.append(state_of(root, inputs))
    directories = {first.directory, *(state.directory for state in others)}
    assert len(directories) == len(others) + 1
    assert all((directory / IDENTITY_FILE).exists() for directory in directories)
    # Back to the original bytes: back to the original run (the file's name and date play no part).
    inputs["pretrained"].write_text("weights")
    assert state_of(root, inputs) == first


def finished(state: RunState, metrics: Path) -> None:
    """Write the metrics file of the run that owns ``state``, as the training stages do."""
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({"method": "adv_global", "run_id": state.run_id}))


def test_prune_state_removes_superseded_state_and_keeps_runs_in_progress(
    tmp_path: Path, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "state"
    results = tmp_path / "results"
    metrics_a, metrics_b = results / "a.json", results / "b.json"

    def state(metrics: Path, epsilon: float) -> RunState:
        hparams = {**HPARAMS, "epsilon": epsilon}
        return run_state(
            root,
            stage="finetune",
            model="sasrec",
            method="adv_global",
            hparams=hparams,
            inputs=inputs,
            metrics=metrics,
        )

    old_a, new_a = state(metrics_a, 1.0), state(metrics_a, 2.0)  # a's settings changed; the new run finished
    finished(new_a, metrics_a)
    running_b = state(metrics_b, 3.0)  # b has no results yet: killed or still running
    for run in (old_a, new_a, running_b):
        (run.directory / "checkpoint.pt").write_text("state")

    assert prune_state(root, dry_run=True) == [old_a.directory]
    assert old_a.directory.exists()
    assert main(["prune-state", str(root)]) == 0
    assert "removed 1 state directory" in capsys.readouterr().out
    assert not old_a.directory.exists()
    assert new_a.directory.exists() and running_b.directory.exists()
    assert prune_state(root) == []

    # --finished also removes the state of complete runs; a run without results keeps its state.
    assert main(["prune-state", str(root), "--finished", "--dry-run"]) == 0
    assert f"would remove {new_a.directory}" in capsys.readouterr().out
    assert new_a.directory.exists()
    assert main(["prune-state", str(root), "--finished"]) == 0
    assert not new_a.directory.exists() and running_b.directory.exists()
    finished(running_b, metrics_b)
    assert prune_state(root) == []
    assert prune_state(root, finished=True) == [running_b.directory]
    assert not running_b.directory.exists()
