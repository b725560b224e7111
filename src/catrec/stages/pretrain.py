"""Stage ``pretrain``: train a base model with the BCE loss (Eq. 3.5); write weights, curve and metrics.

``pretrain-stack`` trains the pretrainings of several seeds of one dataset x model at once
(``catrec.models.stack``), each run resuming and writing exactly what ``pretrain`` would for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catrec.adversarial import CLEAN_LOSS
from catrec.commands import Command, add_run_outputs, add_stack_args, add_training_args, keywords
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.models import build_model, save_model
from catrec.runtime import configure, seed_everything
from catrec.stages.common import (
    data_inputs,
    prepare,
    run_fields,
    schedules,
    write_metrics_json,
)
from catrec.state import run_state
from catrec.trainer import Run, fit_runs

RUN_FILES = ("checkpoint", "curve", "metrics", "state_dir")


@dataclass(frozen=True)
class PretrainRun:
    """One pretraining of a stack: its ``--hparams`` (as ``pretrain``'s) and the files it writes."""

    hparams: Mapping[str, Any]
    checkpoint: Path
    curve: Path
    metrics: Path
    state_dir: Path

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> PretrainRun:
        """A run of ``catrec pretrain-stack --runs`` (an object with these fields)."""
        hparams = value.get("hparams")
        seed = hparams.get("seed") if isinstance(hparams, Mapping) else None
        fields = run_fields(value, ("hparams", *RUN_FILES), (), f"of seed {seed!r}")
        return cls(fields["hparams"], *(Path(fields[name]) for name in RUN_FILES))


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
    run = PretrainRun(hparams, Path(checkpoint), Path(curve), Path(metrics), Path(state_dir))
    pretrain_stack(
        data_dir=data_dir,
        dataset=dataset,
        model_name=model_name,
        runs=[run],
        device=device,
        threads=threads,
    )


def pretrain_stack(
    *,
    data_dir: str | Path,
    dataset: str,
    model_name: str,
    runs: Sequence[PretrainRun],
    device: str = "auto",
    threads: int = 1,
    max_stack: int | None = None,
) -> None:
    """Pretrain ``model_name`` once per run, the runs trained as one stack (or consecutive stacks of at
    most ``max_stack``): runs of distinct seeds and otherwise the same settings, in the padded layout
    where there is more than one. Each run resumes its own state and writes what ``pretrain`` writes."""
    if not runs:
        raise CatrecError("pretrain-stack needs at least one run")
    prepared = [prepare(run.hparams, "pretrain", model=model_name) for run in runs]
    torch_device = configure(device, threads, prepared[0].precision)  # shared: checked below
    configs, identities = zip(*schedules(prepared, torch_device), strict=True)
    seeds = [settings.seed for settings in prepared]
    # Checked before any state is written: a refused stack leaves nothing behind.
    if len(set(seeds)) != len(seeds):
        raise CatrecError(f"the runs of a pretraining stack need distinct seeds, not {seeds}")
    if any({**values, "seed": seeds[0]} != identities[0] for values in identities):
        raise CatrecError("the runs of a pretraining stack must share all their settings but the seed")
    config = configs[0]
    data = SequenceData.from_dir(data_dir, prepared[0].max_len)
    members = []
    for member, settings, values in zip(runs, prepared, identities, strict=True):
        state = run_state(
            member.state_dir,
            stage="pretrain",
            model=model_name,
            method="pretrain",
            hparams=values,
            inputs=data_inputs(data_dir),
            metrics=member.metrics,
        )
        # Each run's initial weights are those of the run alone: drawn from its own seed.
        seed_everything(settings.seed)
        model = build_model(settings.model_config(data.num_items)).to(torch_device)
        parameters = sum(p.numel() for p in model.parameters())
        print(
            f"pretrain {dataset}/{model_name} seed {settings.seed}: device {torch_device}, "
            f"{data.num_users} users, {data.num_items} items, T={settings.max_len}, {parameters} "
            f"parameters, {config.epochs} epochs, layout {config.layout}"
            f"{' captured' if config.capture else ''}, precision {config.precision}, "
            f"state {state.directory}"
        )
        run = Run(
            model=model,
            loss=CLEAN_LOSS,
            phase="pretrain",
            curve_path=member.curve,
            state_dir=state.directory,
            label=f"seed {settings.seed}" if len(runs) > 1 else "",
            seed=settings.seed,
        )
        members.append((member, run, state.run_id))
    results = fit_runs([run for _, run, _ in members], data, config, device=torch_device, max_stack=max_stack)
    for (member, run, run_id), seed, result in zip(members, seeds, results, strict=True):
        if result.epochs_trained:
            print(
                f"pretrain {dataset}/{model_name} seed {seed}: "
                f"{result.train_seconds / result.epochs_trained:.2f} s/epoch"
            )
        save_model(member.checkpoint, run.model)
        write_metrics_json(
            member.metrics,
            dataset=dataset,
            model=model_name,
            method="pretrain",
            seed=seed,
            valid=result.valid,
            test=result.test,
            run_id=run_id,
            engine=config.layout,
            capture=config.capture,
            device=torch_device.type,
            precision=config.precision,
        )


def _declare_pretrain(parser: argparse.ArgumentParser) -> None:
    add_training_args(parser)
    add_run_outputs(parser)


def _declare_pretrain_stack(parser: argparse.ArgumentParser) -> None:
    add_stack_args(
        parser,
        "runs, each an object with hparams (as pretrain's --hparams; the runs differ in seed alone), "
        "checkpoint, curve, metrics and state_dir",
    )


def _run_pretrain_stack(args: argparse.Namespace) -> None:
    pretrain_stack(**{**keywords(args), "runs": [PretrainRun.from_json(run) for run in args.runs]})


COMMANDS = (
    Command(
        "pretrain",
        "Train a base model with the BCE loss of Eq. 3.5 (resumable).",
        _declare_pretrain,
        Command.calling(pretrain),
    ),
    Command(
        "pretrain-stack",
        "Pretrain one model for several seeds trained as one stack (padded layout).",
        _declare_pretrain_stack,
        _run_pretrain_stack,
    ),
)
