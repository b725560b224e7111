"""Stage ``finetune``: fine-tune a pretrained model with one method (Eq. 4.6-4.10); write its results.

'base' trains nothing: it reports the pretrained model (its weights copied, a curve with only the header).
The metrics JSON carries ``epsilon`` (None for methods without perturbation), ``selected_epoch`` and the
run's identity digest ``run_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from catrec.adversarial import make_loss
from catrec.data.sequences import SPLITS, SequenceData
from catrec.errors import CatrecError
from catrec.io import load_torch_file, write_text_atomically
from catrec.models import load_model, save_model
from catrec.runtime import configure
from catrec.stages.common import data_inputs, prepare, write_metrics_json
from catrec.state import run_state
from catrec.trainer import TrainConfig, evaluate, fit
from catrec.vocabulary import CASCADE_TERMS_OF, CURVE_COLUMNS


def load_cascade(path: str | Path, method: str, batch_size: int) -> torch.Tensor:
    """The cascade matrix saved by ``catrec cascade``, checked against what ``method`` and training expect."""
    path = Path(path)
    if not path.exists():
        raise CatrecError(f"cascade file {path} (for method '{method}') does not exist")
    payload = load_torch_file(path)
    expected = {"terms": CASCADE_TERMS_OF[method], "batch_size": batch_size}
    for key, value in expected.items():
        if payload[key] != value:
            raise CatrecError(f"{path} has {key}={payload[key]!r}; method '{method}' needs {key}={value!r}")
    return payload["cascade"]


def finetune(
    *,
    data_dir: str | Path,
    hparams: Mapping[str, Any],
    dataset: str,
    model_name: str,
    method: str,
    pretrained: str | Path,
    cascade: str | Path | None,
    checkpoint: str | Path,
    curve: str | Path,
    metrics: str | Path,
    state_dir: str | Path,
    device: str = "auto",
    threads: int = 1,
) -> None:
    """Fine-tune ``pretrained`` with ``method``, resuming this run's own state under ``state_dir``."""
    values = prepare(hparams, "finetune", model=model_name, method=method)
    torch_device = configure(device, threads)
    model = load_model(pretrained, torch_device)
    if model.config.name != model_name or model.config.max_len != values["max_len"]:
        raise CatrecError(
            f"{pretrained} holds {model.config.name} with max_len {model.config.max_len}; "
            f"expected {model_name} with max_len {values['max_len']}"
        )
    data = SequenceData.from_dir(data_dir, values["max_len"])
    record = {"dataset": dataset, "model": model_name, "method": method, "seed": values["seed"]}

    if method == "base":
        scores = {split: evaluate(model, data, split) for split in SPLITS}
        save_model(checkpoint, model)
        write_text_atomically(curve, ",".join(CURVE_COLUMNS) + "\n")
        write_metrics_json(
            metrics, **record, **scores, epsilon=None, selected_epoch=values["epoch_offset"], run_id=None
        )
        return

    config = TrainConfig.from_hparams(values)
    inputs = {**data_inputs(data_dir), "pretrained": Path(pretrained)}
    cascade_matrix = None
    if method in CASCADE_TERMS_OF:
        if cascade is None:
            raise CatrecError(f"method '{method}' needs a cascade matrix (--cascade)")
        cascade_matrix = load_cascade(cascade, method, config.batch_size)
        inputs["cascade"] = Path(cascade)
    state = run_state(
        state_dir,
        stage="finetune",
        model=model_name,
        method=method,
        hparams=values,
        inputs=inputs,
        metrics=metrics,
    )
    print(f"finetune {dataset}/{model_name} {method} seed {config.seed}: state {state.directory}")
    loss_fn = make_loss(method, values, cascade_matrix, data)
    result = fit(
        model,
        data,
        loss_fn,
        config,
        phase="finetune",
        curve_path=curve,
        state_dir=state.directory,
        device=torch_device,
        epoch_offset=values["epoch_offset"],
        model_selection=values["model_selection"],
    )
    save_model(checkpoint, model)
    write_metrics_json(
        metrics,
        **record,
        valid=result.valid,
        test=result.test,
        epsilon=values.get("epsilon"),
        selected_epoch=result.selected_epoch,
        run_id=state.run_id,
    )
