"""``FbrsWidget``: click-to-segment with f-BRS in napari.

The widget is thin glue between napari and :class:`napari_fbrs.core.session.
SegmentationSession`, which holds the clicks, predictors, previews, commits and the undo
history. The widget

* keeps three layers beside the selected image (copying its scale and translate):
  Points ``fbrs clicks`` (boolean feature ``positive``: green object clicks, red
  background clicks), Labels ``fbrs current`` (the preview of the object being segmented
  on each slice) and Labels ``fbrs objects`` (finished objects; any other Labels layer of
  the image's shape can be chosen instead);
* turns canvas clicks (left: object; right or Shift+left: background) and edits of the
  clicks layer with napari's own Points tools into session clicks, on the slice they lie
  on (the leading axes of an nD image index slices, the last two are spatial);
* chooses what the model sees: one channel, or up to three mapped to red, green and blue,
  from the image's own channel axis or from other image layers of its shape (each scaled
  by its layer's contrast limits);
* walks a stack: next/previous slice keeping the object's id, and propagation along a
  chosen axis in a chosen direction, on a worker with progress and Cancel;
* runs predictions on a napari thread worker (or synchronously when
  :attr:`FbrsWidget.synchronous` is true, for tests), dropping results that a newer click
  made stale;
* turns every error into a napari notification, leaving the layers as they were;
* autosaves the session (:mod:`napari_fbrs.core.autosave`) after every commit, undo and
  redo, and shortly after click edits, to a sidecar beside the image's file (or in the
  cache folder, keyed by the layer name), and offers to restore it when the image is
  opened again ("Restore previous session"); autosave errors never stop segmenting;
* saves the objects to a TIFF file ("Save objects..."), after which the autosave is
  removed when it holds nothing more, and makes the objects of a clicks file again
  ("Load objects...", on a worker).

Nothing here imports torch at import time: the model is loaded on the worker thread.

The widget is made of mixins, one job each, in the modules beside this one:
:mod:`~napari_fbrs._widget.form` (the panel's controls), :mod:`~napari_fbrs._widget.settings`
(predictor settings), :mod:`~napari_fbrs._widget.models` (model choice and loading),
:mod:`~napari_fbrs._widget.layers` (the image and the widget's layers),
:mod:`~napari_fbrs._widget.channels` (the model's input channels),
:mod:`~napari_fbrs._widget.stack` (slices and propagation),
:mod:`~napari_fbrs._widget.editing` (clicks, commits, undo/redo and the layers' display),
:mod:`~napari_fbrs._widget.prediction` (prediction workers),
:mod:`~napari_fbrs._widget.autosave` (autosave and restore),
:mod:`~napari_fbrs._widget.saving` (saving the objects to a file),
:mod:`~napari_fbrs._widget.loading` (making a clicks file's objects again),
:mod:`~napari_fbrs._widget.preferences` (the settings remembered between sessions),
:mod:`~napari_fbrs._widget.bindings` (viewer events, keys and mouse) and
:mod:`~napari_fbrs._widget.notify` (notifications). This module puts them together and
holds the widget's state and public properties.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QWidget

from napari_fbrs._widget.autosave import AutosaveMixin
from napari_fbrs._widget.bindings import CLICK_TOLERANCE_PX as CLICK_TOLERANCE_PX
from napari_fbrs._widget.bindings import BindingsMixin
from napari_fbrs._widget.channels import NO_CHANNEL as NO_CHANNEL
from napari_fbrs._widget.channels import ChannelsMixin
from napari_fbrs._widget.editing import EditingMixin
from napari_fbrs._widget.form import FormMixin
from napari_fbrs._widget.layers import (
    CLICKS_LAYER,
    CURRENT_LAYER,
    OBJECTS_LAYER,
    LayersMixin,
)
from napari_fbrs._widget.layers import NEGATIVE_COLOR as NEGATIVE_COLOR
from napari_fbrs._widget.layers import POSITIVE_COLOR as POSITIVE_COLOR
from napari_fbrs._widget.layers import PREVIEW_COLOR as PREVIEW_COLOR
from napari_fbrs._widget.loading import LoadingMixin
from napari_fbrs._widget.models import ModelMixin
from napari_fbrs._widget.prediction import Bridge, PredictionMixin
from napari_fbrs._widget.preferences import PreferencesMixin
from napari_fbrs._widget.saving import SavingMixin
from napari_fbrs._widget.settings import DEVICES as DEVICES
from napari_fbrs._widget.settings import MODES as MODES
from napari_fbrs._widget.settings import PredictorSettings, SettingsMixin
from napari_fbrs._widget.stack import CONVEX_REGROWTH as CONVEX_REGROWTH
from napari_fbrs._widget.stack import DIRECTIONS as DIRECTIONS
from napari_fbrs._widget.stack import StackMixin

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image, Labels, Points

    from napari_fbrs.core.autosave import Autosave, ImageInfo, SessionState
    from napari_fbrs.core.predictor import Predictor
    from napari_fbrs.core.session import SegmentationSession, SliceKey

__all__ = ["CLICKS_LAYER", "CURRENT_LAYER", "OBJECTS_LAYER", "FbrsWidget", "PredictorSettings"]


class FbrsWidget(
    FormMixin,
    SettingsMixin,
    ModelMixin,
    LayersMixin,
    ChannelsMixin,
    StackMixin,
    EditingMixin,
    PredictionMixin,
    AutosaveMixin,
    SavingMixin,
    LoadingMixin,
    PreferencesMixin,
    BindingsMixin,
    QWidget,
):
    """Interactive f-BRS segmentation of the selected image layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it).
    parent : QWidget, optional
        Qt parent.

    Notes
    -----
    Public API, also for napari's console (``dock, widget =
    viewer.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")``):
    :meth:`add_click`, :meth:`finish_object`, :meth:`undo`, :meth:`redo`,
    :meth:`reset_clicks`, :meth:`next_slice`, :meth:`previous_slice`,
    :meth:`propagate_object`, :meth:`cancel_propagation`, :meth:`set_channels`,
    :meth:`set_channel_axis`, :meth:`set_model`, :meth:`configure`,
    :meth:`save_objects`, :meth:`load_objects`, :meth:`save_autosave`, :meth:`restore_autosave`,
    :meth:`edit_object`, :meth:`reset_settings`, :attr:`session`,
    :attr:`predictor`, :attr:`current_mask`, :attr:`current_prob`, :attr:`current_key`,
    :attr:`stack_axis`. Coordinates are ``(y, x)`` = napari ``(row, col)`` in image
    pixels.
    """

    #: Run predictions in the calling thread instead of a napari thread worker (tests,
    #: scripts); also disables the background model warm-up.
    synchronous: bool = False

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._session: SegmentationSession | None = None
        self._image_layer: Image | None = None
        self._points: Points | None = None
        self._current: Labels | None = None
        self._objects: Labels | None = None
        self._key: SliceKey = ()
        # preview shown per slice: (prob array, threshold)
        self._shown: dict[SliceKey, tuple[np.ndarray, float]] = {}
        self._guard = 0  # > 0 while the widget edits its own layers
        self._running = False
        self._rerun = False
        self._finish_pending = False
        self._step_pending = 0  # a slice step waiting for a pending finish
        self._propagating = False
        self._loading = False  # a clicks file's objects are being made on a worker
        self._cancel_requested = False
        self._limit_layers: list[Image] = []  # layers whose contrast limits we follow
        self._worker: Any = None
        self._nets: dict[tuple[str, str], Any] = {}
        self._net_lock = threading.Lock()
        self._bridge = Bridge()
        self._bridge.model_message.connect(self._show_model_message)
        self._bridge.status_message.connect(self._set_status)
        self._bridge.progress.connect(self._show_progress)
        self._bindings: list[tuple[Any, Any]] = []
        self._closed = False
        self._docked = False
        self._attached_once = False
        #: every result applied to a preview (tests and the latency benchmark read it):
        #: (slice key, number of clicks, time.perf_counter() when shown, seconds computing)
        self.applied_log: list[tuple[SliceKey, int, float, float]] = []
        # autosave: the sidecar of the attached image, a restore on offer, the old sidecar
        # still to be kept aside before the first write, and whether a failure was shown
        self._saver: Autosave | None = None
        self._restorable: SessionState | None = None
        self._unclaimed = False
        self._autosave_warned = False
        self._image_info: tuple[SegmentationSession, ImageInfo] | None = None
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.timeout.connect(self.save_autosave)
        self._objects_path: Path | None = None  # the last file "Save objects" wrote

        self._build_ui()
        self._init_preferences()  # what the user chose last time
        self._settings = self._read_settings()
        self._connect_viewer()
        self._refresh_image_choices()
        self._on_image_choice()
        self._update_model_status()
        if not self.synchronous:
            QTimer.singleShot(0, self._warm_up)

    @property
    def session(self) -> SegmentationSession | None:
        """The session of the selected image (``None`` without an image)."""
        return self._session

    @property
    def settings(self) -> PredictorSettings:
        """The settings the next object's predictor will be made with."""
        return self._settings

    @property
    def current_key(self) -> SliceKey:
        """Leading indices of the slice shown (``()`` for a 2D image)."""
        return self._key

    @property
    def predictor(self) -> Predictor | None:
        """The predictor of the current slice's object (``None`` before its first click).

        Use it only while the widget is idle (no prediction running).
        """
        return None if self._session is None else self._session.predictor(self._key)

    @property
    def current_prob(self) -> np.ndarray | None:
        """``(H, W)`` float32 probability map of the current slice's object, or ``None``."""
        return None if self._session is None else self._session.prob(self._key)

    @property
    def current_mask(self) -> np.ndarray | None:
        """``(H, W)`` bool preview mask of the current slice's object, or ``None``."""
        return None if self._session is None else self._session.mask(self._key)

    @property
    def busy(self) -> bool:
        """Whether a prediction is running."""
        return self._running

    @property
    def clicks_layer(self) -> Points | None:
        return self._points

    @property
    def current_layer(self) -> Labels | None:
        return self._current

    @property
    def objects_layer(self) -> Labels | None:
        return self._objects

    @property
    def image_layer(self) -> Image | None:
        return self._image_layer

    def event(self, event: Any) -> bool:
        """Disconnect from the viewer when napari takes the panel out of its dock."""
        if event.type() == QEvent.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.cleanup()
        return super().event(event)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self.cleanup()
        super().closeEvent(event)

    def cleanup(self) -> None:
        """Disconnect from the viewer (key bindings, mouse callback, layer events).

        Called when the panel is closed; the widget does nothing afterwards.
        """
        if self._closed:
            return
        self._flush_autosave()
        self._flush_preferences()
        self._closed = True
        self._disconnect_viewer()
