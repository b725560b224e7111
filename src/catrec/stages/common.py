"""What the training stages share: reading their settings and data, and the metrics JSON they write."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catrec.config import read_hparams
from catrec.io import atomic_path
from catrec.runtime import seed_everything
from catrec.vocabulary import METRICS


def prepare(
    hparams: Mapping[str, Any], stage: str, *, model: str, method: str | None = None
) -> dict[str, Any]:
    """Validate a stage's ``--hparams`` (exactly its keys, the config's rules) and seed every generator."""
    values = read_hparams(hparams, stage, model=model, method=method)
    if "seed" in values:
        seed_everything(values["seed"])
    return values


def data_inputs(data_dir: str | Path) -> dict[str, Path]:
    """The files of a preprocessed dataset that a run's identity covers."""
    return {name: Path(data_dir) / name for name in ("sequences.txt", "stats.json")}


def write_metrics_json(
    path: str | Path,
    *,
    dataset: str,
    model: str,
    method: str,
    seed: int,
    valid: Mapping[str, float],
    test: Mapping[str, float],
    **extra: Any,
) -> None:
    record = {
        "dataset": dataset,
        "model": model,
        "method": method,
        "seed": seed,
        "valid": {key: valid[key] for key in METRICS},
        "test": {key: test[key] for key in METRICS},
        **extra,
    }
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(record, indent=2) + "\n")
