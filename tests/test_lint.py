"""The code style gates of the project: ruff, snakefmt and snakemake --lint stay clean."""

from __future__ import annotations

import ast
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


MAX_FUNCTION_LINES = 80


def test_no_function_of_the_package_is_longer_than_80_lines() -> None:
    """A function a reader must hold in mind at once fits a screen; longer ones are split by what they do."""
    long = []
    for path in sorted((REPO_ROOT / "src" / "catrec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1 if node.end_lineno else 0
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
