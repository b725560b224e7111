"""Catalog conventions: every config key documented, a licence, and the Snakefile's header commands run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT

BIN_DIR = Path(sys.executable).parent
SCHEMA = yaml.safe_load((REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def schema_keys(node: dict[str, Any] = SCHEMA, prefix: str = "") -> Iterator[str]:
    """Every key path of the schema, ``datasets.<name>.format`` for the keys under a free name."""
    node = _resolve(node)
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        yield from schema_keys(child, path)
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_keys(node["additionalProperties"], f"{prefix}.<name>")


def documented_keys() -> list[str]:
    """The first cells of the rows of config/README.md's tables headed ``| key |``."""
    keys: list[str] = []
    in_key_table = False
    for line in (REPO_ROOT / "config" / "README.md").read_text().splitlines():
        if not line.startswith("|"):
            in_key_table = False
        elif line.startswith("| key |"):
            in_key_table = True
        elif in_key_table and (cell := re.match(r"\| `([^`]+)` \|", line)):
            keys.append(cell.group(1))
    return keys


def test_config_readme_documents_every_schema_key_and_no_other() -> None:
    keys, documented = list(schema_keys()), documented_keys()
    assert len(keys) > 60
    missing = [key for key in keys if key not in documented]
    assert not missing, f"config/README.md lacks {missing}"
    unknown = [key for key in documented if key not in keys]
    assert not unknown, f"config/README.md documents keys the schema does not have: {unknown}"
    assert len(documented) == len(set(documented)), "a key is documented twice"


def test_license_is_mit() -> None:
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 catrec authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def header_commands() -> list[str]:
    """The example commands of the Snakefile's header comment."""
    commands = []
    for line in (REPO_ROOT / "Snakefile").read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#   snakemake "):
            # Two or more spaces separate a command from its description.
            commands.append(re.split(r"\s{2,}", line[4:])[0])
    return commands


def test_snakefile_header_lists_commands() -> None:
    assert len(header_commands()) >= 3


@pytest.mark.parametrize("command", header_commands())
def test_snakefile_header_command_runs_verbatim(command: str, tmp_path: Path) -> None:
    argv = shlex.split(command)
    dry = "-n" in argv or "--dry-run" in argv
    report = "--report" in argv
    # A real run needs --cores (Snakemake refuses to start without it); we only plan it here. A report runs
    # no job and needs none.
    cores = "--cores" in argv or "-c" in argv
    assert dry or report or cores, f"'{command}' would stop: cores have to be specified"
    env = {**os.environ, "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}"}
    argv = [str(BIN_DIR / "snakemake"), *argv[1:], "--directory", str(tmp_path), "--snakefile", "Snakefile"]
    if not (dry or report):
        argv.append("--dry-run")
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    if report:
        # In an empty directory the command is accepted and stops at the first result it would report
        # (tests/test_workflow.py builds the report of a finished run).
        assert "marked for report but does not exist" in output, output
        return
    assert result.returncode == 0, output
