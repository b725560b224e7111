"""The config schema: both shipped configs validate, and bad keys fail with a message naming the key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from conftest import REPO_ROOT

from catrec.cli import main
from catrec.config import load_config, validate_config
from catrec.errors import CatrecError


@pytest.fixture(scope="module")
def paper_config() -> dict[str, Any]:
    return load_config(REPO_ROOT / "config" / "config.yaml")


def test_shipped_configs_are_valid() -> None:
    paper = load_config(REPO_ROOT / "config" / "config.yaml")
    smoke = load_config(REPO_ROOT / "config" / "smoke.yaml")
    assert set(paper["datasets"]) == {"ml-1m", "beauty", "video", "clothing"}
    assert {name: spec["max_len"] for name, spec in paper["datasets"].items()} == {
        "ml-1m": 200,
        "beauty": 50,
        "video": 50,
        "clothing": 50,
    }
    assert paper["train"]["pretrain_epochs"] == 500 and paper["train"]["finetune_epochs"] == 100
    assert paper["adversarial"]["epsilon"] == 10
    assert set(smoke["datasets"]) == {"toy"}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (_set("datasets.ml-1m.format", "parquet"), "datasets.ml-1m.format"),
        (_set("train.pretrain_epochs", -5), "train.pretrain_epochs"),
        (_set("train.finetune_epochs", -1), "train.finetune_epochs"),
        (_set("adversarial.grad_norm_scope", "global"), "adversarial.grad_norm_scope"),
        (_set("train.learning_rate", 0.1), "train.learning_rate"),
        (_set("datasets.beauty.max_len", 0), "datasets.beauty.max_len"),
        (_set("epsilon_sweep.datasets", ["nope"]), "epsilon_sweep.datasets"),
    ],
)
def test_invalid_config_names_the_key(
    paper_config: dict[str, Any], mutate: Callable[[dict[str, Any]], None], key: str
) -> None:
    config = copy.deepcopy(paper_config)
    mutate(config)
    with pytest.raises(CatrecError, match=rf"'{key}'"):
        validate_config(config)


def test_missing_key_is_named(paper_config: dict[str, Any]) -> None:
    config = copy.deepcopy(paper_config)
    del config["train"]["lr"]
    with pytest.raises(CatrecError, match=r"'train\.lr'"):
        validate_config(config)


def test_check_config_command(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    text = (
        (REPO_ROOT / "config" / "smoke.yaml")
        .read_text()
        .replace("pretrain_epochs: 20", "pretrain_epochs: -3")
    )
    bad.write_text(text)
    assert main(["check-config", str(REPO_ROOT / "config" / "smoke.yaml")]) == 0
    assert main(["check-config", str(bad)]) == 2
    assert "train.pretrain_epochs" in capsys.readouterr().err
