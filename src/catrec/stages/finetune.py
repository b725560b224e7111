"""Stage ``finetune``: fine-tune a pretrained model with one method (Eq. 4.6-4.10); write its results.

``finetune-stack`` fine-tunes one pretrained model with several methods at once (``catrec.models.stack``),
each run resuming and writing exactly what ``finetune`` would for it.

'base' trains nothing: it reports the pretrained model (its weights copied, a curve with only the header).
The metrics JSON carries ``epsilon`` (None for methods without perturbation), ``selected_epoch``, the
run's identity digest ``run_id``, the layout it trained in as ``engine`` ('packed' for 'base': its
evaluation is the packed one) and whether its step was ``capture``d as a CUDA graph, the ``device`` type
and the float32 ``precision`` ('fp32' for 'base').
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from catrec.adversarial import make_loss
from catrec.commands import Command, add_run_outputs, add_stack_args, add_training_args, keywords
from catrec.data.sequences import SPLITS, SequenceData
from catrec.errors import CatrecError
from catrec.io import write_text_atomically
from catrec.models import SequentialRecommender, save_model
from catrec.runtime import DEFAULT_PRECISION, configure
from catrec.settings import FinetuneSettings
from catrec.stages.common import (
    data_inputs,
    load_model_and_data,
    method_cascade,
    prepare,
    run_fields,
    schedules,
    write_metrics_json,
)
from catrec.state import run_state
from catrec.trainer import Run, evaluate, fit_runs
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
    settings = prepare(hparams, "finetune", model=model_name, method=method)
    # 'base' trains nothing and has no precision setting: its evaluation computes at the default.
    torch_device = configure(device, threads, settings.precision or DEFAULT_PRECISION)
    model, data = load_model_and_data(
        pretrained, data_dir, model_name=model_name, max_len=settings.max_len, device=torch_device
    )
    record = {"dataset": dataset, "model": model_name, "method": method, "seed": settings.seed}

    if method == "base":
        scores = {split: evaluate(model, data, split) for split in SPLITS}
        save_model(checkpoint, model)
        write_text_atomically(curve, ",".join(CURVE_COLUMNS) + "\n")
        write_metrics_json(
            metrics,
            **record,
            **scores,
            epsilon=None,
            selected_epoch=settings.epoch_offset,
            run_id=None,
            engine="packed",
            capture=False,
            device=torch_device.type,
            precision=DEFAULT_PRECISION,
        )
        return

    member = FinetuneRun(
        method,
        hparams,
        None if cascade is None else Path(cascade),
        Path(checkpoint),
        Path(curve),
        Path(metrics),
        Path(state_dir),
    )
    _finetune_runs(
        model,
        data,
        [(member, settings)],
        dataset=dataset,
        model_name=model_name,
        data_dir=data_dir,
        pretrained=pretrained,
        device=torch_device,
    )


def finetune_stack(
    *,
    data_dir: str | Path,
    dataset: str,
    model_name: str,
    pretrained: str | Path,
    runs: Sequence[FinetuneRun],
    device: str = "auto",
    threads: int = 1,
    max_stack: int | None = None,
) -> None:
    """Fine-tune ``pretrained`` with several methods as one stack (``catrec.models.stack``), or as
    consecutive stacks of at most ``max_stack`` runs.

    The runs must share their schedule (seed, epochs, batch size, ...) and train in the padded layout; each
    resumes its own state and writes exactly the outputs ``finetune`` writes for it (a finished run trains
    no epoch again).
    """
    if not runs:
        raise CatrecError("finetune-stack needs at least one run")
    prepared = [prepare(run.hparams, "finetune", model=model_name, method=run.method) for run in runs]
    if any(run.method == "base" for run in runs):
        raise CatrecError("'base' trains nothing: it is never part of a stack")
    # The runs share their schedule, precision included (checked before any state is written).
    torch_device = configure(device, threads, prepared[0].precision)
    model, data = load_model_and_data(
        pretrained, data_dir, model_name=model_name, max_len=prepared[0].max_len, device=torch_device
    )
    _finetune_runs(
        model,
        data,
        list(zip(runs, prepared, strict=True)),
        dataset=dataset,
        model_name=model_name,
        data_dir=data_dir,
        pretrained=pretrained,
        device=torch_device,
        max_stack=max_stack,
    )


@dataclass(frozen=True)
class FinetuneRun:
    """One fine-tuning run of a stack: its method, ``--hparams`` and the files it reads and writes."""

    method: str
    hparams: Mapping[str, Any]
    cascade: Path | None
    checkpoint: Path
    curve: Path
    metrics: Path
    state_dir: Path

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> FinetuneRun:
        """A run of ``catrec finetune-stack --runs`` (an object with these fields; ``cascade`` optional)."""
        files = ("checkpoint", "curve", "metrics", "state_dir")
        fields = run_fields(
            value, ("method", "hparams", *files), ("cascade",), f"of method {value.get('method')!r}"
        )
        cascade = fields.get("cascade")
        return cls(
            fields["method"],
            fields["hparams"],
            None if cascade is None else Path(cascade),
            *(Path(fields[name]) for name in files),
        )


def _finetune_runs(
    pretrained_model: SequentialRecommender,
    data: SequenceData,
    members: list[tuple[FinetuneRun, FinetuneSettings]],
    *,
    dataset: str,
    model_name: str,
    data_dir: str | Path,
    pretrained: str | Path,
    device: torch.device,
    max_stack: int | None = None,
) -> None:
    """Train ``members`` (runs with their validated settings) from ``pretrained_model``, one stack."""
    resolved = schedules([settings for _, settings in members], device)
    configs = {config for config, _ in resolved}
    # Checked before any state is written: a refused stack leaves nothing behind.
    if len(configs) > 1:
        raise CatrecError(
            "the runs of a stack must share their schedule (seed, epochs, batch size, layout, precision, ...)"
        )
    (config,) = configs
    runs = []
    for (member, settings), (_, identity) in zip(members, resolved, strict=True):
        inputs = {**data_inputs(data_dir), "pretrained": Path(pretrained)}
        cascade_matrix = method_cascade(member.method, member.cascade, config.batch_size, data)
        if cascade_matrix is not None:
            inputs["cascade"] = Path(str(member.cascade))
        state = run_state(
            member.state_dir,
            stage="finetune",
            model=model_name,
            method=member.method,
            hparams=identity,
            inputs=inputs,
            metrics=member.metrics,
        )
        print(f"finetune {dataset}/{model_name} {member.method} seed {config.seed}: state {state.directory}")
        run = Run(
            model=copy.deepcopy(pretrained_model),
            loss=make_loss(member.method, settings, cascade_matrix, data),
            phase="finetune",
            curve_path=member.curve,
            state_dir=state.directory,
            epoch_offset=settings.epoch_offset,
            model_selection=settings.model_selection,
            label=member.method if len(members) > 1 else "",
        )
        runs.append((run, state.run_id))
    results = fit_runs([run for run, _ in runs], data, config, device=device, max_stack=max_stack)
    for (member, settings), (run, run_id), result in zip(members, runs, results, strict=True):
        save_model(member.checkpoint, run.model)
        write_metrics_json(
            member.metrics,
            dataset=dataset,
            model=model_name,
            method=member.method,
            seed=settings.seed,
            valid=result.valid,
            test=result.test,
            epsilon=settings.epsilon,
            selected_epoch=result.selected_epoch,
            run_id=run_id,
            engine=config.layout,
            capture=config.capture,
            device=device.type,
            precision=config.precision,
        )


def _declare_finetune(parser: argparse.ArgumentParser) -> None:
    add_training_args(parser)
    parser.add_argument("--method", required=True)
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument("--cascade", type=Path, help="cascade matrix (.pt), needed by adv_cas*")
    add_run_outputs(parser)


def _declare_finetune_stack(parser: argparse.ArgumentParser) -> None:
    add_stack_args(
        parser,
        "runs, each an object with method, hparams (as finetune's --hparams), cascade (adv_cas* only), "
        "checkpoint, curve, metrics and state_dir",
    )
    parser.add_argument("--pretrained", type=Path, required=True)


def _run_finetune_stack(args: argparse.Namespace) -> None:
    finetune_stack(**{**keywords(args), "runs": [FinetuneRun.from_json(run) for run in args.runs]})


COMMANDS = (
    Command(
        "finetune",
        "Fine-tune a pretrained model with one method (Eq. 4.6-4.10).",
        _declare_finetune,
        Command.calling(finetune),
    ),
    Command(
        "finetune-stack",
        "Fine-tune one pretrained model with several methods trained as one stack (padded layout).",
        _declare_finetune_stack,
        _run_finetune_stack,
    ),
)
