"""Writing a file atomically, so that a crash leaves either the old file or the new one,
complete (autosave sidecars, saved objects, training checkpoints)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write"]


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` through a temporary file in its folder, ``fsync`` and ``os.replace``.

    Parameters
    ----------
    path : Path
        The file to write; its folder is made if missing.
    write : callable
        Called with the temporary file, open for binary writing; writes the content.

    Raises
    ------
    OSError
        (or whatever ``write`` raises) The temporary file is removed and ``path`` is left
        as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # the rename itself, where supported
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
