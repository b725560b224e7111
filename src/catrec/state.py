"""Resumable-run state keyed by the run's identity, so a resume only ever continues the same run.

A run's identity is everything that determines its result: the stage, model and method, every setting the
stage reads (its ``--hparams``), the content (sha256) of each input file (the sequences, the pretrained
weights, the cascade matrix) and the code (``catrec.provenance.code_digest``: a forced rerun after a code
change trains afresh, a rerun with unchanged code resumes). Its state lives in
``<state root>/<digest of the identity>/``; a changed setting, input or code gives another directory, so it
starts fresh instead of resuming a foreign run, and the old state is left alone until ``catrec prune-state``
removes what no result uses any more.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catrec.commands import Command
from catrec.errors import CatrecError
from catrec.io import read_json, write_text_atomically
from catrec.provenance import code_digest, file_digest

IDENTITY_FILE = "identity.json"
# Settings that change how often a run is saved, not what it computes.
_NOT_IDENTITY = ("checkpoint_every",)
# Every run computed in float32 before `precision` was a setting (no GPU had trained a run to its end): its
# runs keep the identity they had.
_IMPLIED = {"precision": "fp32"}


@dataclass(frozen=True)
class RunState:
    """A run's state directory and its identity digest (recorded in the run's metrics as ``run_id``)."""

    directory: Path
    run_id: str


def run_state(
    root: str | Path,
    *,
    stage: str,
    model: str,
    method: str,
    hparams: Mapping[str, Any],
    inputs: Mapping[str, str | Path],
    metrics: str | Path,
) -> RunState:
    """The state directory of the run with this identity under ``root`` (created, with identity.json)."""
    identity = {
        "stage": stage,
        "model": model,
        "method": method,
        "hparams": {
            key: value
            for key, value in hparams.items()
            if key not in _NOT_IDENTITY and not (key in _IMPLIED and value == _IMPLIED[key])
        },
        "inputs": {name: file_digest(path) for name, path in sorted(inputs.items())},
        "code": code_digest(),
    }
    run_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    directory = Path(root) / run_id
    record = directory / IDENTITY_FILE
    if not record.exists():
        # The metrics path lets prune-state tell whether a newer run has replaced this one's results.
        # Absolute, so that prune-state finds it from any working directory.
        metrics_path = str(Path(metrics).resolve())
        write_text_atomically(record, json.dumps({**identity, "metrics": metrics_path}, indent=2) + "\n")
    return RunState(directory=directory, run_id=run_id)


def prune_state(root: str | Path, *, finished: bool = False, dry_run: bool = False) -> list[Path]:
    """Remove state no current result uses; return the directories removed (or, dry, to be removed).

    A state directory is unused when its run's metrics file now holds another run's results (a setting, an
    input or the code changed since); with ``finished``, also when it holds this run's (the run is complete;
    its state would only serve rerunning it identically). State of runs without results yet (running,
    killed) is kept.
    """
    if not Path(root).is_dir():
        raise CatrecError(f"{root}: no such state directory")
    removed = []
    for record in sorted(Path(root).rglob(IDENTITY_FILE)):
        directory = record.parent
        recorded = read_json(record, ["metrics"])["metrics"]
        if not isinstance(recorded, str):
            raise CatrecError(f"{record}: key 'metrics' must be a path (a string), got {recorded!r}")
        metrics = Path(recorded)
        if not metrics.exists():
            continue
        current = read_json(metrics).get("run_id")
        if current != directory.name or finished:
            removed.append(directory)
            if not dry_run:
                shutil.rmtree(directory)
    return removed


def _declare_prune_state(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="state_dir", type=Path, help="state root, e.g. results/state")
    parser.add_argument("--finished", action="store_true", help="also remove the state of finished runs")
    parser.add_argument("--dry-run", action="store_true", help="only list what would be removed")


def _run_prune_state(args: argparse.Namespace) -> None:
    removed = prune_state(args.root, finished=args.finished, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for directory in removed:
        print(f"{verb} {directory}")
    print(f"{verb} {len(removed)} state director{'y' if len(removed) == 1 else 'ies'}")


COMMANDS = (
    Command(
        "prune-state",
        "Remove resumable state that no result uses any more (runs whose results a newer run replaced).",
        _declare_prune_state,
        _run_prune_state,
    ),
)
