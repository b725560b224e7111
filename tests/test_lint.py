"""The code style gates of the project: ruff, snakefmt and snakemake --lint stay clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

BIN_DIR = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["snakefmt", "--check", "."],
        ["snakemake", "--lint", "--directory", "{tmp}", "--snakefile", "Snakefile"],
    ],
    ids=["ruff", "snakefmt", "snakemake-lint"],
)
def test_clean(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}"}
    command = [str(BIN_DIR / command[0]), *(arg.replace("{tmp}", str(tmp_path)) for arg in command[1:])]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    if "--lint" in command:
        assert "Congratulations" in result.stdout + result.stderr
