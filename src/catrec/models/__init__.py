"""Sequential recommenders: the shared interface and the factory.

Every model maps the sequence embeddings S_i of a user's (left-padded) history to one user representation
w_i per position (Eq. 3.3) and scores an item j by w_i^T e_j with the shared item embedding E (Eq. 3.4).
``encode`` takes S explicitly so that adversarial training and attacks can perturb S (Eq. 4.6).

Batches may be trimmed to the last L <= T columns (all-padding columns dropped); models index positions
from the right end (the last column is position T), so trimming and extra left padding never change outputs.

How a batch is laid out while a model computes (``catrec.models.layout``: ``Packed`` real positions or
``Padded`` fixed shapes) and which dropout masks it applies are arguments of ``encode``: a model has one
computation, the same at every real position in both layouts. Dropout is active exactly where ``encode`` is
given masks (training); ``forward``, evaluation and the attacks pass none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from catrec.errors import CatrecError
from catrec.io import load_torch_file, save_torch_file
from catrec.models.base import ModelConfig, SequentialRecommender
from catrec.models.gru4rec import GRU4Rec
from catrec.models.sasrec import SASRec
from catrec.vocabulary import MODEL_KEYS_OF

__all__ = ["ModelConfig", "SequentialRecommender", "build_model", "load_model", "save_model"]


def build_model(config: ModelConfig) -> SequentialRecommender:
    models: dict[str, type[SequentialRecommender]] = {"sasrec": SASRec, "gru4rec": GRU4Rec}
    if config.name not in models:
        raise ValueError(f"unknown model '{config.name}' (expected one of {sorted(models)})")
    unset = [key for key in MODEL_KEYS_OF[config.name] if getattr(config, key) is None]
    if unset:
        raise ValueError(f"model '{config.name}' needs {', '.join(unset)}")
    return models[config.name](config)


def check_finite_weights(weights: Mapping[str, Any], path: str | Path) -> None:
    """Refuse weights holding NaN or infinity (a damaged file, a diverged run), naming ``path`` and the
    weight: trained on, they give a NaN loss and NDCG 0, or an earlier epoch's results, without a word."""
    for name, value in weights.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise CatrecError(
                f"{path}: weight '{name}' holds NaN or infinite values (a damaged file or a diverged run); "
                "delete it and rerun"
            )


def save_model(path: str | Path, model: SequentialRecommender) -> None:
    save_torch_file(path, {"config": model.config.to_dict(), "state_dict": model.state_dict()})


def load_model(path: str | Path, device: torch.device | str) -> SequentialRecommender:
    """The model saved by ``save_model``, on ``device``, in eval mode."""
    payload = load_torch_file(path, map_location=device, keys=("config", "state_dict"))
    try:
        model = build_model(ModelConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CatrecError(f"{path}: not a model catrec saved ({reason})") from exc
    check_finite_weights(payload["state_dict"], path)
    return model.to(device).eval()
