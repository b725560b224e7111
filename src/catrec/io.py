"""File input and output with errors that name the file: atomic writes and safe loading of ``.pt`` files.

Every file the pipeline writes appears whole or not at all: a reader, or Snakemake after a crash, never sees a
half-written file. Temp files live beside the target (same file system, so ``os.replace`` is atomic) under a
name unique to the process; unlike ``mkstemp`` they get the umask's permissions, so results stay readable to
collaborators.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pickle
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from catrec.errors import CatrecError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block completes.

    An OSError in the block (disk full, read-only ``results/``) becomes one CatrecError naming ``path``.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temp
        os.replace(temp, path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CatrecError(f"cannot write {path}: {reason} (check free space and write permission)") from exc
    finally:
        with contextlib.suppress(OSError):  # where writing failed, removing may fail too: one error is enough
            temp.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


@contextmanager
def open_text_atomically(path: str | Path) -> Iterator[TextIO]:
    """A UTF-8 text stream (newlines untranslated, for ``csv``) whose content replaces ``path`` only if the
    block completes; gzip-compressed where the name ends in ``.gz``, as ``read_text`` reads it.

    The gzip header holds neither a file name nor a time (``mtime=0``): the same text gives the same bytes,
    so a rerun's file is byte-identical to a committed one.
    """
    with atomic_path(path) as temp, open(temp, "wb") as raw:
        if Path(path).suffix == ".gz":
            with (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
                io.TextIOWrapper(compressed, encoding="utf-8", newline="") as stream,
            ):
                yield stream
        else:
            with io.TextIOWrapper(raw, encoding="utf-8", newline="") as stream:
                yield stream


def save_torch_file(path: str | Path, payload: Any) -> None:
    """``torch.save`` of ``payload`` to ``path`` atomically, the same bytes whenever the payload is the same.

    Saved through an open file, not the temporary path: torch names the zip's internal folder after a path it
    is given (``.pretrain.pt.<pid>.<random>/data.pkl``), which would make identical runs write different
    bytes, and a run's identity (``catrec.state``) hashes these bytes. torch reports a failed write (disk
    full) as a RuntimeError; it becomes the same one-line CatrecError naming ``path`` as an OSError.
    """
    import torch

    with atomic_path(path) as temp, open(temp, "wb") as handle:
        try:
            torch.save(payload, handle)
            handle.flush()
        except RuntimeError as exc:
            raise OSError("the write failed") from exc


def load_torch_file(path: str | Path, map_location: Any = "cpu", *, keys: tuple[str, ...] = ()) -> Any:
    """``torch.load`` of a file this pipeline wrote: tensors and plain containers only (``weights_only``).

    A missing, truncated, damaged or foreign file is one CatrecError naming it, whatever the bytes; with
    ``keys``, so is a file that is not a dict holding them (another program's ``.pt``).
    """
    import torch  # here, not at the top: the data stages import this module and need no torch

    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CatrecError(f"{path}: no such file") from exc
    except pickle.UnpicklingError as exc:
        # Not torch's message: it suggests weights_only=False, which would run whatever code the file holds.
        failure: Exception = exc
        reason = "it holds something other than tensors and plain containers"
    except Exception as exc:
        # Damaged bytes reach torch's zip and pickle readers in any state, and they fail with whatever
        # they meet first (RuntimeError, EOFError, KeyError, IndexError, struct.error, UnicodeDecodeError,
        # ...): every one is the same damaged file.
        failure = exc
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    else:
        if keys and not isinstance(payload, dict):
            raise CatrecError(f"{path}: holds a {type(payload).__name__}, not a catrec file with {keys[0]!r}")
        missing = [key for key in keys if key not in payload]
        if missing:
            held = ", ".join(repr(key) for key in payload) or "nothing"
            raise CatrecError(f"{path}: holds {held}, not a catrec file with {missing[0]!r}")
        return payload
    raise CatrecError(
        f"{path}: truncated, damaged or not a catrec file ({reason}); delete it and rerun"
    ) from failure


def read_text(path: str | Path) -> str:
    """A text file this pipeline reads (UTF-8, a byte-order mark dropped; gzip-compressed where the name ends
    in ``.gz``, as the per-user metrics committed as evidence are); a missing or unreadable one is one
    CatrecError naming it."""
    try:
        if Path(path).suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8-sig") as handle:
                return handle.read()
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise CatrecError(f"{path}: file not found") from exc
    except (EOFError, gzip.BadGzipFile) as exc:
        raise CatrecError(f"{path}: cannot read (not a whole gzip file: {exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CatrecError(f"{path}: cannot read ({reason})") from exc


def read_json(path: str | Path, keys: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """A JSON object with ``keys``; anything else (missing, not JSON, not an object) is one CatrecError."""
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise CatrecError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise CatrecError(f"{path}: expected a JSON object")
    missing = [key for key in keys if key not in record]
    if missing:
        raise CatrecError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)}")
    return record
