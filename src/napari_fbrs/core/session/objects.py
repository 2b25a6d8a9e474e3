"""The current object of each slice: its clicks (undoable edits), stop marks and pinned id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from napari_fbrs.core.session.entries import _ClicksEdit, _Commit, _Group, _Reopen
from napari_fbrs.core.session.types import Clicks, SessionClick, SliceKey, _Object


def _click_items(click: Any) -> tuple[Any, Any, Any]:
    """``(y, x, positive)`` of one click item, or a ValueError that says what a click is."""
    try:
        items = tuple(click)
    except TypeError:
        items = ()
    if len(items) != 3:
        raise ValueError(f"a click is (y, x, positive), got {click!r}")
    return items


class _ObjectsMixin:
    """Clicks and object ids of :class:`SegmentationSession` (which sets ``_objects``)."""

    def _make_click(self, y: float, x: float, positive: bool) -> SessionClick:
        try:
            y, x = float(y), float(x)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"click coordinates must be numbers, got ({y!r}, {x!r})") from exc
        if not (np.isfinite(y) and np.isfinite(x)):
            raise ValueError(f"click (y={y}, x={x}) is not a finite coordinate")
        if not self.click_inside(y, x):
            h, w = self.spatial_shape
            raise ValueError(f"click (y={y}, x={x}) lies outside the image of shape ({h}, {w})")
        return SessionClick(float(y), float(x), bool(positive))

    def _obj(self, key: SliceKey) -> _Object:
        obj = self._objects.get(key)
        if obj is None:
            obj = self._objects[key] = _Object()
        return obj

    def clicks(self, key: SliceKey = ()) -> list[SessionClick]:
        """The current object's clicks on slice ``key``, oldest first."""
        obj = self._objects.get(self.check_key(key))
        return list(obj.clicks) if obj is not None else []

    def all_clicks(self) -> dict[SliceKey, list[SessionClick]]:
        """Clicks of every slice that has some, keys in ascending order."""
        return {k: list(o.clicks) for k, o in sorted(self._objects.items()) if o.clicks}

    def add_click(self, y: float, x: float, positive: bool = True, key: SliceKey = ()) -> None:
        """Add a click to slice ``key`` (an undo step). No prediction runs.

        Parameters
        ----------
        y, x : float
            Row and column in image pixels.
        positive : bool
            Object (``True``) or background (``False``).
        key : SliceKey
            The slice.

        Raises
        ------
        ValueError
            Outside the image or the stack; nothing changes.
        """
        key = self.check_key(key)
        click = self._make_click(y, x, positive)
        obj = self._obj(key)
        self._record(_ClicksEdit(key, obj.clicks, obj.clicks + (click,)))

    def set_clicks(self, key: SliceKey, clicks: Iterable[Sequence[Any]]) -> bool:
        """Replace the clicks of slice ``key`` (an undo step if they differ).

        Parameters
        ----------
        key : SliceKey
            The slice.
        clicks : iterable of (y, x, positive)
            The new clicks, oldest first.

        Returns
        -------
        bool
            Whether anything changed.
        """
        return bool(self.set_all_clicks({key: clicks}, only_given=True))

    def set_all_clicks(
        self, clicks: Mapping[SliceKey, Iterable[Sequence[Any]]], only_given: bool = False
    ) -> list[SliceKey]:
        """Replace the clicks of many slices at once (one undo step).

        Parameters
        ----------
        clicks : mapping of SliceKey to iterable of (y, x, positive)
            New clicks per slice.
        only_given : bool
            Leave slices absent from ``clicks`` alone; by default they are emptied (the
            mapping describes every click, e.g. a napari Points layer).

        Returns
        -------
        list of SliceKey
            The slices whose clicks changed.

        Raises
        ------
        ValueError
            A click outside the image or a key outside the stack; nothing changes.
        """
        new: dict[SliceKey, Clicks] = {}
        for key, items in clicks.items():
            key = self.check_key(key)
            new[key] = tuple(self._make_click(*_click_items(c)) for c in items)
        if not only_given:
            for key, obj in self._objects.items():
                if key not in new and obj.clicks:
                    new[key] = ()
        edits = [
            _ClicksEdit(key, self._obj(key).clicks, value)
            for key, value in sorted(new.items())
            if self._obj(key).clicks != value
        ]
        if len(edits) == 1:
            self._record(edits[0])
        elif edits:
            self._record(_Group(tuple(edits)))
        return [e.key for e in edits]

    def reset_clicks(self, key: SliceKey = ()) -> bool:
        """Remove every click of slice ``key`` (an undo step); returns whether any existed."""
        key = self.check_key(key)
        obj = self._objects.get(key)
        if obj is None or not obj.clicks:
            return False
        self._record(_ClicksEdit(key, obj.clicks, ()))
        return True

    def is_stop(self, key: SliceKey = ()) -> bool:
        """Whether slice ``key`` is a stop mark: it has clicks, all negative."""
        obj = self._objects.get(self.check_key(key))
        return obj is not None and bool(obj.clicks) and not any(c.positive for c in obj.clicks)

    def stop_slices(self, key: SliceKey, axis: int | None = None) -> tuple[int, ...]:
        """Indices along ``axis`` of the stop marks (:meth:`is_stop`) on ``key``'s line of
        slices (the other leading indices fixed), ``key`` itself excluded, ascending."""
        key = self.check_key(key)
        axis = self._check_axis(axis)
        out = []
        for k in self._objects:
            same_line = all(
                a == b for i, (a, b) in enumerate(zip(k, key, strict=True)) if i != axis
            )
            if same_line and k != key and self.is_stop(k):
                out.append(k[axis])
        return tuple(sorted(out))

    # -- object ids -------------------------------------------------------------------------
    def object_label(self, key: SliceKey = ()) -> int | None:
        """The pinned id of slice ``key``'s current object, or ``None`` (it gets the next
        free id when committed)."""
        obj = self._objects.get(self.check_key(key))
        return None if obj is None else obj.label

    def set_object_label(self, key: SliceKey, label: int | None) -> bool:
        """Pin the id that slice ``key``'s current object is committed with (not an undo
        step; an undone commit brings its object back with its pin).

        A commit with a pinned id *replaces* that id on the slices it writes: the id's
        old pixels there are cleared first, so finishing or propagating a corrected
        object never leaves pieces of its old version behind.

        Parameters
        ----------
        key : SliceKey
            The slice.
        label : int or None
            The id (at least 1), or ``None`` to unpin.

        Returns
        -------
        bool
            Whether the pin changed.
        """
        key = self.check_key(key)
        if label is not None:
            label = int(label)
            if label < 1:
                raise ValueError(f"label ids start at 1, got {label}")
        obj = self._obj(key)
        if obj.label == label:
            return False
        obj.label = label
        return True

    def pinned_labels(self) -> dict[SliceKey, int]:
        """The pinned ids (:meth:`set_object_label`) of every slice that has one, keys in
        ascending order."""
        return {k: o.label for k, o in sorted(self._objects.items()) if o.label is not None}

    def edit_object(self, label: int, key: SliceKey = ()) -> int:
        """Reopen object ``label`` on slice ``key`` for corrections (an undo step).

        The slice's object gets ``label`` as its pinned id, so that finishing it
        *replaces* the object there (:meth:`set_object_label`), and, when this session made
        the object on this slice (a commit still in the undo history) or remembers it
        (:meth:`remember_objects`: a restored autosave), the clicks that made it: its
        preview comes back and further clicks correct it. Objects made otherwise (a labels
        file, painting, a propagation that reached the slice) get the pin only: click them
        anew. Nothing is written into the labels until the object is finished;
        undo brings the slice back as it was.

        Parameters
        ----------
        label : int
            An id present on slice ``key`` of the labels.
        key : SliceKey
            The slice.

        Returns
        -------
        int
            The number of clicks loaded (0 when the session does not know them).

        Raises
        ------
        ValueError
            The slice has clicks of an unfinished object (finish or reset it first), or
            ``label`` is not on this slice. Nothing changes.
        """
        key = self.check_key(key)
        label = int(label)
        if label < 1:
            raise ValueError(f"label ids start at 1, got {label}")
        current = self._obj(key)
        if current.clicks:
            raise ValueError(
                "this slice has an unfinished object: finish it or reset its clicks first"
            )
        if not np.any(self._labels[key] == label):
            raise ValueError(f"there is no object {label} on this slice")
        made = None
        for entry in reversed(self._done):
            if isinstance(entry, _Commit) and entry.label == label and key in entry.keys:
                made = entry.obj if entry.key == key else None
                break
        if made is None:
            made = self._known_object(label, key)
        reopened = _Object(label=label)
        if made is not None and made.clicks:
            reopened.clicks = made.clicks
            if made.prob is not None and made.prob_clicks == made.clicks:
                # a recent commit keeps its map: the preview is back without a prediction
                reopened.prob, reopened.prob_clicks = made.prob, made.prob_clicks
                reopened.prob_gen = made.prob_gen
        self._record(_Reopen(key, label, current, reopened))
        return len(reopened.clicks)

    def remember_objects(
        self, objects: Iterable[tuple[int, SliceKey, Iterable[Sequence[Any]], int]]
    ) -> None:
        """Record objects made before this session, so that :meth:`edit_object` can bring
        their clicks back (a restored autosave: :meth:`SessionState.restore
        <napari_fbrs.core.autosave.SessionState.restore>` calls it).

        Parameters
        ----------
        objects : iterable of (label, key, clicks, n_pixels)
            Each object's id, the slice its clicks are on, its clicks ``(y, x, positive)``
            and the number of its pixels on that slice when it was made. A later record of
            the same id and slice wins. An object is only reopened with its clicks while it
            still has that many pixels there (not painted over, not replaced since). Records
            that do not fit the image (a slice or click outside it) are skipped.
        """
        for label, key, clicks, n_pixels in objects:
            known = self._known_clicks(key, clicks)
            if known is not None:
                self._known[(int(label), known[0])] = (known[1], int(n_pixels))

    def remember_propagations(self, objects: Iterable[Sequence[Any]]) -> None:
        """Record objects propagated through the stack before this session (a restored
        autosave), so that :meth:`reproducible_objects` lists them with their clicks.

        Parameters
        ----------
        objects : iterable of (label, key, clicks, n_pixels[, propagation])
            Each propagation's id, the slice it started from, the clicks there
            ``(y, x, positive)``, the id's pixels in the whole stack when it was made and,
            optionally, its settings (a mapping as :attr:`CommittedObject.propagation`, or
            ``None`` when not known). A later record of the same id wins. A propagation is
            only listed while its id still has exactly that many pixels. Records that do
            not fit the image are skipped.
        """
        for label, key, clicks, n_pixels, *rest in objects:
            known = self._known_clicks(key, clicks)
            if known is not None:
                settings = dict(rest[0]) if rest and rest[0] is not None else None
                self._known_propagations[int(label)] = (*known, int(n_pixels), settings)

    def _known_clicks(
        self, key: SliceKey, clicks: Iterable[Sequence[Any]]
    ) -> tuple[SliceKey, tuple[SessionClick, ...]] | None:
        """A remembered record's slice and clicks; ``None`` when they do not fit the image."""
        try:
            return self.check_key(key), tuple(self._make_click(*_click_items(c)) for c in clicks)
        except ValueError:  # not of this image: nothing to remember
            return None

    def _known_object(self, label: int, key: SliceKey) -> _Object | None:
        """A remembered object (:meth:`remember_objects`) that is still as it was made."""
        known = self._known.get((label, key))
        if known is None:
            return None
        clicks, n_pixels = known
        if int(np.count_nonzero(self._labels[key] == label)) != n_pixels:
            return None  # changed since (painting, overwriting): its clicks would not fit
        return _Object(clicks=clicks)

    def carried_label(self, key: SliceKey = ()) -> int | None:
        """The id to keep when moving on from slice ``key`` to a neighbour (the same
        object, on the next slice).

        Returns
        -------
        int or None
            The pinned id of ``key``'s current object; else the id of the most recent
            commit (in the undo history) that wrote on ``key``; else ``None``.
        """
        key = self.check_key(key)
        obj = self._objects.get(key)
        if obj is not None and obj.label is not None:
            return obj.label
        for entry in reversed(self._done):
            if isinstance(entry, _Commit) and key in entry.keys:
                return entry.label
        return None
