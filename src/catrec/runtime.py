"""Where and how a run computes: the device, CPU threads and seeds. None of these change a run's identity."""

from __future__ import annotations

import random

import numpy as np
import torch

from catrec.errors import CatrecError


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; an explicit 'cuda' without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CatrecError(f"device '{name}' requested but CUDA is not available")
    return device


def configure(device_name: str, threads: int) -> torch.device:
    """The device to compute on, with torch limited to ``threads`` CPU threads on a GPU too.

    A CUDA job left at torch's default takes every host core, so jobs sharing a machine (or a SLURM node)
    fight over them; the rule's ``threads`` is what the scheduler reserved.
    """
    if threads < 1:
        raise CatrecError(f"--threads must be at least 1, got {threads}")
    device = resolve_device(device_name)
    torch.set_num_threads(threads)
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sampler_seed(seed: int) -> int:
    """A seed for the negative sampler, independent of the global torch stream seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
