"""The labels file beside a sidecar (``<base>.<digest>.labels.npz``): its digest, its
dense or sparse encoding, and reading it back with every check."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_fbrs.core.autosave.checks import _int
from napari_fbrs.core.autosave.records import AutosaveError

# labels with at most this fraction of non-zero pixels are stored as (index, value) pairs
_SPARSE_FRACTION = 1 / 8
_LABELS_NAME = re.compile(r"^[^/\\]+\.[0-9a-f]{32}\.labels\.npz$")


def _labels_digest(labels: np.ndarray) -> str:
    data = np.ascontiguousarray(labels)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((data.shape, data.dtype.str)).encode())
    h.update(memoryview(data).cast("B") if data.size else b"")
    return h.hexdigest()


def _encode_labels(labels: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    nonzero = int(np.count_nonzero(labels))
    if labels.size and nonzero <= labels.size * _SPARSE_FRACTION:
        flat = labels.reshape(-1)
        index = np.flatnonzero(flat)
        return "sparse", {"index": index.astype(np.int64), "values": flat[index]}
    return "dense", {"labels": np.ascontiguousarray(labels)}


def _read_labels(path: Path, meta: Mapping[str, Any]) -> np.ndarray:
    def bad(why: str) -> AutosaveError:
        return AutosaveError(
            f"the labels of the autosave {path} cannot be used: {why}. The clicks and the "
            "list of objects can still be read with labels=False."
        )

    name = meta.get("file")
    if not isinstance(name, str) or not _LABELS_NAME.match(name) or Path(name).name != name:
        raise bad(f"the labels file name {name!r} is not one this module writes")
    try:
        shape = tuple(_int(s, "labels.shape", 0) for s in meta["shape"])
        dtype = np.dtype(str(meta["dtype"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"invalid shape or dtype ({exc})") from exc
    if dtype.kind not in "iub":
        raise bad(f"the dtype {dtype} is not an integer dtype")
    file = path.with_name(name)
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError as exc:
        raise bad(f"{file.name} is missing") from exc
    except Exception as exc:  # zipfile/zlib/numpy format errors: a damaged file
        raise bad(f"{file.name} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    encoding = meta.get("encoding")
    try:
        if encoding == "dense":
            labels = arrays["labels"]
        elif encoding == "sparse":
            index, values = arrays["index"], arrays["values"]
            n = math.prod(shape)
            if index.ndim != 1 or values.shape != index.shape or index.dtype.kind not in "iu":
                raise ValueError("index and values do not match")
            if index.size and (int(index.min()) < 0 or int(index.max()) >= n):
                raise ValueError("an index lies outside the array")
            labels = np.zeros(n, dtype=dtype)
            labels[index] = values.astype(dtype, copy=False)
            labels = labels.reshape(shape)
        else:
            raise ValueError(f"unknown encoding {encoding!r}")
    except (KeyError, ValueError) as exc:
        raise bad(f"{file.name} does not hold what the autosave says ({exc})") from exc
    if labels.shape != shape or labels.dtype != dtype:
        raise bad(
            f"{file.name} holds {labels.dtype} {labels.shape}, the autosave says {dtype} {shape}"
        )
    if _labels_digest(labels) != meta.get("digest"):
        raise bad(f"{file.name} does not match its recorded digest (damaged or replaced)")
    return labels
