"""Where a run computes: device resolution and the CPU threads a job may use."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from catrec.config import plans_gpu
from catrec.errors import CatrecError
from catrec.runtime import GPU_LOCK_DIR_ENV, configure, set_precision


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cuda_job_uses_its_threads(monkeypatch: pytest.MonkeyPatch, restore_threads: None) -> None:
    """A job on a GPU is held to --threads CPU threads, not torch's default of every core."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    target = 1 if torch.get_num_threads() > 1 else 2
    device = configure("auto", target)
    assert device.type == "cuda"
    assert torch.get_num_threads() == target


def test_cpu_job_uses_its_threads(restore_threads: None) -> None:
    target = 1 if torch.get_num_threads() > 1 else 2
    assert configure("cpu", target).type == "cpu"
    assert torch.get_num_threads() == target


@pytest.mark.parametrize(
    ("device", "cuda", "expected"),
    [("auto", True, True), ("auto", False, False), ("cuda", False, True), ("cpu", True, False)],
)
def test_plans_gpu(monkeypatch: pytest.MonkeyPatch, device: str, cuda: bool, expected: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert plans_gpu(device) is expected


def test_an_unknown_precision_is_refused_naming_it() -> None:
    with pytest.raises(CatrecError, match="unknown precision 'fp16'"):
        set_precision("fp16")


def two_mocked_gpus(directory: Path, locks: Path) -> dict[str, str]:
    """The environment of a job that sees two GPUs (torch mocked by a ``sitecustomize``; nothing runs on
    them) and takes its GPU slot under ``locks``, outside SLURM."""
    mock = directory / "two_gpus"
    mock.mkdir()
    (mock / "sitecustomize.py").write_text(
        "import torch\n"
        "torch.cuda.is_available = lambda: True\n"
        "torch.cuda.device_count = lambda: 2\n"
        "torch.cuda.set_device = lambda device: None\n"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    return {**environment, "PYTHONPATH": str(mock), GPU_LOCK_DIR_ENV: str(locks)}


# A model job's start (catrec.runtime.configure with --device auto), then held until its stdin closes.
JOB = "import sys\nfrom catrec.runtime import configure\nprint('job on', configure('auto', 1), flush=True)\n"
JOB += "sys.stdin.read()\n"


class Job:
    """A running ``JOB`` whose output lines are read as they come."""

    def __init__(self, environment: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", JOB],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def line(self, prefix: str) -> str:
        """The next output line that starts with ``prefix`` (a minute at most)."""
        deadline = time.monotonic() + 60
        while (left := deadline - time.monotonic()) > 0:
            line = self.lines.get(timeout=left).strip()
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line '{prefix}...' from the job")

    def end(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    """The ``Job``s a test starts, killed at its end if still running (a failed test leaves none behind)."""
    started: list[Job] = []
    yield started
    for job in started:
        job.process.kill()
        job.process.wait()


def test_concurrent_jobs_take_a_gpu_each_and_a_third_waits(tmp_path: Path, jobs: list[Job]) -> None:
    """Two model jobs at once on a machine with two GPUs (``--resources gpu=2``) compute on different GPUs;
    a third started while both hold theirs waits, saying so, and takes the first one freed."""
    environment = two_mocked_gpus(tmp_path, tmp_path / "locks")
    jobs.append(first := Job(environment))
    first_device = first.line("job on")
    jobs.append(second := Job(environment))
    second_device = second.line("job on")
    assert {first_device, second_device} == {"job on cuda:0", "job on cuda:1"}
    jobs.append(third := Job(environment))
    waiting = f"GPU: all 2 held by other jobs (locks in {tmp_path / 'locks'}); waiting for one"
    assert third.line("GPU:") == waiting
    first.end()
    assert third.line("job on") == first_device
    second.end()
    third.end()


def test_a_job_under_slurm_or_naming_its_gpu_takes_no_slot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, restore_threads: None
) -> None:
    """SLURM gives a job its GPU (CUDA_VISIBLE_DEVICES): the job keeps it, as one that names a GPU does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv(GPU_LOCK_DIR_ENV, str(tmp_path / "locks"))
    assert configure("cuda:1", 1) == torch.device("cuda", 1)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert configure("auto", 1) == torch.device("cuda")
    assert not (tmp_path / "locks").exists()
