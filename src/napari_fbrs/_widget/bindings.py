"""The dock widget's wiring to the viewer: layer-list and dims events, keyboard
shortcuts on the canvas, and canvas clicks turned into session clicks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from napari_fbrs._widget import notify

__all__ = ["CLICK_TOLERANCE_PX", "BindingsMixin"]

#: a press and release of the mouse moving less than this (screen pixels) is a click
CLICK_TOLERANCE_PX = 5.0


class BindingsMixin:
    """Viewer events, key bindings and the mouse callback (connected and disconnected).

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def _connect_viewer(self) -> None:
        viewer = self.viewer
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.layers.events.moved.connect(self._on_layers_changed)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.mouse_drag_callbacks.append(self._on_mouse)
        self._bind_keys()

    def _disconnect_viewer(self) -> None:
        viewer = self.viewer
        for emitter, slot in (
            (viewer.layers.events.inserted, self._on_layers_changed),
            (viewer.layers.events.removed, self._on_layers_changed),
            (viewer.layers.events.moved, self._on_layers_changed),
            (viewer.dims.events.current_step, self._on_step),
        ):
            with contextlib.suppress(Exception):
                emitter.disconnect(slot)
        with contextlib.suppress(ValueError):
            viewer.mouse_drag_callbacks.remove(self._on_mouse)
        self._unbind_keys()
        self._detach_layer_events()

    def _bind_keys(self) -> None:
        """Viewer key bindings (the selected layer's own bindings take precedence, so a
        Labels layer keeps its painting undo on Ctrl+Z)."""
        from app_model.types import KeyCode, KeyMod

        def undo(viewer: Any) -> None:
            self.undo()

        def redo(viewer: Any) -> None:
            self.redo()

        def reset(viewer: Any) -> None:
            self.reset_clicks()

        def next_slice(viewer: Any) -> None:
            self.next_slice()

        def previous_slice(viewer: Any) -> None:
            self.previous_slice()

        for key, func in (
            (KeyMod.CtrlCmd | KeyCode.KeyZ, undo),
            (KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ, redo),
            (KeyCode.Escape, reset),
            (KeyCode.Space, self._space_key),
            (KeyCode.Period, next_slice),
            (KeyCode.Comma, previous_slice),
            (KeyCode.KeyE, self._edit_key),
        ):
            previous = self.viewer.bind_key(key, func, overwrite=True)
            self._bindings.append((key, previous))

    def _unbind_keys(self) -> None:
        for key, previous in reversed(self._bindings):
            with contextlib.suppress(Exception):
                self.viewer.bind_key(key, previous, overwrite=True)
        self._bindings.clear()

    def _space_key(self, viewer: Any) -> Iterator[None]:
        """Space: a tap finishes the object; holding it keeps napari's "hold to pan/zoom"."""
        hold = None
        try:
            from napari.components._viewer_key_bindings import hold_for_pan_zoom

            hold = hold_for_pan_zoom(viewer)
            next(hold)
        except (ImportError, StopIteration):
            hold = None
        started = time.monotonic()
        yield
        if hold is not None:
            with contextlib.suppress(StopIteration):
                next(hold)
        try:
            from napari.settings import get_settings

            delay = float(get_settings().application.hold_button_delay)
        except Exception:  # pragma: no cover - settings unavailable
            delay = 0.5
        if time.monotonic() - started < delay:
            self.finish_object()

    def _on_mouse(self, viewer: Any, event: Any) -> Iterator[None]:
        """Viewer drag callback: a click (press and release without moving) adds a click."""
        if (
            self._session is None
            or not self.canvas_check.isChecked()
            or event.button not in (1, 2)
            or viewer.dims.ndisplay != 2
        ):
            return
        active = viewer.layers.selection.active
        if active is not None and str(getattr(active, "mode", "pan_zoom")) != "pan_zoom":
            return  # the user is working with a layer tool
        start = np.asarray(event.pos, dtype=float)
        position = tuple(event.position)
        button = event.button
        shift = "Shift" in event.modifiers
        other_modifiers = any(m != "Shift" for m in event.modifiers)
        displayed = tuple(event.dims_displayed)
        yield
        while event.type == "mouse_move":
            if np.hypot(*(np.asarray(event.pos, dtype=float) - start)) > CLICK_TOLERANCE_PX:
                return  # a drag (pan): not a click
            yield
        if other_modifiers:
            return
        self._canvas_click(position, positive=(button == 1 and not shift), displayed=displayed)

    def _canvas_click(
        self, position: tuple[float, ...], positive: bool, displayed: tuple[int, ...] | None = None
    ) -> bool:
        """Add a click at a world ``position`` (a canvas click)."""
        session = self._session
        layer = self._image_layer
        if session is None or layer is None:
            return False
        ndim = self.viewer.dims.ndim
        if displayed is not None and tuple(displayed) != (ndim - 2, ndim - 1):
            notify.warning(
                "f-BRS segments the image's last two axes: show them (no "
                "transposed or 3D view) to click."
            )
            return False
        data = np.asarray(layer.world_to_data(position), dtype=float)
        n = len(session.stack_shape)
        y, x = float(data[n]), float(data[n + 1])
        key = session.key_at(data[:n])
        if key is None:
            return False
        if not session.click_inside(y, x):
            return False  # outside the image: ignore, as napari's tools do
        return self.add_click(y, x, positive, key=key)
