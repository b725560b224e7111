"""The command line: every stage's subcommand is declared by its own module and listed by ``catrec --help``;
``catrec stage-keys`` names the config keys a stage reads."""

from __future__ import annotations

import copy
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from catrec import cli
from catrec.config import load_config, stage_hparams
from catrec.settings import SETTINGS
from catrec.vocabulary import METHODS, MODELS

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_catrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "catrec", *args], capture_output=True, text=True, check=True)


def test_help_lists_every_stage() -> None:
    listed = run_catrec("--help").stdout
    for name in cli.COMMAND_MODULES:
        assert f"\n    {name}" in listed, name


def test_each_stage_declares_its_arguments_in_its_own_module() -> None:
    """A subcommand's arguments and what it runs sit in the module of its stage; cli.py only collects them."""
    for module_name in set(cli.COMMAND_MODULES.values()):
        module = importlib.import_module(module_name)
        names = {command.name for command in module.COMMANDS}
        assert names == {name for name, owner in cli.COMMAND_MODULES.items() if owner == module_name}
        for command in module.COMMANDS:
            assert command.declare.__module__ == module_name, command.name
            assert command.run.__module__ in (module_name, "catrec.commands"), command.name
    assert "add_argument" not in inspect.getsource(cli)


def test_a_command_imports_its_own_module_alone() -> None:
    """`catrec download` builds its parser without importing torch (light rules stay light)."""
    code = (
        "import sys; from catrec import cli; cli.build_parser(['download']); "
        "print('torch' in sys.modules, 'catrec.stages.pretrain' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_every_stage_subcommand_has_help() -> None:
    for command in cli.commands():
        assert command.help.strip(), command.name
        assert run_catrec(command.name, "--help").stdout.startswith(f"usage: catrec {command.name}")


@pytest.mark.parametrize(
    ("stage", "model", "method"),
    [("pretrain", m, None) for m in MODELS]
    + [("finetune", m, method) for m in MODELS for method in METHODS]
    + [("attack", m, None) for m in MODELS],
)
def test_config_keys_name_where_each_setting_is_read(stage: str, model: str, method: str | None) -> None:
    """Changing one config key that a settings field names changes exactly that --hparams key."""
    config = load_config(REPO_ROOT / "config" / "config.yaml")
    dataset = next(iter(config["datasets"]))
    before = stage_hparams(config, stage, dataset=dataset, model=model, seed=1, method=method)
    keys = SETTINGS[stage].config_keys(model=model, method=method, dataset=dataset)
    assert sorted(keys.values()) == sorted(before)
    for config_key, hparam in keys.items():
        if config_key in ("seeds", "models"):  # the job's own seed and model
            continue
        changed = copy.deepcopy(config)
        *parents, last = config_key.split(".")
        section = changed
        for part in parents:
            section = section[part]
        section[last] = sentinel = object()
        after = stage_hparams(changed, stage, dataset=dataset, model=model, seed=1, method=method)
        assert after[hparam] is sentinel, config_key
        assert {k: v for k, v in after.items() if k != hparam} == {
            k: v for k, v in before.items() if k != hparam
        }


def test_stage_keys_prints_the_keys_of_one_method() -> None:
    lines = run_catrec(
        "stage-keys", "finetune", "--model", "sasrec", "--method", "adv_linear"
    ).stdout.splitlines()
    keys = dict(line.split("\t") for line in lines)
    assert keys["adversarial.lambda2"] == "lambda2" and keys["train.finetune_epochs"] == "epochs"
    assert "adversarial.lambda1" not in keys, "adv_linear has no level-1 term"
    every_method = run_catrec("stage-keys", "finetune", "--model", "sasrec").stdout
    assert "adversarial.lambda1\tlambda1" in every_method
