"""Where a run computes: device resolution and the CPU threads a job may use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from catrec.config import plans_gpu
from catrec.errors import CatrecError
from catrec.runtime import configure, restore_cuda_rng, set_precision


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


def test_cuda_rng_is_restored_onto_the_run_gpu_with_fewer_gpus_visible(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkpoint written where two GPUs were visible resumes where one is: the run's GPU gets its state."""
    restored = []

    def set_rng_state(state: torch.Tensor, device: int | str | torch.device = "cuda") -> None:
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise IndexError(f"no GPU {index}")  # as torch.cuda.default_generators[index]
        restored.append((state, index))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
    saved = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    restore_cuda_rng(saved, torch.device("cuda", 0))
    assert restored == [(saved[0], 0)]
    restore_cuda_rng(saved, torch.device("cpu"))  # a CPU run draws nothing from CUDA's generators
    assert len(restored) == 1
