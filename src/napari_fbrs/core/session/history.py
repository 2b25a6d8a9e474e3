"""The linear undo/redo history: recording steps, and undoing and redoing each kind."""

from __future__ import annotations

import numpy as np

from napari_fbrs.core.session.entries import _ClicksEdit, _Entry, _Group, _LabelsSwap, _Reopen
from napari_fbrs.core.session.labels import promoted_dtype
from napari_fbrs.core.session.types import Change


class _HistoryMixin:
    """Undo and redo of :class:`SegmentationSession` (which sets ``_done``, ``_undone``
    and ``max_history``)."""

    def _record(self, entry: _Entry) -> None:
        self._redo_entry(entry)
        self._push(entry)

    def _push(self, entry: _Entry) -> None:
        self._done.append(entry)
        self._undone.clear()
        if len(self._done) > self.max_history:
            del self._done[: len(self._done) - self.max_history]

    def clear_history(self) -> None:
        """Forget every undo and redo step (clicks and labels stay as they are)."""
        self._done.clear()
        self._undone.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def undo(self) -> Change | None:
        """Undo the last click edit or commit; ``None`` when there is nothing to undo."""
        if not self._done:
            return None
        entry = self._done[-1]
        change = self._undo_entry(entry)  # may raise before modifying anything
        self._done.pop()
        self._undone.append(entry)
        return Change(change.keys, change.labels, f"undo: {entry.describe()}")

    def redo(self) -> Change | None:
        """Redo the last undone step; ``None`` when there is nothing to redo."""
        if not self._undone:
            return None
        entry = self._undone[-1]
        change = self._redo_entry(entry)
        self._undone.pop()
        self._done.append(entry)
        return Change(change.keys, change.labels, f"redo: {entry.describe()}")

    def _undo_entry(self, entry: _Entry) -> Change:
        if isinstance(entry, _ClicksEdit):
            self._obj(entry.key).clicks = entry.before
            return Change((entry.key,), False, "")
        if isinstance(entry, _Group):
            for e in reversed(entry.entries):
                self._obj(e.key).clicks = e.before
            return Change(tuple(e.key for e in entry.entries), False, "")
        if isinstance(entry, _LabelsSwap):
            self._labels = entry.before
            return Change((), True, "")
        if isinstance(entry, _Reopen):
            self._objects[entry.key] = entry.before
            return Change((entry.key,), False, "")
        # a commit: put the old pixel values back, and the object with its clicks
        self._check_labels(self._labels)
        self._check_writable(self._labels)
        labels = self._labels
        labels[entry.where] = entry.old_values
        if entry.cleared is not None:
            labels[entry.cleared] = entry.label
        if entry.promoted_from is not None and labels.dtype == entry.promoted_to:
            info = np.iinfo(entry.promoted_from) if entry.promoted_from != np.bool_ else None
            lo, hi = (0, 1) if info is None else (info.min, info.max)
            if labels.size == 0 or (lo <= labels.min() and labels.max() <= hi):
                self._labels = labels.astype(entry.promoted_from)
        obj = entry.obj
        if obj.prob is not None and obj.prob_gen != self._input_gen:
            obj.prob, obj.prob_clicks = None, ()  # made for other channels: predict again
        self._objects[entry.key] = obj
        return Change((entry.key,), True, "")

    def _redo_entry(self, entry: _Entry) -> Change:
        if isinstance(entry, _ClicksEdit):
            self._obj(entry.key).clicks = entry.after
            return Change((entry.key,), False, "")
        if isinstance(entry, _Group):
            for e in entry.entries:
                self._obj(e.key).clicks = e.after
            return Change(tuple(e.key for e in entry.entries), False, "")
        if isinstance(entry, _LabelsSwap):
            self._labels = entry.after
            return Change((), True, "")
        if isinstance(entry, _Reopen):
            self._objects[entry.key] = entry.after
            return Change((entry.key,), False, "")
        self._check_labels(self._labels)
        labels = self._labels
        target = promoted_dtype(labels.dtype, entry.label)
        if target != labels.dtype:
            labels = labels.astype(target)
        else:
            self._check_writable(labels)
        if entry.cleared is not None:
            labels[entry.cleared] = 0
        labels[entry.where] = entry.label
        self._labels = labels
        self._objects[entry.key] = entry.fresh
        return Change((entry.key,), True, "")
