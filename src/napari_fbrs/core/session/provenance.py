"""Which objects of the labels the session can reproduce from their clicks (for saving the
clicks beside the labels, so that ``napari-fbrs segment --clicks`` redoes the work)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from napari_fbrs.core.session.commits import committed_object
from napari_fbrs.core.session.entries import _Commit
from napari_fbrs.core.session.types import CommittedObject, SessionClick, SliceKey


class _ProvenanceMixin:
    """Provenance queries of :class:`SegmentationSession` (it uses the history of
    ``_HistoryMixin``, the labels and the remembered objects of ``_ObjectsMixin``)."""

    def reproducible_objects(self) -> list[CommittedObject]:
        """The objects of the labels that are exactly what their clicks made.

        An object (an id on the slices its commit wrote) qualifies when its last commit
        is still in the undo history, or it is remembered from a restored autosave
        (:meth:`remember_objects`, :meth:`remember_propagations`), and its pixels on those
        slices are still all and only the ones that commit wrote: not painted, not partly
        overwritten, not merged with another commit of the same id. A propagation counts as
        one object with the clicks of the slice it started from.

        Returns
        -------
        list of CommittedObject
            In the order the objects were first made (an object corrected with
            :meth:`edit_object` keeps its place, with its latest clicks), so that replaying
            them, each written only over background, gives what the session gave as far as
            the objects do not overlap; remembered objects come first, ordered by id and
            slice. ``n_pixels`` is each object's pixel count (``n_object``), not only the
            pixels its last commit wrote.
        """
        labels = self._labels
        first: dict[tuple[int, SliceKey], int] = {}  # when each object was first made
        for i, entry in enumerate(self._done):
            if isinstance(entry, _Commit):
                for k in entry.keys:
                    first.setdefault((entry.label, k), i)
        seen: set[tuple[int, SliceKey]] = set()
        found: list[CommittedObject] = []
        for entry in reversed(self._done):
            if not isinstance(entry, _Commit):
                continue
            keys = tuple(sorted(entry.keys))
            fresh = [(entry.label, k) for k in keys if (entry.label, k) not in seen]
            seen.update(fresh)
            if len(fresh) != len(keys) or not entry.obj.clicks:
                continue  # a later commit of this id changed one of its slices
            if not _unchanged(labels, entry, keys):
                continue
            found.append(replace(committed_object(entry), n_pixels=int(entry.n_object)))
        # replayed in the order the objects were first made: an object corrected later
        # (Edit object) had its pixels before the objects made after it
        found.sort(key=lambda o: min(first[(o.label, k)] for k in o.keys))
        remembered = []
        for (label, key), (clicks, n_pixels) in sorted(self._known.items()):
            if (label, key) in seen or not clicks:
                continue
            if int(np.count_nonzero(labels[key] == label)) != n_pixels:
                continue  # changed since it was made
            remembered.append(_remembered(label, key, clicks, n_pixels))
        committed = {label for label, _ in seen}  # ids with a commit in the history
        for label, (key, clicks, n_pixels, settings) in self._known_propagations.items():
            if label in committed or not clicks:
                continue  # changed (or made again) in this session
            propagated = _remembered_propagation(labels, label, key, clicks, n_pixels, settings)
            if propagated is not None:
                remembered.append(propagated)
        remembered.sort(key=lambda o: (o.label, o.key))
        return remembered + found


def _unchanged(labels: np.ndarray, entry: _Commit, keys: tuple[SliceKey, ...]) -> bool:
    """The commit made the whole object on its slices, and it is still as it was made."""
    if entry.n_object is None or not entry.where:
        return False
    if not np.all(labels[entry.where] == entry.label):
        return False
    now = sum(int(np.count_nonzero(labels[key] == entry.label)) for key in keys)
    return now == entry.n_object


def _remembered(
    label: int, key: SliceKey, clicks: tuple[SessionClick, ...], n_pixels: int
) -> CommittedObject:
    n = int(n_pixels)
    return CommittedObject(
        key=key, label=int(label), clicks=tuple(clicks), n_pixels=n, keys=(key,), n_object=n
    )


def _remembered_propagation(
    labels: np.ndarray,
    label: int,
    key: SliceKey,
    clicks: tuple[SessionClick, ...],
    n_pixels: int,
    settings: Mapping[str, Any] | None = None,
) -> CommittedObject | None:
    """A remembered propagation, if its id still has exactly the pixels it had when made."""
    present = labels == label
    if int(np.count_nonzero(present)) != n_pixels or not present[key].any():
        return None
    on_slice = present.reshape(present.shape[: len(key)] + (-1,)).any(axis=-1)
    keys = tuple(tuple(int(i) for i in k) for k in np.argwhere(on_slice))
    return replace(
        _remembered(label, key, clicks, n_pixels),
        propagated=True,
        keys=keys,
        propagation=None if settings is None else dict(settings),
    )
