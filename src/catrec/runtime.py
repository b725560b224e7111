"""Where and how a run computes: the device, CPU threads, the training engine and seeds.

The device, threads and seeds never change a run's identity; the engine does (``resolve_engine``).
"""

from __future__ import annotations

import platform
import random

import numpy as np
import torch

from catrec.errors import CatrecError


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; an explicit 'cuda' without CUDA is an error naming the
    config key, raised here, where the job runs (a cluster's head node that plans the jobs has no GPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CatrecError(
            f"invalid config key 'device': '{name}' (--device), but CUDA is not available on "
            f"{platform.node() or 'this machine'}; use device: auto or cpu, or run the job on a GPU node"
        )
    return device


ENGINES = ("auto", "eager", "static")


def resolve_engine(engine: str, device: torch.device) -> str:
    """The engine ``train.engine`` names on ``device``: 'auto' -> 'static' on CUDA, 'eager' elsewhere.

    'eager' trims and packs each batch (few padded positions: the fast choice on a CPU); 'static' keeps one
    batch shape and everything on the device so that CUDA can replay a captured graph (``catrec.engine``).
    The two draw their random numbers differently, so the resolved name is part of a run's identity.
    """
    if engine not in ENGINES:
        raise CatrecError(f"unknown engine '{engine}' (expected one of {', '.join(ENGINES)})")
    if engine == "auto":
        return "static" if device.type == "cuda" else "eager"
    return engine


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


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def sampler_seed(seed: int) -> int:
    """A seed for the negative sampler, independent of the global torch stream seeded with ``seed``."""
    return _stream_seed(seed, 1)


def dropout_seed(seed: int) -> int:
    """A seed for a static run's dropout masks (``catrec.models.stack``), apart from the other streams."""
    return _stream_seed(seed, 2)


def noise_seed(seed: int) -> int:
    """A seed for a static run's level-1 noise: its own stream, so runs without level 1 never draw from
    the stream their masks come from (a stack draws noise for all its runs once any run uses it)."""
    return _stream_seed(seed, 3)
