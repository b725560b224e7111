"""Robust downloads of the raw datasets and safe extraction of one zip member.

The raw files are large and hosted on academic servers that drop connections, answer 5xx under load or move
away. So a download retries with exponential backoff, resumes a partial file with an HTTP ``Range`` request,
falls back to mirrors, and only renames the partial file to its final name once its checksum passed: a file
at the output path is therefore always complete and verified, which is what Snakemake takes its existence to
mean. A file a user placed there by hand (offline clusters) is verified and used without any network access.

Every download is bounded: a server that sends an endless body stops at ``max_bytes`` and one that drips a
byte at a time is abandoned at the per-file ``deadline`` (all attempts and mirrors together). Either leaves
nothing behind, ``.part`` included.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import requests
import urllib3
from tqdm import tqdm

from catrec.commands import Command, positive
from catrec.errors import CatrecError
from catrec.io import atomic_path, read_json, write_text_atomically

CHUNK_SIZE = 1 << 16
# The largest Amazon 2014 5-core file (Books, ~3 GB) fits with room to spare; the paper's files are < 100 MB.
DEFAULT_MAX_BYTES = 8 << 30
# Two hours: the paper's files at >= 15 kB/s, a 3 GB file at >= 0.5 MB/s.
DEFAULT_DEADLINE_S = 7200.0
# 408/429 are the server asking us to come back later; every other 4xx is final for that URL.
RETRYABLE_4XX = {408, 429}
MAX_LISTED_MEMBERS = 20  # keeps the one-line error readable for archives with thousands of files
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class _TransientError(Exception):
    """This attempt failed in a way worth retrying against the same URL (network trouble, 5xx)."""


class _UrlError(Exception):
    """This URL will not deliver the file (4xx, retries exhausted, bad checksum, too large): try a mirror."""


@dataclass(frozen=True)
class _Limits:
    """The bounds of one file's download: its size, and the wall-clock time of all attempts together."""

    name: str
    max_bytes: int
    deadline_s: float
    started: float = field(default_factory=time.monotonic)

    def seconds_left(self) -> float:
        """Seconds until the deadline; raises CatrecError once it has passed (fatal: no retry, no mirror)."""
        left = self.started + self.deadline_s - time.monotonic()
        if left <= 0:
            raise CatrecError(
                f"download of {self.name} did not finish within the deadline of {self.deadline_s:g} s "
                "(--deadline, config download.deadline_s); nothing was kept"
            )
        return left

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise _UrlError(
                f"the file is larger than the limit of {self.max_bytes} bytes "
                "(--max-bytes, config download.max_bytes)"
            )


def file_digests(path: str | Path, algorithms: Iterable[str]) -> dict[str, str]:
    """Hex digests of ``path`` for each hashlib algorithm, in one streamed pass (raw files are GBs)."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            for digest in hashes.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in hashes.items()}


def _checksum_problem(path: Path, expected: dict[str, str], name: str) -> str | None:
    """The mismatch message for ``path`` (reported under ``name``), or None when every checksum matches."""
    observed = file_digests(path, expected)
    for algorithm, want in expected.items():
        if observed[algorithm] != want:
            return f"checksum mismatch for {name}: expected {algorithm} {want}, got {observed[algorithm]}"
    return None


def _read_lock(lock_file: Path) -> dict[str, str]:
    if not lock_file.exists():
        return {}
    return read_json(lock_file)


def _record_lock(lock_file: Path, name: str, sha256: str) -> None:
    """Add ``name``'s sha256 to the lock file; atomic replace, so a crash never leaves it half written."""
    entries = _read_lock(lock_file)
    entries[name] = sha256
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(entries, indent=2, sort_keys=True) + "\n"
    write_text_atomically(lock_file, text)


