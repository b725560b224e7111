"""catrec.settings: one frozen settings object per stage, built from the config for a job and from its JSON in
the job, each field naming the config key it is read from."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import REPO_ROOT

from catrec.config import load_config
from catrec.errors import CatrecError
from catrec.settings import SETTINGS, AttackSettings, FinetuneSettings, PretrainSettings
from catrec.vocabulary import METHODS, MODELS

SMOKE = load_config(REPO_ROOT / "config/smoke.yaml")
JOBS = [("pretrain", m, None) for m in MODELS] + [("attack", m, None) for m in MODELS]
JOBS += [("finetune", m, method) for m in MODELS for method in METHODS]


@pytest.mark.parametrize(("stage", "model", "method"), JOBS)
def test_the_job_reads_back_the_settings_the_rule_built(stage: str, model: str, method: str | None) -> None:
    job = {"dataset": "toy", "model": model, "seed": "42", "method": method, "epsilon": "10"}
    settings = SETTINGS[stage].from_config(SMOKE, job)
    assert tuple(settings.hparams()) == SETTINGS[stage].keys(model=model, method=method)
    assert SETTINGS[stage].from_json(settings.to_json(), model=model, method=method) == settings


def test_fields_name_their_config_keys() -> None:
    assert FinetuneSettings.config_keys(model="sasrec", method="adv_cas")["adversarial.lambda1"] == "lambda1"
    assert "adversarial.lambda1" not in FinetuneSettings.config_keys(model="sasrec", method="adv_linear")
    assert FinetuneSettings.keys(model="sasrec", method="base") == ("seed", "max_len", "epoch_offset")
    assert PretrainSettings.config_keys(model="gru4rec")["model.gru4rec.num_layers"] == "num_layers"
    assert "num_blocks" not in PretrainSettings.keys(model="gru4rec")
    assert AttackSettings.config_keys(model="sasrec", dataset="toy")["datasets.toy.max_len"] == "max_len"


def test_a_jobs_epsilon_and_seed_are_its_own() -> None:
    job = {"dataset": "toy", "model": "sasrec", "seed": "7", "method": "adv_cas", "epsilon": "0.1"}
    settings = FinetuneSettings.from_config(SMOKE, job)
    assert (settings.seed, settings.epsilon, settings.lambda1) == (7, 0.1, SMOKE["adversarial"]["lambda1"])


def test_settings_are_frozen_and_resolving_the_layout_changes_none() -> None:
    job = {"dataset": "toy", "model": "sasrec", "seed": 1}
    settings = PretrainSettings.from_config(SMOKE, job)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 1.0  # type: ignore[misc]
    config = settings.train_config(layout="padded", capture=False)
    assert (config.layout, config.capture, config.lr) == ("padded", False, SMOKE["train"]["lr"])
    assert settings.layout == SMOKE["train"]["layout"]
    assert settings.model_config(num_items=9).num_blocks == SMOKE["model"]["sasrec"]["num_blocks"]


def test_from_json_refuses_keys_the_job_does_not_read() -> None:
    job = {"dataset": "toy", "model": "sasrec", "seed": 1, "method": "adv_seq", "epsilon": 1}
    values = FinetuneSettings.from_config(SMOKE, job).hparams()
    with pytest.raises(CatrecError, match="'lambda1': not read by finetune of adv_seq"):
        FinetuneSettings.from_json({**values, "lambda1": 1.0}, model="sasrec", method="adv_seq")
    with pytest.raises(CatrecError, match="'epsilon': required by finetune of adv_seq"):
        FinetuneSettings.from_json(
            {k: v for k, v in values.items() if k != "epsilon"}, model="sasrec", method="adv_seq"
        )
