"""Walking a stack: the slice axis, the slice shown, next/previous slice keeping the
object's id, and propagating an object along the axis on a worker (progress, Cancel)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_fbrs._widget import notify
from napari_fbrs.core.session import Change, SliceKey
from napari_fbrs.core.session.propagation import CONVEX_REGROWTH

__all__ = ["CONVEX_REGROWTH", "DIRECTIONS", "StackMixin"]

#: the propagation directions offered: (text, direction)
DIRECTIONS = (("both ways", 0), ("forward (+1)", 1), ("backward (-1)", -1))


class StackMixin:
    """Slices of an nD image and propagation through them.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    @property
    def stack_axis(self) -> int | None:
        """The leading axis that next/previous slice and propagation walk (an index into
        ``session.stack_shape``, e.g. 0 for t and 1 for z of ``(t, z, y, x)``), chosen in
        the panel; ``None`` without slices."""
        data = self.axis_combo.currentData()
        return None if data is None else int(data)

    @stack_axis.setter
    def stack_axis(self, axis: int) -> None:
        index = self.axis_combo.findData(int(axis))
        if index < 0:
            raise ValueError(f"axis {axis} is not a slice axis of this image")
        self.axis_combo.setCurrentIndex(index)

    def next_slice(self) -> bool:
        """Go to the next slice along :attr:`stack_axis`, keeping the object id (".").

        If the slice shown has an unfinished object (with an object click), it is
        finished first. On the next slice, the object is pinned to the id of the object
        finished here (or the id pinned here), so finishing it there writes the same id.

        Returns
        -------
        bool
            Whether the viewer moved (``False`` at the end of the stack, after a failed
            finish, or while a pending prediction is finished first: it moves then).
        """
        return self._step_slice(+1)

    def previous_slice(self) -> bool:
        """Go to the previous slice along :attr:`stack_axis`, keeping the object id (",");
        see :meth:`next_slice`."""
        return self._step_slice(-1)

    def cancel_propagation(self) -> bool:
        """Stop a running propagation; nothing is written. Returns whether one ran."""
        if not self._propagating:
            return False
        self._cancel_requested = True
        self._set_status("Cancelling the propagation...")
        return True

    def propagate_object(
        self,
        axis: int | None = None,
        direction: int | None = None,
        stop_iou: float | None = None,
        regrowth: float | None = None,
        min_contrast: float | None = None,
    ) -> int | None:
        """Carry the current slice's object through the stack and commit it on every slice
        reached (one undo step).

        Each next slice is segmented from clicks derived from the previous slice's mask;
        the walk stops where the object vanishes or changes too much (IoU below
        ``stop_iou``), before a slice whose clicks are all negative (a stop mark), or at
        the end of the stack. It runs on a worker, with progress and Cancel. Existing
        labels are kept unless "overwrite" is ticked; when the object's id is pinned
        (kept from a neighbouring slice, or set in "Object id"), that id's old pixels on
        the slices reached are replaced: correct a slice, then propagate from there.

        Parameters
        ----------
        axis : int, optional
            Leading axis to walk (index into ``session.stack_shape``); default the
            panel's *Slice axis* (:attr:`stack_axis`).
        direction : int, optional
            ``0`` both ways, ``+1`` forward, ``-1`` backward; default the panel's.
        stop_iou : float, optional
            Default the panel's *Stop IoU*.
        regrowth : float, optional
            Area regrowth stop rule (:func:`napari_fbrs.propagate`); default
            :data:`CONVEX_REGROWTH` when the panel's *convex objects* box is ticked, else off.
        min_contrast : float, optional
            Brightness stop rule; default the panel's *Min contrast* (0 = off).

        Returns
        -------
        int or None
            The id written when it ran synchronously; ``None`` otherwise (the result
            arrives later) or when nothing could be propagated.
        """
        session = self._require_session()
        if session is None:
            return None
        if self._running:
            notify.info("f-BRS: wait for the running prediction, then propagate.")
            return None
        axis = self.stack_axis if axis is None else int(axis)
        direction = self.direction_combo.currentData() if direction is None else direction
        stop_iou = self.stop_iou_spin.value() if stop_iou is None else float(stop_iou)
        if regrowth is None and self.convex_check.isChecked():
            regrowth = CONVEX_REGROWTH
        if min_contrast is None and self.min_contrast_spin.value() > 0:
            min_contrast = self.min_contrast_spin.value()
        try:
            request = session.propagation_request(
                self._key,
                axis=axis,
                direction=direction,
                stop_iou=stop_iou,
                regrowth=regrowth,
                min_contrast=min_contrast,
            )
        except ValueError as exc:
            notify.warning(f"f-BRS: {exc}")
            return None
        bridge = self._bridge

        def progress(done: int, total: int) -> None:
            bridge.progress.emit(done, total)

        def cancel() -> bool:
            return self._closed or self._cancel_requested or session.is_stale(request)

        def work() -> np.ndarray | None:
            return session.compute_propagation(request, progress=progress, cancel=cancel)

        self._running = True
        self._propagating = True
        self._cancel_requested = False
        self._set_busy(True)
        stops = (
            f", stopping before slices {list(request.stop_slices)}" if request.stop_slices else ""
        )
        self._set_status(f"Propagating along axis {request.axis}{stops}...")
        self._update_buttons()
        return self._run_job(
            work,
            lambda volume: self._finish_propagation(request, volume),
            self._on_propagation_error,
            self._on_done,
        )

    def _fill_axis_choices(self) -> None:
        """The leading axes one can walk (z, t, ...), the last one chosen."""
        session = self._session
        combo = self.axis_combo
        previous = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        if session is not None:
            offset = self.viewer.dims.ndim - len(session.labels_shape)
            labels = list(self.viewer.dims.axis_labels)
            for i in session.slice_axes:
                j = offset + i
                name = labels[j] if 0 <= j < len(labels) else str(i)
                combo.addItem(f"{name} (axis {i}, {session.stack_shape[i]} slices)", i)
        index = combo.findData(previous) if previous is not None else -1
        combo.setCurrentIndex(index if index >= 0 else combo.count() - 1)
        combo.blockSignals(False)

    def _compute_key(self) -> SliceKey:
        session = self._session
        if session is None or not session.stack_shape:
            return ()
        n = len(session.stack_shape)
        data = self._image_layer.world_to_data(np.asarray(self.viewer.dims.point))
        key = session.key_at(np.asarray(data)[:n], clip=True)
        return self._key if key is None else key

    def _on_step(self, event: Any = None) -> None:
        if self._session is None:
            return
        key = self._compute_key()
        if key != self._key:
            self._key = key
            self._finish_pending = False
            self._step_pending = 0
            self._update_buttons()
            self._schedule()

    def _goto(self, key: SliceKey) -> None:
        """Show slice ``key`` (after an undo/redo elsewhere, or a slice step)."""
        if not key or key == self._key or self._image_layer is None:
            return
        layer = self._image_layer
        position = list(key) + [0.0] * len(self._session.spatial_shape)
        world = np.asarray(layer.data_to_world(position))
        offset = self.viewer.dims.ndim - layer.ndim
        for i in range(len(key)):
            if i != self._session.channel_axis:  # every channel shows the same slice
                self.viewer.dims.set_point(offset + i, float(world[i]))

    def _step_slice(self, step: int) -> bool:
        """Next/previous slice along the stack axis, keeping the object id."""
        session = self._require_session()
        if session is None:
            return False
        if self._propagating:
            notify.info("f-BRS: wait for the propagation (or cancel it), then move on.")
            return False
        axis = self.stack_axis
        if axis is None:
            self._set_status("This image has no slices to step through.")
            return False
        target = session.neighbour(self._key, axis, step)
        if target is None:
            self._set_status(f"This is the {'last' if step > 0 else 'first'} slice.")
            return False
        clicks = session.clicks(self._key)
        if any(c.positive for c in clicks):  # an unfinished object: finish it first
            if not session.is_up_to_date(self._key):
                self._finish_pending = True
                self._step_pending = step
                self._set_status("Finishing when the prediction arrives, then moving on...")
                self._schedule()
                return False
            if self._commit_now() is None:
                return False
        label = session.carried_label(self._key)
        if label is not None:
            session.set_object_label(target, label)
        self._goto(target)
        if label is not None:
            self._set_status(f"Slice {target}: segmenting object {label} (kept).")
        self._update_buttons()
        return True

    def _finish_propagation(self, request: Any, volume: np.ndarray | None) -> int | None:
        session = self._session
        if session is None or self._closed:
            return None
        if session.is_stale(request):
            self._set_status("Propagation dropped: the object changed meanwhile.")
            return None
        if volume is None:
            self._set_status("Propagation cancelled: nothing was written.")
            return None
        self._adopt_objects_layer()
        label = int(self._objects.selected_label) if self.selected_label_check.isChecked() else None
        try:
            info = session.commit_propagation(
                request, volume, label=label, overwrite=self.overwrite_check.isChecked()
            )
        except (ValueError, TypeError, OverflowError) as exc:
            notify.warning(f"f-BRS: {exc}")
            return None
        self._after_change(Change((request.key,), True, "propagation"))
        reached = np.flatnonzero(volume.any(axis=(1, 2)))
        cleared = f"; {info.n_cleared} pixels of its old version cleared" if info.n_cleared else ""
        self._set_status(
            f"Object {info.label} written on {reached.size} slices "
            f"({reached[0]}-{reached[-1]} along axis {request.axis}; "
            f"{info.n_pixels} pixels{cleared})."
        )
        return info.label

    def _on_propagation_error(self, exc: BaseException) -> None:
        message = notify.error_message(exc)
        self._set_status(f"Propagation failed: {message}")
        notify.error(f"f-BRS propagation failed: {message}")
