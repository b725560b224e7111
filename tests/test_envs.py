"""envs/catrec.yaml builds wherever Snakemake copies it, with the pins of envs/requirements.txt.

Under ``snakemake --sdm conda`` Snakemake copies the file alone to ``.snakemake/conda/<hash>.yaml``, and conda
runs pip on its ``pip:`` entries from that directory: an entry that reads a file or a path (``-r
requirements.txt``, ``-e ..``) then resolves next to the copy and finds nothing (or the wrong thing). The
tests redo that copy and check every entry as pip would read it from there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ENV_FILE = REPO_ROOT / "envs" / "catrec.yaml"
REQUIREMENTS = REPO_ROOT / "envs" / "requirements.txt"
# In requirements.txt for `make test` / `make lint` / `make mutate`, or for the Snakemake that submits SLURM
# jobs (the jobs run its Python, not the rules' environment); the rules' environment does not need them.
NOT_IN_RULE_ENV = {
    "mutmut",
    "pytest",
    "ruff",
    "snakefmt",
    "snakemake-executor-plugin-slurm",
    "snakemake-executor-plugin-slurm-jobstep",
}
# What pip reads as something other than a name from the index: a VCS checkout, a URL, a local archive.
VCS_OR_URL = re.compile(r"^(git|hg|svn|bzr)\+|://|^file:", re.IGNORECASE)
ARCHIVE = re.compile(r"\.(whl|zip|tar\.gz|tgz|tar\.bz2|tar)$", re.IGNORECASE)


def location_dependence(entry: str, directory: Path) -> str | None:
    """Why pip, run in ``directory``, would resolve ``entry`` relative to it (or not to a pinned release).

    None when ``entry`` is a plain ``name==version`` requirement: the only kind that means the same wherever
    the file is.
    """
    text = entry.strip()
    if text.startswith("-"):
        # -r/-c/-e/--requirement/--constraint/--editable read a path; the other options (--find-links,
        # --index-url, ...) change where names resolve. Neither belongs in a file that is copied.
        return "a pip option (reads a file or path relative to the copy)"
    if VCS_OR_URL.search(text):
        return "a VCS checkout or URL, not a published release"
    if text in {".", ".."} or text.startswith((".", "/", "~")) or "/" in text or "\\" in text:
        return "a path"
    if ARCHIVE.search(text):
        return "a local archive"
    if any((base / text).exists() for base in (directory, REPO_ROOT, ENV_FILE.parent)):
        return "names a file that exists relative to the copy or the repository"
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        return f"not a requirement ({error})"
    if requirement.url:
        return "a direct reference (name @ url)"
    specs = list(requirement.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        return "not pinned to one version (name==version)"
    return None


def copied_env(tmp_path: Path) -> dict:
    """The environment file as conda sees it: copied alone, under a hash-like name, to an empty directory."""
    copy = tmp_path / "conda" / "0123456789abcdef.yaml"
    copy.parent.mkdir()
    shutil.copy(ENV_FILE, copy)
    return yaml.safe_load(copy.read_text())


def pip_entries(env: dict) -> list[str]:
    sections = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    assert len(sections) == 1, "one pip: section"
    return [str(entry) for entry in sections[0]]


def pins(entries: list[str]) -> dict[str, str]:
    """{canonical name: version} of ``name==version`` entries."""
    result = {}
    for entry in entries:
        requirement = Requirement(entry)
        (spec,) = requirement.specifier
        result[canonicalize_name(requirement.name)] = spec.version
    return result


def requirements_pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    return pins([line for line in lines if line])


def test_every_pip_entry_resolves_from_a_copy(tmp_path: Path) -> None:
    env = copied_env(tmp_path)
    directory = tmp_path / "conda"
    problems = [
        f"{entry!r}: {reason}"
        for entry in pip_entries(env)
        if (reason := location_dependence(entry, directory))
    ]
    assert not problems, "pip entries of envs/catrec.yaml that depend on its location:\n" + "\n".join(
        problems
    )


def test_conda_dependencies_and_channels_are_published_names(tmp_path: Path) -> None:
    env = copied_env(tmp_path)
    names = [dep for dep in env["dependencies"] if isinstance(dep, str)] + list(env["channels"])
    directory = tmp_path / "conda"
    for name in names:
        assert not VCS_OR_URL.search(name), name
        assert not name.startswith((".", "/", "~")) and "/" not in name, name
        assert not (directory / name).exists() and not (REPO_ROOT / name).exists(), name


@pytest.mark.parametrize(
    "entry",
    [
        "-r requirements.txt",
        "--requirement=requirements.txt",
        "-c constraints.txt",
        "-e ..",
        "--editable .",
        ".",
        "..",
        "./src",
        "../catrec",
        "src",
        "/opt/wheels/torch-2.13.0-cp311-linux_x86_64.whl",
        "dist/catrec-0.1.0.tar.gz",
        "catrec-0.1.0.whl",
        "file:../src",
        "git+https://github.com/example/catrec.git",
        "catrec @ file:///work/catrec",
        "numpy",
        "numpy>=2",
        "numpy==2.*",
    ],
)
def test_location_dependent_entries_are_caught(entry: str, tmp_path: Path) -> None:
    assert location_dependence(entry, tmp_path) is not None


def test_env_pins_are_the_requirements_pins(tmp_path: Path) -> None:
    """One list of versions: a pin changed in one file and not in the other fails here."""
    env = pins(pip_entries(copied_env(tmp_path)))
    required = requirements_pins()
    differing = {
        name: (version, required.get(name)) for name, version in env.items() if required.get(name) != version
    }
    assert not differing, f"catrec.yaml pin != requirements.txt pin: {differing}"
    runtime = set(required) - NOT_IN_RULE_ENV
    only_requirements, only_env = sorted(runtime - set(env)), sorted(set(env) - runtime)
    assert not only_requirements and not only_env, (
        f"in requirements.txt only: {only_requirements}; in catrec.yaml only: {only_env}"
    )


def test_env_holds_every_runtime_dependency_of_the_package(tmp_path: Path) -> None:
    env = pins(pip_entries(copied_env(tmp_path)))
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in env, f"{requirement.name} (pyproject.toml) is not in envs/catrec.yaml"
        assert requirement.specifier.contains(env[name]), f"{text} (pyproject.toml) vs {name}=={env[name]}"


def test_rules_call_catrec_as_a_module() -> None:
    """A bare `catrec` needs the package installed in the job's environment; `python -m catrec` does not."""
    rules = sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))
    bare = [
        f"{path.name}:{number}"
        for path in rules
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.match(r"""\s*[rf]*["']\s*catrec\s""", line)
    ]
    assert not bare, f"shell commands starting with a bare `catrec`: {bare}"
    assert any("python -m catrec " in path.read_text() for path in rules)


def test_a_job_runs_the_checkout_code_without_an_install(tmp_path: Path) -> None:
    """Snakemake and a job, run by a Python that has the dependencies but not catrec, still reach src/.

    As in a conda environment built from envs/catrec.yaml: the packages are there, catrec is not installed.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The .venv's packages as a plain path entry: its .pth files (the editable install of catrec) are not run.
    site_packages = Path(sysconfig.get_path("purelib"))
    target = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (target / "dependencies.pth").write_text(f"{site_packages}\n")
    python = venv / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    precondition = subprocess.run([python, "-c", "import catrec"], env=env, cwd=tmp_path, capture_output=True)
    assert precondition.returncode != 0, "catrec must not be importable from an installed package here"
    command = [
        python,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(REPO_ROOT / "config" / "smoke.yaml"),
        "--cores",
        "1",
        "results/raw/toy/toy.zip",
    ]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    log = tmp_path / "logs" / "generate_toy" / "toy" / "toy.zip.log"
    details = result.stdout[-3000:] + result.stderr[-3000:] + (log.read_text() if log.exists() else "")
    assert result.returncode == 0, details
    assert (tmp_path / "results" / "raw" / "toy" / "toy.zip").stat().st_size > 0
