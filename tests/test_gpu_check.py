"""`make gpu-check` rehearsed on a bare copy of a lent GPU machine, on the CPU (issue 29).

The GPU machine gets the repository's files and the carried `.gpu/` (no .venv, no ../shared), has a `python3`
holding only its image's packages (bench/gpu_image_packages.txt: no snakemake, jsonschema or mutmut), no
`python` on PATH and no package registry. Here that machine is built from this .venv: an interpreter whose
site-packages link only the image's packages (torch: the pinned CPU wheel standing in for its CUDA build), a
copy of the working tree's files, and `make gpu-prepare`'s folder for this Python.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from conftest import BEAUTY_PATH, REPO_ROOT, require_shared

pytestmark = pytest.mark.slow
CHECKS = ("nvidia-smi", "install", "pytest-gpu", "train_speed", "snakemake", "paper_cost")
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def gpu_prepare() -> ModuleType:
    """bench/gpu_prepare.py as a module (bench/ is no package)."""
    spec = importlib.util.spec_from_file_location("gpu_prepare", REPO_ROOT / "bench" / "gpu_prepare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_packages() -> set[str]:
    lines = (REPO_ROOT / "bench" / "gpu_image_packages.txt").read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def image_interpreter(root: Path) -> Path:
    """A venv whose site-packages hold (as links into this .venv) only the GPU image's packages."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{PYTHON_VERSION}" / "site-packages"
    image = image_packages()
    for distribution in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", distribution.metadata["Name"]).lower()
        if name not in image:
            continue
        source = Path(str(distribution.locate_file("")))
        tops = {Path(str(file)).parts[0] for file in distribution.files or []}
        for top in tops - {".."}:
            if (source / top).exists() and not (site / top).exists():
                (site / top).symlink_to(source / top)
    return venv / "bin" / "python3"


def bare_path(bin_dir: Path) -> str:
    """PATH as on the GPU machine: `python3` (``bin_dir``) but no `python`."""
    kept = [entry for entry in os.environ["PATH"].split(os.pathsep) if not (Path(entry) / "python").exists()]
    return os.pathsep.join([str(bin_dir), *kept])


@pytest.fixture(scope="module")
def gpu_machine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the bare copy, its environment): tracked and unignored files, `.gpu/` for this Python, no .venv."""
    require_shared(BEAUTY_PATH)
    root = tmp_path_factory.mktemp("gpu-machine")
    copy = root / "repo"
    for source in gpu_prepare().travelling_files():
        target = copy / source.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    prepared = subprocess.run(
        ["make", "gpu-prepare", f"GPU_DIR={root / 'gpu'}", f"GPU_PYTHON_VERSION={PYTHON_VERSION}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    shutil.copytree(root / "gpu", copy / ".gpu")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    interpreter = image_interpreter(root)
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{interpreter}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "CATREC_SLURM_DIR")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env["PATH"] = bare_path(bin_dir)
    return copy, env


def test_the_bare_machine_lacks_what_the_gpu_machine_lacks(gpu_machine: tuple[Path, dict[str, str]]) -> None:
    copy, env = gpu_machine
    assert shutil.which("python", path=env["PATH"]) is None
    assert not (copy / ".venv").exists() and not (copy.parent / "shared").exists()
    for module, present in [("torch", True), ("yaml", True), ("snakemake", False), ("jsonschema", False)]:
        found = subprocess.run(["python3", "-c", f"import {module}"], env=env, capture_output=True)
        assert (found.returncode == 0) == present, module
    found = subprocess.run(["python3", "-c", "import mutmut"], env=env, capture_output=True)
    assert found.returncode != 0


def test_gpu_check_runs_to_the_end_on_the_bare_copy(
    gpu_machine: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """make gpu-check DEVICE=cpu: exit 0, a file per check, an exit-0 summary line each, the run's metrics."""
    copy, env = gpu_machine
    out = tmp_path / "out"
    result = subprocess.run(
        ["make", "gpu-check", "DEVICE=cpu", "SCALE=ci", f"OUT={out}"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else ""
    outputs = {path.name: path.read_text()[-2500:] for path in out.glob("*.txt")}
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}\n{outputs}"
    lines = summary.splitlines()
    assert [line.split()[0] for line in lines] == list(CHECKS)
    assert all(line.split()[1:3] == ["exit", "0"] for line in lines), summary
    assert {f"{check}.txt" for check in CHECKS} | {"paper_cost.json"} <= {path.name for path in out.iterdir()}
    assert "snakemake 9.27.1" in (out / "install.txt").read_text()  # from .gpu/, not from the machine
    # train_speed's table holds the step's achieved GFLOP/s against the measured matmul peak (issue 31).
    speed = (out / "train_speed.txt").read_text()
    assert "random step GFLOP/s | of matmul peak |" in speed and "| beauty | sasrec |" in speed
    log = (out / "snakemake.txt").read_text()
    metrics = re.search(
        r"^== \S+/metrics/beauty/sasrec/seed1/adv_cas/eps10\.json\n(.*?)(?=^== |\Z)", log, re.M | re.S
    )
    assert metrics, log[-3000:]
    assert json.loads(metrics.group(1))["test"]["ndcg@10"] > 0
    assert json.loads((out / "paper_cost.json").read_text())["datasets"] == {"beauty": "real"}


def test_gpu_check_stops_each_check_at_its_limit(
    gpu_machine: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A check past its limit is stopped (exit 124) and the next ones still run: the script always ends."""
    copy, env = gpu_machine
    hanging = tmp_path / "bin"
    hanging.mkdir()
    (hanging / "nvidia-smi").write_text("#!/bin/sh\nsleep 600\n")
    (hanging / "nvidia-smi").chmod(0o755)
    limits = {f"CHECK_SECONDS_{check.replace('-', '_')}": "2" for check in CHECKS}
    env = {**env, **limits, "PATH": f"{hanging}{os.pathsep}{env['PATH']}"}
    started = time.monotonic()
    result = subprocess.run(
        ["make", "gpu-check", "DEVICE=cpu", f"OUT={tmp_path / 'out'}"],
        cwd=copy,
        env=env,
        capture_output=True,
        timeout=300,  # without the limits the hanging nvidia-smi would hold the check for 10 minutes
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 120
    lines = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == list(CHECKS)
    assert lines[0].split()[1:3] == ["exit", "124"]


def test_gpu_check_without_beauty_is_one_early_error(
    gpu_machine: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    copy, env = gpu_machine
    result = subprocess.run(
        ["make", "gpu-check", "DEVICE=cpu", f"OUT={tmp_path / 'out'}", f"GPU_DIR={tmp_path / 'empty'}"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "no Beauty file" in result.stderr and "make gpu-prepare" in result.stderr
    assert not (tmp_path / "out").exists()
