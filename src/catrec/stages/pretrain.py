"""Stage ``pretrain``: train a base model with the BCE loss (Eq. 3.5); write weights, curve and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catrec.data.sequences import SequenceData
from catrec.losses import bce_loss
from catrec.models import ModelConfig, build_model, save_model
from catrec.runtime import configure, resolve_engine
from catrec.stages.common import data_inputs, prepare, write_metrics_json
from catrec.state import run_state
from catrec.trainer import TrainConfig, fit


def pretrain(
    *,
    data_dir: str | Path,
    hparams: Mapping[str, Any],
    dataset: str,
    model_name: str,
    checkpoint: str | Path,
    curve: str | Path,
    metrics: str | Path,
    state_dir: str | Path,
    device: str = "auto",
    threads: int = 1,
) -> None:
    """Train ``model_name`` on ``data_dir``, resuming this run's own state under ``state_dir``."""
    values = prepare(hparams, "pretrain", model=model_name)
    torch_device = configure(device, threads)
    values["engine"] = resolve_engine(values["engine"], torch_device)
    config = TrainConfig.from_hparams(values)
    data = SequenceData.from_dir(data_dir, values["max_len"])
    state = run_state(
        state_dir,
        stage="pretrain",
        model=model_name,
        method="pretrain",
        hparams=values,
        inputs=data_inputs(data_dir),
        metrics=metrics,
    )
    model = build_model(ModelConfig.from_hparams(values, data.num_items)).to(torch_device)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"pretrain {dataset}/{model_name} seed {config.seed}: device {torch_device}, {data.num_users} users, "
        f"{data.num_items} items, T={values['max_len']}, {parameters} parameters, {config.epochs} epochs, "
        f"engine {config.engine}, state {state.directory}"
    )
    result = fit(
        model,
        data,
        bce_loss,
        config,
        phase="pretrain",
        curve_path=curve,
        state_dir=state.directory,
        device=torch_device,
        model_selection="last",
    )
    if result.epochs_trained:
        print(f"pretrain {dataset}/{model_name}: {result.train_seconds / result.epochs_trained:.2f} s/epoch")
    save_model(checkpoint, model)
    write_metrics_json(
        metrics,
        dataset=dataset,
        model=model_name,
        method="pretrain",
        seed=config.seed,
        valid=result.valid,
        test=result.test,
        run_id=state.run_id,
        engine=config.engine,
    )
