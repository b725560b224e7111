"""What the training stages share: reading their settings and data, and the metrics JSON they write (with
the provenance of the code that computed it: ``catrec.provenance.code_provenance``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from catrec.adversarial import check_cascade
from catrec.config import resolve_layout
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.io import atomic_path, load_torch_file
from catrec.models import SequentialRecommender, load_model
from catrec.provenance import code_provenance
from catrec.runtime import seed_everything
from catrec.settings import SETTINGS, Settings
from catrec.vocabulary import CASCADE_TERMS_OF, METRICS


def prepare(hparams: Mapping[str, Any], stage: str, *, model: str, method: str | None = None) -> Settings:
    """The stage's settings from its ``--hparams`` (exactly its keys, the config's rules); every generator
    seeded with the run's seed."""
    settings = SETTINGS[stage].from_json(hparams, model=model, method=method)
    seed = getattr(settings, "seed", None)
    if seed is not None:
        seed_everything(seed)
    return settings


def schedules(runs: Sequence[Any], device: torch.device) -> list[tuple[Any, dict[str, Any]]]:
    """Each of a stack's ``runs`` (its settings): its schedule, a ``TrainConfig`` with the layout and capture
    resolved for the stack on ``device`` (``resolve_layout``), and the settings its identity is made of
    (``catrec.state.run_state``): its ``--hparams`` with that layout and capture."""
    resolved = []
    for settings in runs:
        layout = resolve_layout(settings.layout, settings.capture, cuda=device.type == "cuda", runs=len(runs))
        config = settings.train_config(*layout)
        resolved.append((config, {**settings.hparams(), "layout": config.layout, "capture": config.capture}))
    return resolved


def load_model_and_data(
    checkpoint: str | Path, data_dir: str | Path, *, model_name: str, max_len: int, device: torch.device
) -> tuple[SequentialRecommender, SequenceData]:
    """A saved model and the dataset it is run on, checked against each other and the expected model."""
    model = load_model(checkpoint, device)
    if model.config.name != model_name or model.config.max_len != max_len:
        raise CatrecError(
            f"{checkpoint} holds {model.config.name} with max_len {model.config.max_len}; "
            f"expected {model_name} with max_len {max_len}"
        )
    data = SequenceData.from_dir(data_dir, max_len)
    if data.num_items != model.config.num_items:
        raise CatrecError(
            f"{checkpoint}: model has {model.config.num_items} items, {data_dir} has {data.num_items}"
        )
    return model, data


def method_cascade(
    method: str, path: str | Path | None, batch_size: int, data: SequenceData
) -> torch.Tensor | None:
    """The cascade matrix ``method`` needs (None for methods without one), checked against the training."""
    if method not in CASCADE_TERMS_OF:
        return None
    if path is None:
        raise CatrecError(f"method '{method}' needs a cascade matrix (--cascade)")
    path = Path(path)
    if not path.exists():
        raise CatrecError(f"cascade file {path} (for method '{method}') does not exist")
    payload = load_torch_file(path, keys=("cascade", "terms", "batch_size"))
    expected = {"terms": CASCADE_TERMS_OF[method], "batch_size": batch_size}
    for key, value in expected.items():
        if payload[key] != value:
            raise CatrecError(f"{path} has {key}={payload[key]!r}; method '{method}' needs {key}={value!r}")
    check_cascade(payload["cascade"], data, source=str(path))
    return payload["cascade"]


def run_fields(
    value: Mapping[str, Any], required: Sequence[str], optional: Sequence[str], name: str
) -> dict[str, Any]:
    """One run of a stack's ``--runs`` (``value``, a JSON object), checked to hold every ``required`` key and
    no key outside ``required`` and ``optional``; ``name`` names the run in the error."""
    missing = [key for key in required if key not in value]
    unknown = sorted(set(value) - set(required) - set(optional))
    if missing or unknown:
        problem = f"lacks {', '.join(missing)}" if missing else f"has unknown key(s) {', '.join(unknown)}"
        raise CatrecError(f"--runs: the run {name} {problem}")
    return dict(value)


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
        **code_provenance(),
    }
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(record, indent=2) + "\n")