def _parse_content_range(value: str | None) -> tuple[int, int | None]:
    """(first byte, total size or None) of a 206 answer's ``Content-Range``."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        raise _TransientError(f"206 answer with an invalid Content-Range: {value!r}")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _attempt(
    session: requests.Session, url: str, part: Path, *, resume: bool, timeout: float, limits: _Limits
) -> None:
    """One GET of ``url`` into ``part``, appending to it when ``resume`` and the server honours ``Range``.

    Reads return as soon as some bytes arrived (``read1``), so the deadline is checked between chunks even
    when a server sends one byte at a time; each read also times out at the deadline.
    """
    offset = part.stat().st_size if resume and part.exists() else 0
    # identity: byte offsets, Content-Length and the published checksums all refer to the file's own bytes,
    # never to a compressed transfer encoding of them.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        timeout = min(timeout, limits.seconds_left())
        with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
            status = f"HTTP {response.status_code} {response.reason}".strip()
            if response.status_code == 416:
                # Our partial file does not fit the server's file (it changed or shrank): start over.
                part.unlink(missing_ok=True)
                raise _TransientError(status)
            if response.status_code >= 500 or response.status_code in RETRYABLE_4XX:
                raise _TransientError(status)
            if response.status_code >= 400:
                raise _UrlError(status)
            if response.status_code == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start != offset:
                    part.unlink(missing_ok=True)
                    raise _TransientError(f"server resumed at byte {start}, not at {offset}")
            else:
                # A 200 answer is the whole file, also when we asked for a range the server ignored.
                offset, total = 0, None
                with contextlib.suppress(ValueError):
                    total = int(response.headers.get("Content-Length", ""))
            if total is not None:
                limits.check_size(total)
            with (
                part.open("ab" if offset else "wb") as handle,
                tqdm(
                    total=total,
                    initial=offset,
                    desc=limits.name,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    disable=None,  # no bar in logs (stderr not a tty)
                ) as bar,
            ):
                # decode_content=False: write the bytes as sent, even where a server labels a .gz file with
                # Content-Encoding: gzip (requests would otherwise decompress it and break the checksum).
                size = offset
                while chunk := response.raw.read1(CHUNK_SIZE, decode_content=False):
                    limits.seconds_left()
                    size += len(chunk)
                    limits.check_size(size)
                    handle.write(chunk)
                    bar.update(len(chunk))
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.ReadTimeoutError,
    ) as exc:
        raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
    except requests.RequestException as exc:  # invalid URL, redirect loop, ...: no point in retrying
        raise _UrlError(f"{type(exc).__name__}: {exc}") from exc
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise _TransientError(f"connection closed after {size} of {total} bytes")


def _fetch(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    retries: int,
    backoff: float,
    timeout: float,
    limits: _Limits,
) -> None:
    """Download ``url`` to ``part``, retrying transient failures with exponential backoff and resuming."""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff * 2 ** (attempt - 1), limits.seconds_left()))
        try:
            # The first attempt at a URL starts from scratch: a partial file from another mirror or an earlier
            # run may be a different version of the file, and only bytes from this URL are safe to continue.
            _attempt(session, url, part, resume=attempt > 0, timeout=timeout, limits=limits)
            return
        except _TransientError as exc:
            failure = str(exc)
    raise _UrlError(f"{failure} (gave up after {retries + 1} attempts)")


def _expected_digests(output: Path, md5: str | None, sha256: str | None, lock: Path | None) -> dict[str, str]:
    """The checksums ``output`` must match: those given, else the sha256 ``lock`` recorded (none: empty)."""
    expected = {name: value.strip().lower() for name, value in (("md5", md5), ("sha256", sha256)) if value}
    if not expected and lock is not None:
        locked = _read_lock(lock).get(output.name)
        if locked:
            expected = {"sha256": str(locked).strip().lower()}
    return expected


def download(
    urls: list[str],
    output: str | Path,
    md5: str | None = None,
    sha256: str | None = None,
    lock_file: str | Path | None = None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline: float = DEFAULT_DEADLINE_S,
) -> Path:
    """Download the file at the first working URL of ``urls`` (mirrors, in order) to ``output``.

    An existing ``output`` is verified and returned without network access. The file is checked against
    ``md5``/``sha256``; when neither is given, against its sha256 in ``lock_file`` (a JSON object mapping file
    names to sha256), which records the observed sha256 the first time. ``retries`` counts retries per URL;
    the n-th retry waits ``backoff * 2**(n-1)`` seconds; ``timeout`` bounds connecting and each read.
    A URL sending more than ``max_bytes`` is abandoned for the next mirror; ``deadline`` seconds bound the
    whole download of the file (every attempt and mirror), and passing it is fatal.
    Raises CatrecError on a checksum mismatch, at the deadline or when no URL delivers the file; no file is
    left at ``output`` (nor its ``.part``) after a failed download.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if max_bytes < 1 or not 0 < deadline < math.inf:
        raise ValueError(f"max_bytes and deadline must be positive and finite, got {max_bytes}, {deadline}")
    output = Path(output)
    lock = Path(lock_file) if lock_file is not None else None
    expected = _expected_digests(output, md5, sha256, lock)
    if output.exists():
        problem = _checksum_problem(output, expected, str(output)) if expected else None
        if problem:
            # Never delete a file the user placed: it may be the only copy on an offline machine.
            raise CatrecError(f"{problem} (existing file; replace or delete it to download again)")
        if lock is not None and not expected:
            _record_lock(lock, output.name, file_digests(output, ["sha256"])["sha256"])
        return output

    if not urls:
        raise CatrecError(f"{output} does not exist and no URL to download it from was given")
    output.parent.mkdir(parents=True, exist_ok=True)
    part = output.with_name(output.name + ".part")
    limits = _Limits(output.name, max_bytes, deadline)
    failures: list[str] = []
    try:
        with requests.Session() as session:
            for url in urls:
                try:
                    _fetch(
                        session,
                        url,
                        part,
                        retries=retries,
                        backoff=backoff,
                        timeout=timeout,
                        limits=limits,
                    )
                except _UrlError as exc:
                    failures.append(f"{url}: {exc}")
                    continue
                problem = _checksum_problem(part, expected, output.name) if expected else None
                if problem:
                    # A corrupt or different file on this mirror; another mirror may still have the right one.
                    failures.append(f"{url}: {problem}")
                    continue
                if lock is not None and not expected:
                    _record_lock(lock, output.name, file_digests(part, ["sha256"])["sha256"])
                os.replace(part, output)
                return output
    except OSError as exc:  # network errors were handled above, so this is the local disk (full, read-only)
        raise CatrecError(f"download of {output} failed: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    raise CatrecError(f"could not download {output.name}: " + "; ".join(failures))


def _unsafe_member(name: str) -> bool:
    """True for member names that would escape the extraction directory (zip-slip)."""
    normalized = name.replace("\\", "/")  # some Windows tools write backslashes
    path = PurePosixPath(normalized)
    return path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", normalized) is not None


def extract_member(archive: str | Path, member: str, output: str | Path) -> Path:
    """Extract ``member`` of the zip ``archive`` to ``output`` atomically (temp file + ``os.replace``).

    The whole archive is refused if any member name is absolute or contains ``..``: we only ever write to
    ``output``, but such names mean the archive is not the one we expect and must not be trusted.
    """
    archive, output = Path(archive), Path(output)
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = zipped.namelist()
            for name in names:
                if _unsafe_member(name):
                    raise CatrecError(f"{archive}: refusing archive with unsafe member path '{name}'")
            if member not in names:
                shown = ", ".join(names[:MAX_LISTED_MEMBERS])
                more = (
                    f" and {len(names) - MAX_LISTED_MEMBERS} more" if len(names) > MAX_LISTED_MEMBERS else ""
                )
                raise CatrecError(f"{archive}: no member '{member}'; members: {shown}{more}")
            output.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, atomic_path(output) as temp, open(temp, "wb") as handle:
                shutil.copyfileobj(source, handle, CHUNK_SIZE)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CatrecError(f"cannot extract '{member}' from {archive}: {exc}") from exc
    return output


def _declare_download(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        dest="urls",
        metavar="URL",
        action="append",
        required=True,
        help="source URL; repeat for mirrors, tried in order",
    )
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--md5", help="expected md5 of the file")
    parser.add_argument("--sha256", help="expected sha256 of the file")
    parser.add_argument(
        "--lock-file", type=Path, help="JSON file recording the observed sha256 when no checksum is known"
    )
    parser.add_argument(
        "--max-bytes",
        type=positive(int),
        default=DEFAULT_MAX_BYTES,
        help="abandon a URL sending more than this (default: 8 GiB)",
    )
    parser.add_argument(
        "--deadline",
        type=positive(float),
        default=DEFAULT_DEADLINE_S,
        metavar="SECONDS",
        help="give up on the file after this long, all attempts and mirrors together "
        f"(default: {DEFAULT_DEADLINE_S:g})",
    )


def _declare_extract(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--member", required=True)
    parser.add_argument("--output", type=Path, required=True)


COMMANDS = (
    Command(
        "download",
        "Download a file (retries, resume, checksum, atomic rename).",
        _declare_download,
        Command.calling(download),
    ),
    Command(
        "extract",
        "Extract one member of a zip archive (path traversal is refused).",
        _declare_extract,
        Command.calling(extract_member),
    ),
)
