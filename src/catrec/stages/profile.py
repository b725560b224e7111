"""Stage ``profile``: the perturbation profile (``catrec.profile``) of one fine-tuned model; its tidy CSV.

Post hoc: the fine-tuned weights are loaded and the run's loss is rebuilt exactly as ``catrec finetune``
builds it (same ``--hparams``, same cascade file), then evaluated on a fixed number of training batches drawn
as in training (``batch_size``, ``bucket_by_length`` and layout of the run; its generators seeded from the
run's seed, so every method of a seed sees the same batches). Nothing is trained.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catrec.adversarial import make_loss
from catrec.commands import Command, add_training_args, positive
from catrec.config import resolve_layout
from catrec.errors import CatrecError
from catrec.io import atomic_path
from catrec.profile import input_space_perturbations, position_profile
from catrec.runtime import configure
from catrec.stages.common import load_model_and_data, method_cascade, prepare
from catrec.training import Training
from catrec.vocabulary import PROFILE_COLUMNS, SEQUENCE_METHODS


def write_profile(
    *,
    data_dir: str | Path,
    hparams: Mapping[str, Any],
    dataset: str,
    model_name: str,
    method: str,
    checkpoint: str | Path,
    cascade: str | Path | None,
    output: str | Path,
    batches: int = 20,
    device: str = "auto",
    threads: int = 1,
) -> None:
    """Profile the perturbation ``method`` adds to S for the model in ``checkpoint``; write the tidy CSV."""
    if method not in SEQUENCE_METHODS:
        raise CatrecError(
            f"method '{method}' does not perturb the sequence input (one of {', '.join(SEQUENCE_METHODS)})"
        )
    if batches < 1:
        raise CatrecError(f"--batches must be at least 1, got {batches}")
    settings = prepare(hparams, "finetune", model=model_name, method=method)
    torch_device = configure(device, threads)
    # Never captured: nothing is trained, and the perturbation is read after each batch.
    config = settings.train_config(
        *resolve_layout(settings.layout, False, cuda=torch_device.type == "cuda", runs=1)
    )
    model, data = load_model_and_data(
        checkpoint, data_dir, model_name=model_name, max_len=settings.max_len, device=torch_device
    )
    cascade_matrix = method_cascade(method, cascade, config.batch_size, data)
    loss = make_loss(method, settings, cascade_matrix, data)
    training = Training([model], data, [loss], [config.seed], config, torch_device)
    measured = list(input_space_perturbations(training, batches))
    rows = position_profile([p for p, _ in measured], [real for _, real in measured])
    labels = {"dataset": dataset, "model": model_name, "method": method}
    with atomic_path(output) as temp, open(temp, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=PROFILE_COLUMNS)
        writer.writeheader()
        writer.writerows({**labels, **row} for row in rows)
    print(
        f"profile {dataset}/{model_name} {method}: {len(measured)} batches, "
        f"mean total norm {rows[0]['total_norm']:.6g}"
    )


def _declare_profile(parser: argparse.ArgumentParser) -> None:
    add_training_args(parser)
    parser.add_argument(
        "--method", required=True, help="a method that perturbs S (adv_seq, adv_global, adv_cas*)"
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="the fine-tuned model (.pt)")
    parser.add_argument("--cascade", type=Path, help="cascade matrix (.pt) the run used, needed by adv_cas*")
    parser.add_argument(
        "--batches", type=positive(int), default=20, help="training batches to measure (default: 20)"
    )
    parser.add_argument("--output", type=Path, required=True, help="tidy CSV of the profile")


COMMANDS = (
    Command(
        "profile",
        "Perturbation profile of a fine-tuned model: the norm its method adds to S by position from the end "
        "(post hoc, nothing is trained).",
        _declare_profile,
        Command.calling(write_profile),
    ),
)
