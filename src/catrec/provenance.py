"""What a result derives from besides its settings: the code that computed it and the content of its inputs.

``code_digest`` hashes every ``.py`` file of the catrec package (any of them, ``__init__.py`` included, can
change a number); ``catrec.state`` puts it into each run's identity, so a run resumes only state that the
same code wrote, and every metrics JSON records it (``code_provenance``), with the git commit and a dirty
flag where the package lives in a git checkout. ``source_digest`` is the sha256 of a local raw file
(``source.path``), cached by its stat so that a file of gigabytes is read once, not at every plan;
``path_source_digests`` gives the preprocess rule those of a config (a params value: a rerun trigger).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from catrec.errors import CatrecError
from catrec.io import write_text_atomically

PACKAGE_DIR = Path(__file__).resolve().parent


def package_digest(root: str | Path) -> str:
    """sha256 over the ``.py`` files under ``root``: each one's path relative to ``root``, then its bytes,
    in sorted path order (a renamed or moved file changes the digest too)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda found: found.relative_to(root).as_posix()):
        content = path.read_bytes()
        # Lengths delimit the fields: no two different trees hash the same stream.
        for field in (path.relative_to(root).as_posix().encode(), content):
            digest.update(len(field).to_bytes(8, "big"))
            digest.update(field)
    return digest.hexdigest()


@cache
def code_digest() -> str:
    """``package_digest`` of the catrec package this process runs, computed once per process."""
    return package_digest(PACKAGE_DIR)


def _git(*args: str) -> str | None:
    """A git command's output in the package's directory; None where git or a checkout is missing."""
    try:
        result = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


@cache
def code_provenance() -> dict[str, Any]:
    """``code_digest``, and the checkout's ``git_commit`` and ``git_dirty`` (uncommitted changes to tracked
    files) where the package lives in a git checkout; those two are absent elsewhere (an installed copy)."""
    record: dict[str, Any] = {"code_digest": code_digest()}
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    if commit is not None and status is not None:
        record["git_commit"] = commit.strip()
        record["git_dirty"] = bool(status.strip())
    return record


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CatrecError(f"{path}: cannot read input ({exc.strerror})") from exc
    return digest.hexdigest()


def _stat_key(path: Path) -> list[int]:
    """What changes whenever the bytes may have: ctime is set by every write and every ``utime`` (so a copy
    that keeps the old mtime, ``cp -p``, ``rsync -a``, ``tar x``, still changes it, even in place)."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def source_digest(path: str | Path, cache_file: str | Path) -> str:
    """sha256 of the file ``path``, looked up in (and added to) ``cache_file`` by the file's stat.

    A cache that cannot be read is recomputed, one that cannot be written is skipped: the digest is always
    the file's.
    """
    path = Path(path)
    try:
        key = _stat_key(path)
    except OSError as exc:
        raise CatrecError(f"{path}: cannot read ({exc.strerror})") from exc
    name = str(path.resolve())
    try:
        cached = json.loads(Path(cache_file).read_text())
        entries = cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):
        entries = {}
    entry = entries.get(name)
    if isinstance(entry, dict) and entry.get("stat") == key and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_digest(path)
    entries[name] = {"stat": key, "sha256": digest}
    with contextlib.suppress(CatrecError):  # a read-only workdir: no cache, the same digest
        write_text_atomically(cache_file, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return digest


def path_source_digests(datasets: Mapping[str, Any], cache_file: str | Path) -> dict[str, str]:
    """Dataset -> the sha256 of its ``source.path`` file (``source_digest``), checked against the source's
    ``sha256`` key where given. Datasets of other sources, and missing files (Snakemake names those when a
    job needs them), have none."""
    digests = {}
    for name, spec in datasets.items():
        source = spec["source"]
        if "path" not in source or not os.path.isfile(source["path"]):
            continue
        digest = source_digest(source["path"], cache_file)
        expected = source.get("sha256")
        if expected is not None and digest != expected:
            raise CatrecError(
                f"invalid config key 'datasets.{name}.source.sha256': checksum mismatch for "
                f"{source['path']}: expected sha256 {expected}, got {digest} (another version of the file?)"
            )
        digests[name] = digest
    return digests
