"""The config schema: both shipped configs validate, and bad keys fail with a message naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT

from catrec.cli import main
from catrec.config import STAGES, load_config, read_hparams, stage_hparams, stage_keys, validate_config
from catrec.errors import CatrecError
from catrec.vocabulary import ADVERSARIAL_KEYS_OF, METHODS, MODEL_KEYS_OF


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
    assert smoke["seeds"] == [42] and "seed" not in smoke


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
        (_set("adversarial.epsilon", float("nan")), "adversarial.epsilon"),
        (_set("adversarial.epsilon", float("inf")), "adversarial.epsilon"),
        (_set("adversarial.epsilon", -1), "adversarial.epsilon"),
        (_set("model.dropout", float("nan")), "model.dropout"),
        (_set("epsilon_sweep.values", [1, float("-inf")]), "epsilon_sweep.values.1"),
        (_set("train.pretrain_epochs", 3.0), "train.pretrain_epochs"),
        (_set("train.bucket_by_length", 1), "train.bucket_by_length"),
        (_set("train.layout", "eager"), "train.layout"),
        (_set("train.capture", "yes"), "train.capture"),
        (_set("train.capture", 1), "train.capture"),
        (_set("download.max_bytes", 0), "download.max_bytes"),
        (_set("download.deadline_s", float("inf")), "download.deadline_s"),
        (_set("download.timeout", 5), "download.timeout"),
        (_set("datasets.ml-1m.source.filename", ".."), "datasets.ml-1m.source.filename"),
        (_set("datasets.ml-1m.source.filename", "."), "datasets.ml-1m.source.filename"),
        (_set("datasets.ml-1m.source.filename", "a\\b"), "datasets.ml-1m.source.filename"),
        (_set("datasets.ml-1m.source.member", "ml-1m/../ratings.dat"), "datasets.ml-1m.source.member"),
        (_set("datasets.ml-1m.source.member", "/ratings.dat"), "datasets.ml-1m.source.member"),
    ],
)
def test_invalid_config_names_the_key(
    paper_config: dict[str, Any], mutate: Callable[[dict[str, Any]], None], key: str
) -> None:
    config = copy.deepcopy(paper_config)
    mutate(config)
    with pytest.raises(CatrecError, match=rf"^invalid config key '{key}': [^\n]+$"):
        validate_config(config)


def _with_engine(config: dict[str, Any], engine: str) -> dict[str, Any]:
    """``config`` as an earlier config wrote its training path: ``train.engine``, no layout or capture."""
    config = copy.deepcopy(config)
    del config["train"]["layout"], config["train"]["capture"]
    config["train"]["engine"] = engine
    return config


@pytest.mark.parametrize(("engine", "layout"), [("eager", "packed"), ("static", "padded"), ("auto", "auto")])
def test_an_earlier_config_with_train_engine_still_validates(
    paper_config: dict[str, Any], engine: str, layout: str
) -> None:
    """An earlier config's engines were today's layouts: eager packed, static padded (captured on CUDA,
    as ``capture: auto`` does)."""
    train = validate_config(_with_engine(paper_config, engine))["train"]
    assert (train["layout"], train["capture"]) == (layout, "auto") and "engine" not in train


def test_the_committed_configs_still_validate() -> None:
    """Every config committed under docs/evidence/ validates as written, read as its runs were: the keys
    added since (precision fp32, no stack, capture auto) and its engine as a layout (none: eager)."""
    expected = {
        "beauty-cpu": "packed",
        "beauty-gpu-attempt": "packed",
        "beauty-paper-schedule": "packed",
        "paper-cost-cpu": "auto",
        "one-path": "auto",  # written after train.layout existed: it states it
    }
    committed = sorted(path.parent.name for path in (REPO_ROOT / "docs" / "evidence").glob("*/config.yaml"))
    assert committed == sorted(expected)
    for name, layout in expected.items():
        config = yaml.safe_load((REPO_ROOT / "docs" / "evidence" / name / "config.yaml").read_text())
        assert ("layout" in config["train"]) == (name == "one-path"), name
        train = validate_config(config)["train"]
        assert (train["layout"], train["capture"], train["precision"]) == (layout, "auto", "fp32"), name


def test_train_engine_is_refused_beside_train_layout_or_with_an_unknown_value(
    paper_config: dict[str, Any],
) -> None:
    both = _with_engine(paper_config, "static")
    both["train"]["layout"] = "padded"
    with pytest.raises(CatrecError, match=r"^invalid config key 'train\.engine': set train\.layout alone"):
        validate_config(both)
    with pytest.raises(CatrecError, match=r"^invalid config key 'train\.engine': [^\n]+$"):
        validate_config(_with_engine(paper_config, "graph"))
    neither = copy.deepcopy(paper_config)
    del neither["train"]["layout"]
    # A config from before `engine` existed: every run then was eager, i.e. packed.
    assert validate_config(neither)["train"]["layout"] == "packed"
    # capture has a default: a config without it captures wherever it can.
    no_capture = copy.deepcopy(paper_config)
    del no_capture["train"]["capture"]
    assert validate_config(no_capture)["train"]["capture"] == "auto"


def test_stacking_needs_a_layout_that_can_stack(paper_config: dict[str, Any]) -> None:
    config = copy.deepcopy(paper_config)
    config["train"].update(stack=True, layout="packed")
    with pytest.raises(
        CatrecError, match=r"^invalid config key 'train\.layout': the packed layout trains one"
    ):
        validate_config(config)
    for layout in ("padded", "auto"):
        config["train"]["layout"] = layout
        validate_config(copy.deepcopy(config))


def test_non_finite_number_is_named(paper_config: dict[str, Any]) -> None:
    config = copy.deepcopy(paper_config)
    config["adversarial"]["epsilon"] = float("nan")
    with pytest.raises(CatrecError) as error:
        validate_config(config)
    assert str(error.value) == "invalid config key 'adversarial.epsilon': nan is not a finite number"


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


# --- per-stage --hparams ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_config() -> dict[str, Any]:
    return load_config(REPO_ROOT / "config" / "smoke.yaml")


def every_stage() -> list[tuple[str, str, str | None]]:
    runs: list[tuple[str, str, str | None]] = []
    for model in MODEL_KEYS_OF:
        runs += [("pretrain", model, None), ("attack", model, None)]
        runs += [("finetune", model, method) for method in METHODS]
    return runs


@pytest.mark.parametrize(("stage", "model", "method"), every_stage())
def test_stage_hparams_hold_exactly_the_keys_each_stage_reads(
    smoke_config: dict[str, Any], stage: str, model: str, method: str | None
) -> None:
    hparams = stage_hparams(smoke_config, stage, dataset="toy", model=model, seed=7, method=method)
    assert tuple(hparams) == stage_keys(stage, model=model, method=method)
    assert read_hparams(hparams, stage, model=model, method=method) == hparams
    # Where a run happens is not part of what it computes.
    assert "device" not in hparams and "threads" not in hparams
    if stage == "pretrain":
        assert hparams["epochs"] == smoke_config["train"]["pretrain_epochs"] and hparams["seed"] == 7
        # The other model's architecture keys are not read, so they cannot change this model's runs.
        other = next(name for name in MODEL_KEYS_OF if name != model)
        assert not set(MODEL_KEYS_OF[other]) & set(hparams)
    if stage == "finetune" and method != "base":
        adversarial = set(smoke_config["adversarial"]) - {"model_selection"}
        assert adversarial & set(hparams) == set(ADVERSARIAL_KEYS_OF[method])
        assert hparams["epochs"] == smoke_config["train"]["finetune_epochs"]


def test_stage_hparams_epsilon_overrides_the_config(smoke_config: dict[str, Any]) -> None:
    hparams = stage_hparams(
        smoke_config, "finetune", dataset="toy", model="sasrec", seed=1, method="adv_cas", epsilon=20
    )
    assert hparams["epsilon"] == 20.0
    continued = stage_hparams(
        smoke_config, "finetune", dataset="toy", model="sasrec", seed=1, method="continued", epsilon=20
    )
    assert "epsilon" not in continued


def test_read_hparams_requires_exactly_the_stage_keys(smoke_config: dict[str, Any]) -> None:
    good = stage_hparams(smoke_config, "finetune", dataset="toy", model="sasrec", seed=0, method="adv_seq")
    with pytest.raises(CatrecError, match="invalid --hparams key 'lambda1': not read by finetune of adv_seq"):
        read_hparams({**good, "lambda1": 1.0}, "finetune", model="sasrec", method="adv_seq")
    with pytest.raises(CatrecError, match="invalid --hparams key 'epsilon': required by finetune of adv_seq"):
        read_hparams(
            {k: v for k, v in good.items() if k != "epsilon"}, "finetune", model="sasrec", method="adv_seq"
        )
    # device and threads are command-line options now, not settings of the run.
    with pytest.raises(CatrecError, match="'device'"):
        read_hparams({**good, "device": "cpu"}, "finetune", model="sasrec", method="adv_seq")
    # Values obey the config's rules.
    with pytest.raises(CatrecError, match="'epsilon'"):
        read_hparams({**good, "epsilon": -1.0}, "finetune", model="sasrec", method="adv_seq")
    with pytest.raises(CatrecError, match="'epsilon'"):
        read_hparams({**good, "epsilon": float("nan")}, "finetune", model="sasrec", method="adv_seq")
    pretrain = stage_hparams(smoke_config, "pretrain", dataset="toy", model="sasrec", seed=0)
    with pytest.raises(CatrecError, match="'model'.*disagrees with --model gru4rec"):
        read_hparams(
            {**{k: v for k, v in pretrain.items() if k not in MODEL_KEYS_OF["sasrec"]}, "num_layers": 1},
            "pretrain",
            model="gru4rec",
        )
    with pytest.raises(CatrecError, match="unknown method 'adv_foo'"):
        stage_keys("finetune", model="sasrec", method="adv_foo")
    with pytest.raises(CatrecError, match="unknown stage"):
        stage_keys("cascade", model="sasrec")
    assert set(STAGES) == {"pretrain", "finetune", "attack"}


def training_command(command: str, hparams: str, tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    arguments = [command, "--data", str(tmp_path / "data"), "--hparams", hparams, "--dataset", "toy"]
    arguments += [
        "--model",
        "sasrec",
        "--checkpoint",
        str(out / "model.pt"),
        "--curve",
        str(out / "curve.csv"),
    ]
    arguments += ["--metrics", str(out / "metrics.json"), "--state-dir", str(out / "state")]
    if command == "finetune":
        arguments += ["--method", "adv_global", "--pretrained", str(out / "pretrain.pt")]
    return [sys.executable, "-m", "catrec.cli", *arguments]


@pytest.mark.parametrize(
    ("command", "hparams", "message"),
    [
        ("pretrain", '{"epochs": -3}', "'epochs': -3 is less than the minimum of 0"),
        ("pretrain", '{"eval_every": 0}', "'eval_every': 0 is less than the minimum of 1"),
        ("pretrain", '{"lr": "fast"}', "'lr': 'fast' is not of type 'number'"),
        ("pretrain", '{"epochs": 2.5}', "'epochs': 2.5 is not of type 'integer'"),
        ("pretrain", '{"epoch": 3}', "'epoch': Additional properties are not allowed"),
        ("finetune", '{"epsilon": NaN}', "'epsilon': nan is not a finite number"),
        ("finetune", '{"lambda1": -Infinity}', "'lambda1': -inf is not a finite number"),
        ("finetune", '{"grad_norm_scope": "global"}', "'grad_norm_scope': 'global' is not one of"),
    ],
)
def test_cli_refuses_bad_hparams(command: str, hparams: str, message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        training_command(command, hparams, tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"catrec {command}: error: invalid --hparams key {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
