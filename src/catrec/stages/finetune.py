"""Stage ``finetune``: fine-tune a pretrained model with one method (Eq. 4.6-4.10); write its results.

'base' trains nothing: it reports the pretrained model (its weights copied, a curve with only the header).
The metrics JSON carries ``epsilon`` (None for methods without perturbation), ``selected_epoch``, the
run's identity digest ``run_id`` and the training ``engine`` that ran ('eager' for 'base': its evaluation
is the eager one).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catrec.adversarial import make_loss
from catrec.data.sequences import SPLITS
from catrec.io import write_text_atomically
from catrec.models import save_model
from catrec.runtime import configure, resolve_engine
from catrec.stages.common import (
    data_inputs,
    load_model_and_data,
    method_cascade,
    prepare,
    write_metrics_json,
)
from catrec.state import run_state
from catrec.trainer import TrainConfig, evaluate, fit
from catrec.vocabulary import CURVE_COLUMNS


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
    model, data = load_model_and_data(
        pretrained, data_dir, model_name=model_name, max_len=values["max_len"], device=torch_device
    )
    record = {"dataset": dataset, "model": model_name, "method": method, "seed": values["seed"]}

    if method == "base":
        scores = {split: evaluate(model, data, split) for split in SPLITS}
        save_model(checkpoint, model)
        write_text_atomically(curve, ",".join(CURVE_COLUMNS) + "\n")
        write_metrics_json(
            metrics,
            **record,
            **scores,
            epsilon=None,
            selected_epoch=values["epoch_offset"],
            run_id=None,
            engine="eager",
        )
        return

    values["engine"] = resolve_engine(values["engine"], torch_device)
    config = TrainConfig.from_hparams(values)
    inputs = {**data_inputs(data_dir), "pretrained": Path(pretrained)}
    cascade_matrix = method_cascade(method, cascade, config.batch_size, data)
    if cascade_matrix is not None:
        inputs["cascade"] = Path(str(cascade))
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
        engine=config.engine,
    )
