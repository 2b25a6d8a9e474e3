"""The labels array: its validation, its dtype promotion, and replacing it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from napari_fbrs.core.session.entries import _LabelsSwap
from napari_fbrs.core.session.types import Change


def promoted_dtype(dtype: np.dtype | type, value: int) -> np.dtype:
    """The smallest integer dtype of ``dtype``'s kind, at least as wide, that holds ``value``.

    Parameters
    ----------
    dtype : numpy dtype
        An integer (or bool) labels dtype.
    value : int
        A non-negative label id.

    Returns
    -------
    numpy.dtype
        ``dtype`` itself when ``value`` fits, else the next wider one (``uint8 -> uint16
        -> uint32 -> uint64``, ``int8 -> int16 -> ...``; bool is treated as ``uint8``).

    Raises
    ------
    TypeError
        ``dtype`` is not an integer or bool dtype.
    OverflowError
        ``value`` does not fit even the widest integer.
    """
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        if value <= 1:
            return dtype
        dtype = np.dtype(np.uint8)
    if dtype.kind not in "iu":
        raise TypeError(f"labels must have an integer dtype, got {dtype}")
    widths = [np.dtype(f"{dtype.kind}{n}") for n in (1, 2, 4, 8)]
    for candidate in widths:
        if candidate.itemsize >= dtype.itemsize and np.iinfo(candidate).max >= value:
            return candidate
    raise OverflowError(f"label {value} does not fit any {dtype.kind}-integer dtype")


class _LabelsMixin:
    """The labels array of :class:`SegmentationSession` (which sets ``_labels``)."""

    @property
    def labels(self) -> np.ndarray:
        """The labels array, ``labels_shape``, integer; replaced by a wider copy when a
        commit needs a larger dtype (re-read it after :meth:`commit`, :meth:`undo`,
        :meth:`redo`)."""
        return self._labels

    @staticmethod
    def _check_writable(labels: np.ndarray) -> None:
        if not labels.flags.writeable:
            raise ValueError(
                "the labels array is read-only (a memory-mapped file or a read-only view): "
                "nothing was changed; choose another Labels layer or make a writable copy "
                "(set_labels(labels.copy()))"
            )

    def _check_labels(self, labels: Any) -> None:
        if not isinstance(labels, np.ndarray):
            raise TypeError(f"labels must be an in-memory numpy array, got {type(labels).__name__}")
        if labels.shape != self.labels_shape:
            raise ValueError(
                f"labels of shape {labels.shape} do not match the image: expected "
                f"{self.labels_shape}"
            )
        if labels.dtype != np.bool_ and labels.dtype.kind not in "iu":
            raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")

    def set_labels(self, labels: np.ndarray, keep_history: bool = False) -> None:
        """Commit into another array from now on.

        Parameters
        ----------
        labels : numpy.ndarray
            ``labels_shape``, integer dtype.
        keep_history : bool
            Keep the commits in the undo history (only when ``labels`` holds the same
            values, e.g. the same data re-read from a viewer). By default the history is
            cleared: its commits belong to the old array.
        """
        self._check_labels(labels)
        if labels is self._labels:
            return
        self._labels = labels
        if not keep_history:
            self._done.clear()
            self._undone.clear()

    def replace_labels(self, labels: np.ndarray, what: str = "labels replaced") -> Change:
        """Commit into ``labels`` from now on, as one undo step (undo brings the current
        array back, with its values); the history before it stays valid.

        Parameters
        ----------
        labels : numpy.ndarray
            ``labels_shape``, integer dtype, writable.
        what : str
            How the step is described in undo/redo messages.

        Returns
        -------
        Change
            ``labels=True``: a GUI shows :attr:`labels` again.
        """
        self._check_labels(labels)
        self._check_writable(labels)
        self._push(_LabelsSwap(self._labels, labels, what))
        self._labels = labels
        return Change((), True, what)

    def free_ids(self, wanted: Iterable[int]) -> dict[int, int]:
        """An id for each of ``wanted`` that the labels do not hold yet.

        Parameters
        ----------
        wanted : iterable of int
            Ids (>= 1) of objects about to be added, e.g. a clicks file's.

        Returns
        -------
        dict
            ``wanted id -> id to write``: the id itself while no pixel holds it (and no
            earlier entry took it), else the next one past every id in use or wanted.
            The labels are read one plane at a time (bounded memory on big stacks).
        """
        wanted = list(dict.fromkeys(int(i) for i in wanted))
        if not wanted:
            return {}
        candidates = np.asarray(wanted)
        labels = self._labels
        planes = labels.reshape(-1, *labels.shape[-2:]) if labels.ndim > 2 else labels[None]
        in_use = np.zeros(len(wanted), dtype=bool)
        for plane in planes:
            in_use |= np.isin(candidates, plane)
        next_free = max(self.next_label(), max(wanted) + 1)
        mapping: dict[int, int] = {}
        for label, used in zip(wanted, in_use, strict=True):
            if used:
                mapping[label] = next_free
                next_free += 1
            else:
                mapping[label] = label
        return mapping

    def next_label(self) -> int:
        """The next free id: ``labels.max() + 1`` (1 for an empty array)."""
        if self._labels.size == 0:
            return 1
        return int(self._labels.max()) + 1
