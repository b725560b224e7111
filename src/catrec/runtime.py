"""Where and how a run computes: the device, CPU threads, float32 precision and seeds.

The device, threads and seeds never change a run's identity; the precision (``train.precision``) and the
layout (``catrec.config.resolve_layout``) do.
"""

from __future__ import annotations

import fcntl
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import IO

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


PRECISIONS = ("fp32", "tf32")
# The paper's (the reference SASRec code trains in float32); what every job without the setting computes in.
DEFAULT_PRECISION = "fp32"


def set_precision(precision: str) -> None:
    """Compute float32 matmuls (cuBLAS) and cuDNN (GRU4Rec's GRU) in IEEE float32 ('fp32') or let both
    round their inputs to TensorFloat-32 ('tf32', on GPUs that have it; a CPU computes float32 either way).

    Both flags are set either way: torch's defaults differ (matmuls float32, cuDNN TF32), which left
    GRU4Rec in TF32 and SASRec in float32. The ``allow_tf32`` flags exist in every torch since 1.7; the
    newer ``fp32_precision`` settings must not be mixed with them (torch refuses a mix), so they are not used.
    """
    if precision not in PRECISIONS:
        raise CatrecError(f"unknown precision '{precision}' (expected one of {', '.join(PRECISIONS)})")
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


def configure(device_name: str, threads: int, precision: str = DEFAULT_PRECISION) -> torch.device:
    """The device to compute on, with torch limited to ``threads`` CPU threads on a GPU too, computing
    float32 at ``precision`` (``set_precision``).

    A CUDA job left at torch's default takes every host core, so jobs sharing a machine (or a SLURM node)
    fight over them; the rule's ``threads`` is what the scheduler reserved. On a machine with several GPUs
    a job that names none takes one of its own (``claim_gpu``).
    """
    if threads < 1:
        raise CatrecError(f"--threads must be at least 1, got {threads}")
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = claim_gpu()
    torch.set_num_threads(threads)
    set_precision(precision)
    return device


# Where the slot locks of the GPUs live: one directory per user, shared by every job of the machine.
GPU_LOCK_DIR_ENV = "CATREC_GPU_LOCK_DIR"
# Seconds between two looks for a free GPU while every one is taken.
_GPU_POLL_SECONDS = 1.0
# The GPU this process took and its lock file, open (so locked) until the process ends.
_claimed_gpu: tuple[int, IO[str]] | None = None


def gpu_lock_dir() -> Path:
    """``$CATREC_GPU_LOCK_DIR``, else ``catrec-gpus-<uid>`` under the temp dir."""
    default = Path(tempfile.gettempdir()) / f"catrec-gpus-{os.getuid()}"
    return Path(os.environ.get(GPU_LOCK_DIR_ENV, default))


def claim_gpu() -> torch.device:
    """The GPU this job computes on: with one GPU visible, or under SLURM, 'cuda' (the current device:
    SLURM's ``CUDA_VISIBLE_DEVICES`` already gave the job its own); with several, the first GPU no other
    job of this user holds, taken for the life of the process (``--resources gpu=N``: N jobs on N GPUs).

    A GPU is held by an exclusive ``flock`` on ``slot<i>.lock`` in ``gpu_lock_dir()``, released by the
    kernel when the process ends, however it ends. While every GPU is held the job waits for one (a line in
    its log says so): more jobs than GPUs run one after another instead of sharing a GPU.
    """
    global _claimed_gpu
    count = torch.cuda.device_count()
    if count < 2 or "SLURM_JOB_ID" in os.environ:
        return torch.device("cuda")
    if _claimed_gpu is not None:
        return torch.device("cuda", _claimed_gpu[0])
    directory = gpu_lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        for index in range(count):
            handle = open(directory / f"slot{index}.lock", "a")  # noqa: SIM115 - held until the process ends
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _claimed_gpu = (index, handle)
            torch.cuda.set_device(index)  # the default of what names no device (streams, graph captures)
            print(f"GPU: cuda:{index} of {count} (held by {directory / f'slot{index}.lock'})", flush=True)
            return torch.device("cuda", index)
        if not waiting:
            print(f"GPU: all {count} held by other jobs (locks in {directory}); waiting for one", flush=True)
            waiting = True
        time.sleep(_GPU_POLL_SECONDS)


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
    """A seed for a run's dropout masks (``catrec.models.stack``), apart from the other streams."""
    return _stream_seed(seed, 2)


def noise_seed(seed: int) -> int:
    """A seed for a run's level-1 noise: its own stream, so runs without level 1 never draw from
    the stream their masks come from (a stack draws noise for all its runs once any run uses it)."""
    return _stream_seed(seed, 3)
