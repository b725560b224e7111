"""Issue 19: a run's identity survives a rerun, and 14 probes of bad input, each pinned by a test.

Each test names its probe ("probe N" as numbered in the issue; "identity" for the byte-identity one).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from catrec.models import ModelConfig, build_model, save_model


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "catrec.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------- identity


def test_identity_same_model_saved_to_two_paths_gives_identical_bytes(tmp_path: Path) -> None:
    """Identity: torch named the zip's folder after the temporary path (pid, random suffix)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("sasrec", 30, 10, 8, 0.1, num_blocks=1, num_heads=1, layer_norm="pre"))
    save_model(tmp_path / "a" / "pretrain.pt", model)
    save_model(tmp_path / "b" / "adv_cas.pt", model)
    assert (tmp_path / "a" / "pretrain.pt").read_bytes() == (tmp_path / "b" / "adv_cas.pt").read_bytes()


# ------------------------------------------------------------------------------------- probe 1


def test_probe1_disk_full_during_a_model_write_is_one_line_naming_the_path(tmp_path: Path) -> None:
    """Probe 1: torch.save raises RuntimeError (not OSError) on a full disk; a file-size limit stands in."""
    target = tmp_path / "model.pt"
    target.write_bytes(b"earlier model")
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        import torch
        from catrec.errors import CatrecError
        from catrec.models import ModelConfig, build_model, save_model
        model = build_model(ModelConfig("gru4rec", 50000, 20, 32, 0.0, num_layers=1))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            save_model({str(target)!r}, model)
        except CatrecError as exc:
            print(exc)
            sys.exit(2)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and f"cannot write {target}" in lines[0]
    assert target.read_bytes() == b"earlier model"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]
