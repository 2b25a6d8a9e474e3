"""Saving finished objects: an instance-label array written to a TIFF file, atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LABELS_SUFFIXES", "save_labels"]

#: File suffixes :func:`save_labels` writes (TIFF holds any integer dtype and any ndim).
LABELS_SUFFIXES = (".tif", ".tiff")


def save_labels(labels: Any, path: str | os.PathLike) -> Path:
    """Write instance labels to a TIFF file, never leaving a half-written file behind.

    Parameters
    ----------
    labels : array-like
        ``(..., Y, X)`` integer or bool array with at least two axes: napari Labels data,
        e.g. ``(Y, X)`` for an image or ``(Z, Y, X)`` for a stack; 0 is background. The
        dtype is kept (bool is stored as ``uint8``).
    path : str or os.PathLike
        The ``.tif`` or ``.tiff`` file to write. Its folder is made if missing; an existing
        file is replaced only once the new one is complete (zlib-compressed, readable by
        ``tifffile.imread`` and napari).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        Not an integer array of at least two axes, or another suffix than ``.tif``/``.tiff``.
    OSError
        The file could not be written; an existing file at ``path`` is left as it was.
    """
    import tifffile

    from napari_fbrs.core.atomic import atomic_write

    path = Path(path)
    if path.suffix.lower() not in LABELS_SUFFIXES:
        raise ValueError(f"objects are saved as TIFF files (.tif or .tiff); got {path.name!r}")
    data = np.asarray(labels)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if data.dtype.kind not in "iu" or data.ndim < 2:
        raise ValueError(
            "labels must be an integer array with at least two axes (..., Y, X); got "
            f"{data.dtype} of shape {data.shape}"
        )
    # encoded in memory first: tifffile wants a named file, the atomic writer gives a
    # descriptor; zlib needs no codec package beyond Python's own; "minisblack" keeps an
    # axis of length 3 or 4 from being read as colour
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, photometric="minisblack", compression="zlib")
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    return path
