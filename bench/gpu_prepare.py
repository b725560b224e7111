"""Fill ``.gpu/`` with what a lent GPU machine lacks for ``make gpu-check`` (``make gpu-prepare``).

Not a test. The GPU machine's ``python3`` (3.12, torch 2.11) holds the packages listed in
bench/gpu_image_packages.txt, reaches no package registry, and gets a copy of this repository's tracked files
without ``../shared``. Run here, where both are at hand, with the project's ``.venv`` (its versions are the
pins of envs/requirements.txt), this writes:

- ``.gpu/wheels/``: a wheel of every package the checks import that the image lacks (snakemake,
  jsonschema), their dependencies included, at this interpreter's installed versions, for
  ``--python-version`` (pure-Python packages published only as source are built here, ``py3-none-any``);
- ``.gpu/Beauty.txt``: the real Beauty set the checks train on;

checks that the working tree and ``.gpu/`` fit the 64 MiB that travel, and prints the folders to carry.

    .venv/bin/python bench/gpu_prepare.py [--out .gpu] [--python-version 3.12] [--beauty PATH]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_PACKAGES = REPO_ROOT / "bench" / "gpu_image_packages.txt"
BEAUTY_PATH = REPO_ROOT.parent / "shared" / "data" / "beauty" / "Beauty.txt"
# What the checks import that the image lacks: the Snakemake run and paper_cost's plan need snakemake,
# catrec.config validates with jsonschema. Their dependencies follow from the installed metadata.
NEEDED = ("snakemake", "jsonschema")
CARRY_LIMIT_BYTES = 64 * 2**20
# The manylinux tags the device tool's README names for the machine's x86-64 processor.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64")
PLATFORMS += ("manylinux2014_x86_64", "manylinux1_x86_64")
VERSION_FILE = "python-version"


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    lines = IMAGE_PACKAGES.read_text().splitlines()
    return {normalized(line) for line in lines if line.strip() and not line.startswith("#")}


def closure(names: tuple[str, ...], python_version: str) -> dict[str, str]:
    """name -> installed version of ``names`` and everything they require on ``python_version`` (Linux)."""
    environment = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    environment |= {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    environment |= {"os_name": "posix", "implementation_name": "cpython", "extra": ""}
    environment |= {"platform_python_implementation": "CPython"}
    versions: dict[str, str] = {}
    pending = list(names)
    while pending:
        name = normalized(pending.pop())
        if name in versions:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"{name} is not installed in {sys.executable}: run this with .venv") from None
        versions[name] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                pending.append(requirement.name)
    return versions


def wheel_name(path: Path) -> tuple[str, str]:
    """(normalized name, version) of a wheel file."""
    name, version = path.name.split("-")[:2]
    return normalized(name), version


def fetch_wheel(name: str, version: str, wheels: Path, python_version: str) -> None:
    """The wheel of ``name==version`` for the GPU machine: a published one, else built here if pure Python."""
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    download += ["--python-version", python_version, "--implementation", "cp", "--dest", str(wheels)]
    download += [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    if subprocess.run([*download, f"{name}=={version}"], capture_output=True).returncode == 0:
        return
    before = set(wheels.iterdir())
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels)]
    result = subprocess.run([*build, f"{name}=={version}"], capture_output=True, text=True)
    built = sorted(set(wheels.iterdir()) - before)
    if result.returncode != 0 or not built:
        raise SystemExit(f"{name}=={version}: no wheel for Python {python_version}:\n{result.stderr[-2000:]}")
    if not built[0].name.endswith("-none-any.whl"):
        built[0].unlink()
        raise SystemExit(f"{name}=={version}: no wheel for the GPU machine's Python, and not pure Python")


def prepare_wheels(wheels: Path, python_version: str) -> list[Path]:
    """``wheels`` holding exactly one wheel of each package the GPU image lacks (kept across calls)."""
    version_file = wheels / VERSION_FILE
    if wheels.exists() and (not version_file.exists() or version_file.read_text().strip() != python_version):
        shutil.rmtree(wheels)  # built for another Python: binary wheels would not install
    wheels.mkdir(parents=True, exist_ok=True)
    version_file.write_text(python_version + "\n")
    image = image_packages()
    wanted = {name: version for name, version in closure(NEEDED, python_version).items() if name not in image}
    for path in wheels.glob("*.whl"):
        if wanted.get(wheel_name(path)[0]) != wheel_name(path)[1]:
            path.unlink()  # another version: two versions of one package stop the install there
    have = {wheel_name(path)[0] for path in wheels.glob("*.whl")}
    for name, version in sorted(wanted.items()):
        if name not in have:
            print(f"fetching {name}=={version}", flush=True)
            fetch_wheel(name, version, wheels, python_version)
    return sorted(wheels.glob("*.whl"))


def travelling_files() -> list[Path]:
    """The files the device tool sends besides ``carry``: the tracked and untracked-not-ignored ones."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return [path for path in (REPO_ROOT / name.decode() for name in listed if name) if path.is_file()]


def travelling_bytes(folder: Path) -> int:
    """Bytes the device tool sends: ``travelling_files`` plus ``folder``."""
    carried = [path for path in folder.rglob("*") if path.is_file()]
    return sum(path.stat().st_size for path in [*travelling_files(), *carried])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".gpu", help="the folder to fill (carried)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (X.Y)")
    parser.add_argument("--beauty", type=Path, default=BEAUTY_PATH, help="the real Beauty set")
    args = parser.parse_args()
    if not args.beauty.is_file():
        raise SystemExit(f"{args.beauty}: no Beauty file (--beauty PATH names it)")
    wheels = prepare_wheels(args.out / "wheels", args.python_version)
    shutil.copyfile(args.beauty, args.out / "Beauty.txt")
    size = travelling_bytes(args.out)
    if size > CARRY_LIMIT_BYTES:
        raise SystemExit(f"the working tree and {args.out} come to {size / 2**20:.1f} MiB, over 64 MiB")
    print(f"{args.out}: {len(wheels)} wheels for Python {args.python_version} and Beauty.txt")
    print(f"travels: {size / 2**20:.1f} MiB of 64 MiB; carry: {args.out}")


if __name__ == "__main__":
    main()
