"""Editing the session from the panel: clicks (from the API, the canvas or the clicks
layer's own tools), finishing objects, undo and redo, and showing every change in the
layers (clicks, previews at the threshold, objects)."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import numpy as np

from napari_fbrs._widget import notify
from napari_fbrs.core.session import Change, SessionClick, SliceKey

__all__ = ["EditingMixin"]


class EditingMixin:
    """Clicks, commits, undo/redo, and drawing their results into the layers.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def add_click(
        self, y: float, x: float, positive: bool = True, key: SliceKey | None = None
    ) -> bool:
        """Add a click and predict.

        Parameters
        ----------
        y, x : float
            Row and column in image pixels (napari ``(row, col)``).
        positive : bool
            Object (``True``) or background (``False``).
        key : SliceKey, optional
            Slice (leading indices); default the one shown.

        Returns
        -------
        bool
            Whether the click was accepted (inside the image).
        """
        session = self._require_session()
        if session is None:
            return False
        key = self._key if key is None else session.check_key(key)
        try:
            session.add_click(y, x, positive, key=key)
        except ValueError as exc:
            notify.warning(f"f-BRS: {exc}")
            return False
        self._after_change(Change((key,), False, "click"))
        return True

    def finish_object(self) -> int | None:
        """Commit the current slice's object into the objects layer (Space).

        The id is the next free one, or the objects layer's selected label when "use the
        selected label" is ticked; existing labels are kept unless "overwrite" is ticked.
        If a prediction is still running, the commit happens when it arrives.

        Returns
        -------
        int or None
            The id written, ``None`` if nothing was committed (yet).
        """
        session = self._require_session()
        if session is None:
            return None
        if not session.clicks(self._key):
            self._set_status("Nothing to finish: click on an object first.")
            return None
        if not session.is_up_to_date(self._key):
            self._finish_pending = True
            self._set_status("Finishing when the prediction arrives...")
            self._schedule()
            return None
        return self._commit_now()

    def edit_object(self, label: int | None = None) -> bool:
        """Reopen a finished object on the current slice to correct it (E).

        Its clicks come back when this session made it (the preview shows it again, and
        new clicks correct it); finishing then *replaces* it on this slice. Objects from
        elsewhere (a labels file, painting) keep their id and are clicked anew. Nothing is
        written until the object is finished; undo brings the slice back as it was.

        Parameters
        ----------
        label : int, optional
            The object's id; default the objects layer's selected label.

        Returns
        -------
        bool
            Whether the object was reopened.
        """
        session = self._require_session()
        if session is None:
            return False
        self._adopt_objects_layer()
        if label is None:
            label = int(self._objects.selected_label)
        try:
            n = session.edit_object(int(label), self._key)
        except ValueError as exc:
            notify.warning(f"f-BRS: {exc}")
            return False
        with self._guarding():
            self._objects.selected_label = int(label)
        self._after_change(Change((self._key,), False, "edit"))
        how = (
            f"its {n} click(s) are back; correct it"
            if n
            else "this session did not make it: click it anew"
        )
        self._set_status(f"Editing object {label}: {how}, then Finish replaces it.")
        return True

    def _edit_key(self, viewer: Any) -> None:
        """E on the canvas: edit the object under the mouse, else the selected label."""
        session = self._session
        if session is None or self._objects is None:
            return
        label = None
        with contextlib.suppress(Exception):
            data = np.asarray(self._objects.world_to_data(viewer.cursor.position), dtype=float)
            n = len(session.stack_shape)
            y, x = int(round(data[n])), int(round(data[n + 1]))
            key = session.key_at(data[:n])
            if key == self._key and session.click_inside(y, x):
                label = int(session.labels[(*key, y, x)]) or None
        self.edit_object(label)

    def undo(self) -> bool:
        """Undo the last click edit or commit (Ctrl+Z); returns whether anything changed."""
        return self._history_step(undo=True)

    def redo(self) -> bool:
        """Redo the last undone step (Ctrl+Shift+Z); returns whether anything changed."""
        return self._history_step(undo=False)

    def reset_clicks(self) -> bool:
        """Remove the current slice's clicks (Escape); an undo step. Without clicks, it
        unpins the id kept for the slice's next object instead."""
        session = self._require_session()
        if session is None:
            return False
        self._finish_pending = False
        self._step_pending = 0
        if not session.reset_clicks(self._key):
            # nothing to reset: a second Escape forgets the id kept for this slice
            if session.set_object_label(self._key, None):
                self._set_status("The next object on this slice gets a new id.")
                self._update_buttons()
                return True
            return False
        self._after_change(Change((self._key,), False, "reset of the clicks"))
        return True

    def _on_points_data(self, event: Any = None) -> None:
        """Edits of the clicks layer with napari's tools (add, move, delete)."""
        if self._guard or self._session is None:
            return
        action = str(getattr(event, "action", "changed")) if event is not None else "changed"
        if action in ("adding", "removing", "changing"):
            return
        points = self._points
        data = np.asarray(points.data, dtype=float)
        features = points.features
        positive = (
            np.asarray(features["positive"], dtype=bool)
            if "positive" in features and len(features) == len(data)
            else np.ones(len(data), dtype=bool)
        )
        session = self._session
        n = len(session.stack_shape)
        mapping: dict[SliceKey, list[SessionClick]] = {}
        rejected = 0
        for row, pos in zip(data, positive, strict=True):
            key = session.key_at(row[:n])
            y, x = float(row[n]), float(row[n + 1])
            if key is None:
                rejected += 1
                continue
            if not session.click_inside(y, x):
                rejected += 1
                continue
            mapping.setdefault(key, []).append(SessionClick(y, x, bool(pos)))
        changed = session.set_all_clicks(mapping)
        if rejected:
            notify.warning(f"f-BRS: {rejected} click(s) outside the image were removed.")
            self._write_points()
        if changed:
            self._after_change(Change(tuple(changed), False, "click edit"), write_points=False)

    def _import_points(self) -> None:
        """Take over clicks already in a reused clicks layer (no undo step)."""
        if len(self._points.data):
            self._on_points_data(None)
            self._session.clear_history()  # the import is not an undo step

    def _write_points(self) -> None:
        """Show the session's clicks in the clicks layer."""
        session = self._session
        points = self._points
        if session is None or points is None:
            return
        ndim = len(session.labels_shape)
        rows: list[list[float]] = []
        positive: list[bool] = []
        for key, clicks in session.all_clicks().items():
            for c in clicks:
                rows.append([*key, c.y, c.x])
                positive.append(c.positive)
        data = np.asarray(rows, dtype=float).reshape(-1, ndim)
        with self._guarding():
            points.selected_data = set()
            points.data = data
            points.features = {"positive": np.asarray(positive, dtype=bool)}
            self._apply_default_polarity()
            points.refresh()

    def _after_change(self, change: Change, write_points: bool = True) -> None:
        self._schedule()  # first, so the worker runs while the layers are updated
        if write_points:
            self._write_points()
        self._render(change.keys)
        if change.labels:
            self._write_objects()
        self._update_buttons()
        self._autosave_soon(immediate=change.labels)

    def _render(self, keys: Any, clear: bool = False) -> None:
        """Draw the previews of slices ``keys`` into the current layer (skipping those
        that already show their probability map at the current threshold)."""
        session = self._session
        current = self._current
        if session is None or current is None:
            return
        data = current.data
        if clear:
            data[...] = 0
            self._shown.clear()
        changed = False
        for key in keys:
            prob = session.prob(key)
            shown = self._shown.get(key)
            if prob is None and shown is None and not clear:
                continue
            if prob is not None and shown is not None and shown[0] is prob:
                if shown[1] == session.prob_thresh:
                    continue
            plane = data[key] if key else data
            if prob is None:
                plane[...] = 0
                self._shown.pop(key, None)
            else:
                np.greater_equal(prob, session.prob_thresh, out=plane, casting="unsafe")
                self._shown[key] = (prob, session.prob_thresh)  # holds prob: `is` is safe
            changed = True
        if changed or clear:
            current.refresh()

    def _render_all(self) -> None:
        if self._session is not None:
            self._render(self._session.preview_keys(), clear=True)

    def _write_objects(self) -> None:
        labels = self._session.labels
        with self._guarding():
            if self._objects.data is not labels:
                self._objects.data = labels  # a dtype promotion made a new array
                self._session.set_labels(self._objects.data, keep_history=True)
            else:
                self._objects.refresh()

    def _on_threshold(self, value: int) -> None:
        thresh = value / 100.0
        self.thresh_label.setText(f"{thresh:.2f}")
        self._settings = replace(self._settings, prob_thresh=thresh)
        if self._session is not None:
            self._session.prob_thresh = thresh
            self._render_all()

    def _history_step(self, undo: bool) -> bool:
        session = self._require_session()
        if session is None:
            return False
        self._finish_pending = False
        self._adopt_objects_layer()
        try:
            change = session.undo() if undo else session.redo()
        except Exception as exc:
            notify.error(f"f-BRS {'undo' if undo else 'redo'} failed: {exc}")
            return False
        if change is None:
            self._set_status(f"Nothing to {'undo' if undo else 'redo'}.")
            return False
        self._set_status(change.description.capitalize() + ".")
        if self._key not in change.keys and change.keys:
            self._goto(change.keys[0])
        self._after_change(change)
        if not change.labels:  # a commit's undo or redo was saved by _after_change
            self._autosave_soon(immediate=True)
        return True

    def _commit_now(self) -> int | None:
        session = self._session
        self._finish_pending = False
        self._adopt_objects_layer()
        label = None
        if self.selected_label_check.isChecked():
            label = int(self._objects.selected_label)
            if label == session.object_label(self._key):
                label = None  # the pinned id: replace its old version, as without the option
        try:
            info = session.commit(
                self._key, label=label, overwrite=self.overwrite_check.isChecked()
            )
        except (ValueError, TypeError, OverflowError) as exc:
            self._step_pending = 0
            notify.warning(f"f-BRS: {exc}")
            return None
        self._after_change(Change((self._key,), True, "commit"))
        note = (
            f" (the objects layer became {session.labels.dtype})"
            if info.promoted_from is not None
            else ""
        )
        if info.n_cleared:
            note += f"; {info.n_cleared} pixels of its old version cleared"
        self._set_status(f"Object {info.label} written: {info.n_pixels} pixels{note}.")
        step, self._step_pending = self._step_pending, 0
        if step:  # a slice step waited for this finish
            self._step_slice(step)
        return info.label
