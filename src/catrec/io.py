"""File input and output with errors that name the file: atomic writes and safe loading of ``.pt`` files.

Every file the pipeline writes appears whole or not at all: a reader, or Snakemake after a crash, never sees a
half-written file. Temp files live beside the target (same file system, so ``os.replace`` is atomic) under a
name unique to the process; unlike ``mkstemp`` they get the umask's permissions, so results stay readable to
collaborators.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def load_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a file this pipeline wrote: tensors and plain containers only (``weights_only``).

    A missing, truncated or foreign file is one CatrecError naming it.
    """
    import torch  # here, not at the top: the data stages import this module and need no torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CatrecError(f"{path}: no such file") from exc
    except pickle.UnpicklingError as exc:
        # Not torch's message: it suggests weights_only=False, which would run whatever code the file holds.
        failure: Exception = exc
        reason = "it holds something other than tensors and plain containers"
    except (RuntimeError, EOFError, OSError) as exc:
        failure = exc
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise CatrecError(
        f"{path}: truncated, damaged or not a catrec file ({reason}); delete it and rerun"
    ) from failure
