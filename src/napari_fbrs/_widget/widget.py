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
  opened again ("Restore previous session"); autosave errors never stop segmenting.

Nothing here imports torch at import time: the model is loaded on the worker thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QShortcut,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_fbrs._widget.controls import FirstClickCropBox, spin_box
from napari_fbrs.core import zoo
from napari_fbrs.core.autosave import (
    SUFFIX,
    Autosave,
    AutosaveError,
    ImageInfo,
    SessionState,
    image_fingerprint,
)
from napari_fbrs.core.session import (
    Change,
    PredictionRequest,
    PredictionResult,
    SegmentationSession,
    SessionClick,
    SliceKey,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image, Labels, Points

    from napari_fbrs.core.predictor import Predictor

__all__ = ["CLICKS_LAYER", "CURRENT_LAYER", "OBJECTS_LAYER", "FbrsWidget", "PredictorSettings"]

CLICKS_LAYER = "fbrs clicks"
CURRENT_LAYER = "fbrs current"
OBJECTS_LAYER = "fbrs objects"
POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "red"
PREVIEW_COLOR = (0.0, 0.85, 1.0, 1.0)  # cyan
DEVICES = ("auto", "cpu", "cuda", "mps")
# the predictor's modes (napari_fbrs.core.predictor.MODES; repeated here because that
# module imports torch, and a test checks the two agree)
MODES = ("NoBRS", "RGB-BRS", "DistMap-BRS", "f-BRS-A", "f-BRS-B", "f-BRS-C")
#: a press and release of the mouse moving less than this (screen pixels) is a click
CLICK_TOLERANCE_PX = 5.0
#: the propagation directions offered: (text, direction)
DIRECTIONS = (("both ways", 0), ("forward (+1)", 1), ("backward (-1)", -1))
# area regrowth of the "convex objects" stop rule (best of 0.05-0.3 on nuclei3d)
CONVEX_REGROWTH = 0.1
NO_CHANNEL = "—"


@dataclass(frozen=True)
class PredictorSettings:
    """Settings of the predictors the widget makes (one per object, so a change applies
    from the next object on).

    Attributes
    ----------
    model : str, pathlib.Path or InteractiveNet
        A model-zoo name (``napari_fbrs.core.zoo.CHECKPOINTS``), a checkpoint file, or a
        network object (``napari_fbrs.build_model(...)``/``load_model(...)``).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    mode : str
        BRS mode, one of ``NoBRS``, ``RGB-BRS``, ``DistMap-BRS``, ``f-BRS-A/B/C``.
    net_clicks : int
        Clicks given to the network; 0: the mode's default.
    lbfgs_maxfun : int
        Maximum objective evaluations of L-BFGS-B per click.
    zoom_in : bool
        Use ZoomIn.
    zoom_skip_clicks, zoom_target_size, zoom_expansion_ratio, zoom_min_crop
        ZoomIn's ``skip_clicks``, ``target_size``, ``expansion_ratio`` and
        ``min_crop_size``.
    zoom_first_click_crop : int or "auto"
        ZoomIn's ``first_click_crop``: ``"auto"`` (zoom in again on a small first-click
        object), a side in pixels, or 0 (off: the first click sees the whole image).
    max_size : int
        Longest side (pixels) of what the network sees; 0: no limit.
    min_size : int
        Smaller images are enlarged to this longest side for the network; 0: never.
    with_flip : bool
        Average with the horizontally flipped prediction.
    prob_thresh : float
        Probability threshold of the predictor (BRS click consistency); the preview's
        threshold is the session's, changed live by the slider.
    """

    model: Any = zoo.DEFAULT_MODEL
    device: str = "auto"
    mode: str = "f-BRS-B"
    net_clicks: int = 0
    lbfgs_maxfun: int = 20
    zoom_in: bool = True
    zoom_skip_clicks: int = 1
    zoom_target_size: int = 400
    zoom_expansion_ratio: float = 1.4
    zoom_min_crop: int = 200
    zoom_first_click_crop: int | str = "auto"
    max_size: int = 0
    min_size: int = 256  # the predictor's MIN_VIEW_SIZE (its module imports torch)
    with_flip: bool = True
    prob_thresh: float = 0.49


class _Bridge(QObject):
    """Carries messages from worker threads to the GUI thread (queued signals)."""

    model_message = Signal(str, bool)  # text, is_error
    status_message = Signal(str)
    progress = Signal(int, int)  # done, total (propagation)


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


def _notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def _is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (Python, numpy or torch, CPU or GPU)."""
    if isinstance(exc, MemoryError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"OutOfMemoryError", "_ArrayMemoryError"}:
        return True
    text = str(exc).lower()
    return "out of memory" in text or "unable to allocate" in text


def _error_message(exc: BaseException) -> str:
    """One line for a notification: the error, and for out-of-memory what to do."""
    message = str(exc) or type(exc).__name__
    if _is_out_of_memory(exc):
        message += (
            ". Out of memory: set a longest side limit ('Longest side') or lower it, use "
            "a smaller model or the CPU, or crop the image."
        )
    return message


def _layer_source_path(layer: Any) -> Path | None:
    """The file a napari layer was opened from, if any."""
    source = getattr(layer, "source", None)
    path = getattr(source, "path", None)
    if not path:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return Path(path)
    return None


def _unwrap(obj: Any) -> Any:
    """The napari object behind the ``PublicOnlyProxy`` that napari hands to plugins
    (each access makes a new proxy, so identity checks need the object itself)."""
    return getattr(obj, "__wrapped__", obj)


def _preview_colormap() -> Any:
    """One colour for the preview (value 1), distinct from the objects' colours."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(
        color_dict={None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), 1: PREVIEW_COLOR}
    )


def _layer_data(layer: Any) -> Any:
    """The full-resolution data of an image layer (level 0 of a multiscale one)."""
    return layer.data[0] if layer.multiscale else layer.data


def _model_key(model: Any) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    return f"object:{id(model)}"


class FbrsWidget(QWidget):
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
    :meth:`set_channel_axis`, :meth:`set_model`, :meth:`configure`, :attr:`session`,
    :attr:`predictor`, :attr:`current_mask`, :attr:`current_prob`, :attr:`current_key`,
    :attr:`stack_axis`. Coordinates are ``(y, x)`` = napari ``(row, col)`` in image
    pixels.
    """

    #: Run predictions in the calling thread instead of a napari thread worker (tests,
    #: scripts); also disables the background model warm-up.
    synchronous: bool = False
    #: Autosave the session to a sidecar file (see :mod:`napari_fbrs.core.autosave`).
    autosave: bool = True
    #: Milliseconds after the last click edit before the session is autosaved (commits,
    #: undo and redo are saved at once).
    autosave_delay_ms: int = 1500

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
        self._cancel_requested = False
        self._limit_layers: list[Image] = []  # layers whose contrast limits we follow
        self._worker: Any = None
        self._nets: dict[tuple[str, str], Any] = {}
        self._net_lock = threading.Lock()
        self._bridge = _Bridge()
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

        self._build_ui()
        self._settings = self._read_settings()
        self._connect_viewer()
        self._refresh_image_choices()
        self._on_image_choice()
        self._update_model_status()
        if not self.synchronous:
            QTimer.singleShot(0, self._warm_up)

    # ==================================================================== public API
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

    def set_channel_axis(self, axis: int | None) -> None:
        """Read channels along ``axis`` of the image layer's data (a leading axis), or
        ``None`` for none. This starts over on the image (clicks are dropped): the
        objects then have the image's axes with length 1 along the channel axis."""
        index = self.channel_axis_combo.findData(-1 if axis is None else int(axis))
        if index < 0:
            raise ValueError(f"axis {axis} cannot hold channels of this image")
        self.channel_axis_combo.setCurrentIndex(index)

    def set_channels(self, red: Any, green: Any = None, blue: Any = None) -> None:
        """Choose what the model sees.

        Parameters
        ----------
        red, green, blue : str, int or None
            Channels: image layer names (layers of the image's shape), or channel indices
            when the image has a channel axis (:meth:`set_channel_axis`); ``None`` for
            black. One channel given alone is seen as grey.

        Notes
        -----
        Each channel is scaled by its own layer's contrast limits. The previews of
        unfinished objects are predicted again with the new input.
        """
        for combo, value in zip(self.channel_combos, (red, green, blue), strict=True):
            index = combo.findData(value) if value is not None else 0
            if index < 0:
                raise ValueError(f"{value!r} is not a channel of this image")
            combo.blockSignals(True)
            combo.setCurrentIndex(index)
            combo.blockSignals(False)
        self._apply_channels()

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
            _notify_warning(f"f-BRS: {exc}")
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
            _notify_info("f-BRS: wait for the running prediction, then propagate.")
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
            _notify_warning(f"f-BRS: {exc}")
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
        if self.synchronous:
            try:
                volume = work()
            except Exception as exc:
                self._on_propagation_error(exc)
                label = None
            else:
                label = self._finish_propagation(request, volume)
            self._on_done()
            return label
        from napari.qt.threading import thread_worker

        worker = thread_worker(work, start_thread=False, ignore_errors=True)()
        worker.returned.connect(lambda volume: self._finish_propagation(request, volume))
        worker.errored.connect(self._on_propagation_error)
        worker.finished.connect(self._on_done)
        self._worker = worker
        worker.start()
        return None

    @property
    def autosave_path(self) -> Path | None:
        """The sidecar file the session is autosaved to (``None`` without an image)."""
        return None if self._saver is None else self._saver.path

    def save_autosave(self) -> bool:
        """Autosave the session now (it also happens by itself after every change).

        Returns
        -------
        bool
            Whether the sidecar was written. A failure (disk full, no permission) is
            shown once as a warning and never interrupts segmentation.
        """
        self._autosave_timer.stop()
        session, saver = self._session, self._saver
        if session is None or saver is None or not self.autosave:
            return False
        try:
            if self._unclaimed:
                self._keep_old_sidecar(saver)
            layer = self._image_layer
            path = _layer_source_path(layer) if layer is not None else None
            settings = {f.name: getattr(self._settings, f.name) for f in fields(self._settings)}
            if self._image_info is None or self._image_info[0] is not session:
                info = ImageInfo(
                    name=layer.name if layer is not None else "",
                    path=None if path is None else str(path),
                    shape=tuple(int(n) for n in session.image.shape),
                    dtype=str(getattr(session.image, "dtype", "")),
                    rgb=session.rgb,
                    fingerprint=self._fingerprint(session),
                )
                self._image_info = (session, info)
            state = SessionState.from_session(
                session, settings=settings, previous=saver.last_state, image=self._image_info[1]
            )
            saver.write(state)
        except Exception as exc:  # autosave must never break segmentation
            if not self._autosave_warned:
                self._autosave_warned = True
                _notify_warning(
                    f"f-BRS could not autosave to {saver.path}: {exc}. Segmentation goes "
                    "on; save your labels layer yourself (File > Save Selected Layers)."
                )
            return False
        return True

    def restore_autosave(self) -> bool:
        """Restore the objects and clicks of the autosave found for the current image
        (what "Restore previous session" does).

        The objects layer's data is replaced by the autosaved labels and each slice's
        clicks by the autosaved ones; previews are then recomputed. Both are undo steps:
        undo brings back what the layer held, e.g. objects committed before restoring.

        Returns
        -------
        bool
            Whether anything was restored (``False`` without an autosave, or when it does
            not fit the image, with a warning saying why; nothing is changed then).
        """
        session, state = self._require_session(), self._restorable
        if session is None or state is None:
            self._set_status("There is no autosaved session to restore.")
            return False
        self._finish_pending = False
        try:
            state.restore(session, pixels=False)
        except (AutosaveError, TypeError, ValueError) as exc:
            _notify_warning(f"f-BRS: {exc}")
            return False
        self._restorable = None
        self.restore_button.setVisible(False)
        if self._saver is not None:
            self._saver.last_state = state  # the objects' provenance carries over
        self._unclaimed = False
        keys = tuple(state.clicks) or (self._key,)
        self._after_change(Change(keys, True, "restore"))
        self._render_all()
        self._set_status(
            f"Restored {len(state.objects)} object(s) and "
            f"{sum(len(c) for c in state.clicks.values())} click(s) from {state.saved_at}."
        )
        return True

    def set_model(self, model: str | os.PathLike | Any) -> None:
        """Use another model from the next object on.

        Parameters
        ----------
        model : str, path or InteractiveNet
            A model-zoo name, a checkpoint file, or a network object.
        """
        if isinstance(model, str) and model in zoo.CHECKPOINTS:
            index = self.model_combo.findData(model)
        else:
            if isinstance(model, (str, os.PathLike)):
                model = Path(model)
                text = f"file: {model.name}"
            else:
                text = f"network: {type(model).__name__}"
            index = -1
            for i in range(self.model_combo.count()):
                data = self.model_combo.itemData(i)
                if data is model or (isinstance(model, Path) and data == model):
                    index = i
            if index < 0:
                self.model_combo.addItem(text, model)
                index = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(index)

    def configure(self, **settings: Any) -> None:
        """Set predictor settings by name (see :class:`PredictorSettings`); the controls
        follow. They apply from the next object on.

        Raises
        ------
        TypeError
            Unknown setting name.
        """
        names = {f.name for f in fields(PredictorSettings)}
        unknown = set(settings) - names
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(names)}")
        if "model" in settings:
            self.set_model(settings["model"])
        setters: dict[str, Callable[[Any], None]] = {
            "device": self.device_combo.setCurrentText,
            "mode": self.mode_combo.setCurrentText,
            "net_clicks": self.net_clicks_spin.setValue,
            "lbfgs_maxfun": self.lbfgs_spin.setValue,
            "zoom_in": self.zoom_group.setChecked,
            "zoom_skip_clicks": self.zoom_skip_spin.setValue,
            "zoom_target_size": self.zoom_target_spin.setValue,
            "zoom_expansion_ratio": self.zoom_expand_spin.setValue,
            "zoom_min_crop": self.zoom_min_crop_spin.setValue,
            "zoom_first_click_crop": self.zoom_first_crop_box.setValue,
            "max_size": self.max_size_spin.setValue,
            "min_size": self.min_size_spin.setValue,
            "with_flip": self.flip_check.setChecked,
            "prob_thresh": lambda v: self.thresh_slider.setValue(int(round(v * 100))),
        }
        for name, value in settings.items():
            if name != "model":
                setters[name](value)
        self._settings = self._read_settings()

    def set_image_layer(self, layer: Image) -> None:
        """Segment ``layer`` (an Image layer of the viewer) from now on."""
        index = self.image_combo.findText(layer.name)
        if index < 0:
            raise ValueError(f"{layer.name!r} is not an image layer of this viewer")
        self.image_combo.setCurrentIndex(index)
        if self._image_layer is not layer:
            self._on_image_choice()

    # ==================================================================== UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)

        # -- layers
        layers_box = QGroupBox("Layers")
        form = QFormLayout(layers_box)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image to segment (2D, RGB or nD: last two axes spatial).")
        self.objects_combo = QComboBox()
        self.objects_combo.setToolTip("Labels layer that finished objects are written into.")
        self.channel_axis_combo = QComboBox()
        self.channel_axis_combo.setToolTip(
            "An axis of the image's data that holds channels (not z or t). Layers split "
            "with napari's channel_axis need none: pick them below."
        )
        channel_row = QHBoxLayout()
        self.channel_combos: list[QComboBox] = []
        for colour in ("red (or grey)", "green", "blue"):
            combo = QComboBox()
            combo.setToolTip(
                f"Channel the model sees as {colour}: a layer of the image's shape, or a "
                "channel of its channel axis. One channel alone is seen as grey; each is "
                "scaled by its own layer's contrast limits."
            )
            channel_row.addWidget(combo)
            self.channel_combos.append(combo)
        form.addRow("Image", self.image_combo)
        form.addRow("Channel axis", self.channel_axis_combo)
        form.addRow("Model input (R, G, B)", channel_row)
        form.addRow("Objects", self.objects_combo)
        layout.addWidget(layers_box)

        # -- model
        model_box = QGroupBox("Model")
        grid = QGridLayout(model_box)
        self.model_combo = QComboBox()
        for name, info in zoo.CHECKPOINTS.items():
            suffix = "bundled" if info.bundled else f"download ~{info.size_mb:.0f} MB"
            self.model_combo.addItem(f"{name} ({suffix})", name)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, info.description, Qt.ToolTipRole
            )
        self.model_combo.setCurrentIndex(self.model_combo.findData(zoo.DEFAULT_MODEL))
        self.open_button = QPushButton("Open...")
        self.open_button.setToolTip(
            "Use a checkpoint file (.pth/.pt, official f-BRS/RITM or napari-fbrs layout)."
        )
        self.model_status = QLabel()
        self.model_status.setWordWrap(True)
        self.model_status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        grid.addWidget(self.model_combo, 0, 0)
        grid.addWidget(self.open_button, 0, 1)
        grid.addWidget(self.model_status, 1, 0, 1, 2)
        layout.addWidget(model_box)

        # -- predictor settings
        pred_box = QGroupBox("Predictor (applies from the next object)")
        form = QFormLayout(pred_box)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(MODES)
        self.mode_combo.setCurrentText("f-BRS-B")
        self.net_clicks_spin = spin_box(
            0, 100, 0, special="mode default",
            tooltip="Clicks given to the network; later clicks act through the BRS "
            "optimisation only.",
        )  # fmt: skip
        self.lbfgs_spin = spin_box(1, 500, 20)
        self.flip_check = QCheckBox("average with the flipped image")
        self.flip_check.setChecked(True)
        self.max_size_spin = spin_box(
            0, 8192, 0, 64, "no limit", "Longest side, in pixels, of what the network sees."
        )
        form.addRow("Device", self.device_combo)
        form.addRow("BRS mode", self.mode_combo)
        form.addRow("Network clicks", self.net_clicks_spin)
        form.addRow("L-BFGS evaluations", self.lbfgs_spin)
        self.min_size_spin = spin_box(
            0, 2048, PredictorSettings.min_size, 32, "off",
            "Smaller images are enlarged to this longest side for the network (it sees "
            "too little in tiny images).",
        )  # fmt: skip
        form.addRow("Longest side", self.max_size_spin)
        form.addRow("Smallest side", self.min_size_spin)
        form.addRow(self.flip_check)
        self.zoom_group = QGroupBox("ZoomIn")
        self.zoom_group.setCheckable(True)
        self.zoom_group.setChecked(True)
        zform = QFormLayout(self.zoom_group)
        self.zoom_skip_spin = spin_box(0, 100, 1)
        self.zoom_target_spin = spin_box(8, 4096, 400, 32)
        self.zoom_expand_spin = spin_box(1.0, 5.0, 1.4, 0.1)
        self.zoom_min_crop_spin = spin_box(8, 4096, 200, 16)
        self.zoom_first_crop_box = FirstClickCropBox(
            PredictorSettings.zoom_first_click_crop,
            "How the first click is predicted. auto: on the whole image, then once more "
            "zoomed in when the object found is small (e.g. a nucleus in a large field). "
            "A number: in a square crop of that many pixels around the click (a few object "
            "diameters, e.g. 128, with a min crop of 128). off: on the whole image, as in "
            "the paper.",
        )
        zform.addRow("Skip clicks", self.zoom_skip_spin)
        zform.addRow("Target size", self.zoom_target_spin)
        zform.addRow("Expand ratio", self.zoom_expand_spin)
        zform.addRow("Min crop", self.zoom_min_crop_spin)
        zform.addRow("First-click crop", self.zoom_first_crop_box)
        form.addRow(self.zoom_group)
        layout.addWidget(pred_box)

        # -- interaction
        click_box = QGroupBox("Clicks and objects")
        form = QFormLayout(click_box)
        thresh_row = QHBoxLayout()
        self.thresh_slider = QSlider(Qt.Horizontal)
        self.thresh_slider.setRange(1, 99)
        self.thresh_slider.setValue(49)
        self.thresh_label = QLabel("0.49")
        thresh_row.addWidget(self.thresh_slider)
        thresh_row.addWidget(self.thresh_label)
        form.addRow("Threshold", thresh_row)
        self.canvas_check = QCheckBox("click on the canvas to segment")
        self.canvas_check.setChecked(True)
        self.canvas_check.setToolTip(
            "Left click: object; right click or Shift+click: "
            "background. Works while the selected layer is in "
            "pan/zoom mode."
        )
        self.default_positive_check = QCheckBox(
            "points added with napari's tools are object clicks"
        )
        self.default_positive_check.setChecked(True)
        self.selected_label_check = QCheckBox("use the objects layer's selected label")
        self.overwrite_check = QCheckBox("overwrite existing labels")
        for check in (
            self.canvas_check,
            self.default_positive_check,
            self.selected_label_check,
            self.overwrite_check,
        ):
            form.addRow(check)
        layout.addWidget(click_box)

        # -- actions
        buttons = QGridLayout()
        self.finish_button = QPushButton("Finish object (Space)")
        self.undo_button = QPushButton("Undo (Ctrl+Z)")
        self.redo_button = QPushButton("Redo (Ctrl+Shift+Z)")
        self.reset_button = QPushButton("Reset clicks (Esc)")
        buttons.addWidget(self.finish_button, 0, 0, 1, 2)
        buttons.addWidget(self.undo_button, 1, 0)
        buttons.addWidget(self.redo_button, 1, 1)
        buttons.addWidget(self.reset_button, 2, 0, 1, 2)
        layout.addLayout(buttons)

        # -- stacks
        self.stack_box = QGroupBox("Stack")
        form = QFormLayout(self.stack_box)
        self.axis_combo = QComboBox()
        self.axis_combo.setToolTip(
            "The axis (z, t, ...) that the slice steps and propagation walk."
        )
        self.prev_button = QPushButton("< Previous slice (,)")
        self.next_button = QPushButton("Next slice (.) >")
        for button in (self.prev_button, self.next_button):
            button.setToolTip(
                "Finish the object on this slice (if it has one) and go on to the "
                "neighbouring slice, keeping its id: the object you segment there is the "
                "same object."
            )
        step_row = QHBoxLayout()
        step_row.addWidget(self.prev_button)
        step_row.addWidget(self.next_button)
        self.object_id_spin = spin_box(
            0, 2**31 - 1, 0, special="new",
            tooltip="Id of the object on this slice when it is finished or propagated "
            "('new': the next free id). A set id replaces that object's old pixels on the "
            "slices written, so a corrected slice can be finished or propagated again.",
        )  # fmt: skip
        self.direction_combo = QComboBox()
        for text, direction in DIRECTIONS:
            self.direction_combo.addItem(text, direction)
        self.stop_iou_spin = spin_box(
            0.0, 1.0, 0.5, 0.05,
            tooltip="Propagation stops where the object's overlap (IoU) with the previous "
            "slice drops below this.",
        )  # fmt: skip
        self.convex_check = QCheckBox("convex objects: stop where the area grows again")
        self.convex_check.setToolTip(
            "For nuclei and cells: once the object has shrunk along the walk, stop where "
            f"its area grows again by more than {CONVEX_REGROWTH:.0%} (the walk entering a "
            "touching neighbour)."
        )
        self.min_contrast_spin = spin_box(
            0.0, 1.0, 0.0, 0.05, special="off",
            tooltip="Stop where the object's brightness above the background falls below "
            "this fraction of the start slice's (for bright objects on a dark background).",
        )  # fmt: skip
        self.propagate_button = QPushButton("Propagate")
        self.propagate_button.setToolTip(
            "Segment the current object on the neighbouring slices too (along the slice "
            "axis, in the chosen direction) and write it on every slice reached. A slice "
            "with only negative clicks is a stop."
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the propagation; nothing is written.")
        self.cancel_button.setEnabled(False)
        propagate_row = QHBoxLayout()
        propagate_row.addWidget(self.propagate_button)
        propagate_row.addWidget(self.cancel_button)
        form.addRow("Slice axis", self.axis_combo)
        form.addRow(step_row)
        form.addRow("Object id", self.object_id_spin)
        form.addRow("Direction", self.direction_combo)
        form.addRow("Stop IoU", self.stop_iou_spin)
        form.addRow(self.convex_check)
        form.addRow("Min contrast", self.min_contrast_spin)
        form.addRow(propagate_row)
        layout.addWidget(self.stack_box)

        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # indeterminate: a busy indicator
        self.progress.setMaximumHeight(10)
        self.progress.setTextVisible(False)
        self.progress.setVisible(False)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.restore_button = QPushButton("Restore previous session")
        self.restore_button.setToolTip(
            "An autosave of an earlier session on this image was found (the program may "
            "have stopped before the labels were saved): bring back its objects and clicks."
        )
        self.restore_button.setVisible(False)
        self.restore_button.clicked.connect(lambda *_: self.restore_autosave())
        layout.addWidget(self.restore_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        # -- signals
        self.image_combo.currentIndexChanged.connect(self._on_image_choice)
        self.channel_axis_combo.currentIndexChanged.connect(self._on_channel_axis_choice)
        for combo in self.channel_combos:
            combo.currentIndexChanged.connect(self._apply_channels)
        self.axis_combo.currentIndexChanged.connect(self._update_buttons)
        self.object_id_spin.valueChanged.connect(self._on_object_id)
        self.objects_combo.currentIndexChanged.connect(self._on_objects_choice)
        self.model_combo.currentIndexChanged.connect(self._on_model_choice)
        self.open_button.clicked.connect(self._open_checkpoint)
        for signal in (
            self.device_combo.currentIndexChanged,
            self.mode_combo.currentIndexChanged,
            self.net_clicks_spin.valueChanged,
            self.lbfgs_spin.valueChanged,
            self.flip_check.toggled,
            self.max_size_spin.valueChanged,
            self.min_size_spin.valueChanged,
            self.zoom_group.toggled,
            self.zoom_skip_spin.valueChanged,
            self.zoom_target_spin.valueChanged,
            self.zoom_expand_spin.valueChanged,
            self.zoom_min_crop_spin.valueChanged,
            self.zoom_first_crop_box.valueChanged,
        ):
            signal.connect(self._on_settings_changed)
        self.device_combo.currentIndexChanged.connect(self._update_model_status)
        self.thresh_slider.valueChanged.connect(self._on_threshold)
        self.default_positive_check.toggled.connect(self._apply_default_polarity)
        self.finish_button.clicked.connect(self.finish_object)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.reset_button.clicked.connect(self.reset_clicks)
        self.propagate_button.clicked.connect(lambda *_: self.propagate_object())
        self.cancel_button.clicked.connect(self.cancel_propagation)
        self.next_button.clicked.connect(self.next_slice)
        self.prev_button.clicked.connect(self.previous_slice)
        # while the widget has focus (on the canvas, viewer key bindings do the same)
        for seq, slot in (("Ctrl+Z", self.undo), ("Ctrl+Shift+Z", self.redo)):
            shortcut = QShortcut(QKeySequence(seq), self)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)

    def _read_settings(self) -> PredictorSettings:
        return PredictorSettings(
            model=self.model_combo.currentData(),
            device=self.device_combo.currentText(),
            mode=self.mode_combo.currentText(),
            net_clicks=self.net_clicks_spin.value(),
            lbfgs_maxfun=self.lbfgs_spin.value(),
            zoom_in=self.zoom_group.isChecked(),
            zoom_skip_clicks=self.zoom_skip_spin.value(),
            zoom_target_size=self.zoom_target_spin.value(),
            zoom_expansion_ratio=self.zoom_expand_spin.value(),
            zoom_min_crop=self.zoom_min_crop_spin.value(),
            zoom_first_click_crop=self.zoom_first_crop_box.value(),
            max_size=self.max_size_spin.value(),
            min_size=self.min_size_spin.value(),
            with_flip=self.flip_check.isChecked(),
            prob_thresh=self.thresh_slider.value() / 100.0,
        )

    def _on_settings_changed(self, *_: Any) -> None:
        self._settings = self._read_settings()

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        if busy:
            self._set_status("Predicting...")
        else:
            self.progress.setRange(0, 0)  # back to a busy indicator

    def _show_progress(self, done: int, total: int) -> None:
        if not self._propagating:
            return
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))
        self._set_status(f"Propagating: {done}/{total} slices...")

    def _update_buttons(self, *_: Any) -> None:
        session = self._session
        has = session is not None
        clicks = has and bool(session.clicks(self._key))
        self.finish_button.setEnabled(clicks)
        self.reset_button.setEnabled(clicks)
        stack = has and self.stack_axis is not None
        self.stack_box.setEnabled(stack)
        self.propagate_button.setEnabled(stack and clicks and not self._propagating)
        self.cancel_button.setEnabled(self._propagating)
        self.undo_button.setEnabled(has and session.can_undo)
        self.redo_button.setEnabled(has and session.can_redo)
        self._show_object_id()

    def _show_object_id(self) -> None:
        label = None if self._session is None else self._session.object_label(self._key)
        self.object_id_spin.blockSignals(True)
        self.object_id_spin.setValue(0 if label is None else int(label))
        self.object_id_spin.blockSignals(False)

    def _on_object_id(self, value: int) -> None:
        if self._session is not None:
            self._session.set_object_label(self._key, int(value) or None)

    # ==================================================================== viewer wiring
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
        self._closed = True
        self._disconnect_viewer()

    # ==================================================================== layers
    def _image_layers(self) -> list[Image]:
        from napari.layers import Image

        return [_unwrap(layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_image_choices(self) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        else:
            active = self.viewer.layers.selection.active
            if active is not None and active.name in names:
                self.image_combo.setCurrentText(active.name)
        self.image_combo.blockSignals(False)

    def _refresh_objects_choices(self) -> None:
        from napari.layers import Labels

        self.objects_combo.blockSignals(True)
        self.objects_combo.clear()
        if self._session is not None:
            shape = self._session.labels_shape
            for layer in self.viewer.layers:
                if (
                    isinstance(layer, Labels)
                    and layer is not self._current
                    and not layer.multiscale
                    and tuple(layer.data.shape) == shape
                ):
                    self.objects_combo.addItem(layer.name)
            if self._objects is not None:
                self.objects_combo.setCurrentText(self._objects.name)
        self.objects_combo.blockSignals(False)

    def _on_layers_changed(self, event: Any = None) -> None:
        if self._guard:
            return
        if self._image_layer is not None and self._image_layer not in self.viewer.layers:
            self._detach()
        self._refresh_image_choices()
        if self._image_layer is None and self.image_combo.count():
            self._on_image_choice()
        self._refresh_objects_choices()
        if self._session is not None:
            with self._guarding():
                changed = self._fill_channel_choices()
            if changed:
                self._apply_channels()

    def _on_image_choice(self, *_: Any) -> None:
        name = self.image_combo.currentText()
        layer = next((lay for lay in self._image_layers() if lay.name == name), None)
        if layer is self._image_layer:
            return
        self._detach()
        self._fill_channel_axis_choices(layer)
        if layer is not None:
            self._attach_safely(layer)
        self._update_buttons()

    def _on_channel_axis_choice(self, *_: Any) -> None:
        """Another channel axis: a new geometry, so start over on the image."""
        layer = self._image_layer
        if layer is None or self._guard:
            return
        self._detach()
        self._attach_safely(layer)
        self._update_buttons()

    def _attach_safely(self, layer: Image) -> None:
        try:
            self._attach(layer)
        except Exception as exc:  # unsupported layout: say so, change nothing
            self._detach()
            _notify_error(f"f-BRS cannot segment {layer.name!r}: {exc}")

    def _on_image_data(self, event: Any = None) -> None:
        """The image layer got new data: start over on it (clicks are dropped)."""
        layer = self._image_layer
        if layer is None or self._session is None:
            return
        data = _layer_data(layer)
        if data is self._session.image:
            return
        self._detach()
        self._fill_channel_axis_choices(layer)
        self._attach_safely(layer)
        self._update_buttons()

    def _detach(self) -> None:
        self._flush_autosave()
        self._saver = None
        self._restorable = None
        self._unclaimed = False
        self._image_info = None
        self.restore_button.setVisible(False)
        self._detach_layer_events()
        self._session = None
        self._image_layer = None
        self._finish_pending = False
        self._key = ()
        self._set_status("Select an image layer to segment." if not self._image_layers() else "")

    def _detach_layer_events(self) -> None:
        for lay in self._limit_layers:
            with contextlib.suppress(Exception):
                lay.events.contrast_limits.disconnect(self._on_contrast)
        self._limit_layers = []
        if self._points is not None:
            with contextlib.suppress(Exception):
                self._points.events.data.disconnect(self._on_points_data)
            with contextlib.suppress(Exception):
                self._points.events.features.disconnect(self._on_points_data)
        if self._image_layer is not None:
            with contextlib.suppress(Exception):
                self._image_layer.events.data.disconnect(self._on_image_data)

    def _attach(self, layer: Image) -> None:
        data = _layer_data(layer)
        channel_axis = self.channel_axis_combo.currentData()
        if channel_axis is None or channel_axis < 0 or layer.rgb or channel_axis >= data.ndim - 2:
            channel_axis = None
        session = SegmentationSession(
            data,
            rgb=bool(layer.rgb),
            channel_axis=channel_axis,
            predictor_factory=self._make_predictor,
            contrast_limits=tuple(layer.contrast_limits),
            prob_thresh=self.thresh_slider.value() / 100.0,
        )
        self._image_layer = layer
        self._session = session
        with self._guarding():
            self._ensure_layers()
            self._fill_channel_choices(reset=True)
            self._fill_axis_choices()
        session.set_labels(self._objects.data)
        self._apply_channels(render=False)
        layer.events.data.connect(self._on_image_data)
        self._key = self._compute_key()
        if self._attached_once:
            self._write_points()  # clicks in the layer belonged to the previous image
        else:
            self._import_points()  # reopening the panel: take the clicks over
        self._attached_once = True
        self._refresh_objects_choices()
        with self._guarding():
            self.viewer.layers.selection.active = layer
        self._update_buttons()
        self._schedule()
        self._open_autosave(layer)

    def _layer_kwargs(self) -> dict[str, Any]:
        """Scale and translate of the widget's layers: the image's; along a channel axis
        (length 1 in the layers) one plane spans every channel, so it shows at each."""
        layer = self._image_layer
        scale = [float(v) for v in layer.scale]
        translate = [float(v) for v in layer.translate]
        axis = self._session.channel_axis if self._session is not None else None
        if axis is not None:
            n = self._session.n_channels
            translate[axis] += 0.5 * (n - 1) * scale[axis]
            scale[axis] *= n
        return {"scale": tuple(scale), "translate": tuple(translate)}

    # ==================================================================== channels
    def _fill_channel_axis_choices(self, layer: Image | None) -> None:
        """The leading axes of ``layer``'s data that may hold channels ("none" first)."""
        combo = self.channel_axis_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("none", -1)
        if layer is not None and not layer.rgb:
            data = _layer_data(layer)
            labels = list(self.viewer.dims.axis_labels)[-data.ndim :]
            for i in range(data.ndim - 2):
                name = labels[i] if i < len(labels) else str(i)
                combo.addItem(f"axis {i} ({name}, {data.shape[i]})", i)
        combo.setCurrentIndex(0)
        combo.setEnabled(combo.count() > 1)
        combo.blockSignals(False)

    def _channel_layer_names(self) -> list[str]:
        """Image layers that can be channels of the selected image (same data shape, not
        RGB), the selected one first."""
        image = self._image_layer
        shape = tuple(_layer_data(image).shape)
        names = [image.name]
        for lay in self._image_layers():
            if lay is not image and not lay.rgb and tuple(_layer_data(lay).shape) == shape:
                names.append(lay.name)
        return names

    def _fill_channel_choices(self, reset: bool = False) -> bool:
        """Fill the R, G, B boxes for the current session (keeping the choices that still
        exist unless ``reset``); returns whether a choice had to change."""
        session = self._session
        combos = self.channel_combos
        before = [c.currentData() for c in combos]
        if session is None or session.rgb:
            items: list[tuple[str, Any]] = []
        elif session.channel_axis is not None:
            items = [(f"channel {i}", i) for i in range(session.n_channels)]
        else:
            items = [(name, name) for name in self._channel_layer_names()]
        for i, combo in enumerate(combos):
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(NO_CHANNEL, None)
            for text, data in items:
                combo.addItem(text, data)
            keep = None if reset else before[i]
            index = combo.findData(keep) if keep is not None else -1
            if index < 0:
                index = 1 if (i == 0 and items) else 0
            combo.setCurrentIndex(index)
            combo.setEnabled(bool(items))
            combo.blockSignals(False)
        return [c.currentData() for c in combos] != before

    def _apply_channels(self, *_: Any, render: bool = True) -> None:
        """Give the session the channels chosen in the R, G, B boxes."""
        session = self._session
        if session is None or session.rgb:
            self._follow_limits([self._image_layer] if self._image_layer is not None else [])
            return
        chosen = [c.currentData() for c in self.channel_combos]
        if all(c is None for c in chosen):
            self.channel_combos[0].setCurrentIndex(1)  # re-enters with the default
            return
        picked = [c for c in chosen if c is not None]
        if session.channel_axis is not None:
            cmap = tuple(picked) if len(picked) == 1 else tuple(chosen)
            dropped = session.set_channels(cmap)
            limit_layers = [self._image_layer]
        else:
            names = list(dict.fromkeys(picked))
            layers = [_unwrap(self.viewer.layers[name]) for name in names]
            position = {name: i for i, name in enumerate(names)}
            if len(picked) == 1:
                cmap = (0,)
            else:
                cmap = tuple(None if c is None else position[c] for c in chosen)
            dropped = session.set_channels(cmap, channels=[_layer_data(lay) for lay in layers])
            limit_layers = layers
        self._follow_limits(limit_layers)
        if render and dropped:
            self._render(dropped)
            self._schedule()
            self._set_status("Model input changed: the previews are predicted again.")

    def _follow_limits(self, layers: list[Image]) -> None:
        """Follow the contrast limits of ``layers`` (the channels) and the image's."""
        for lay in self._limit_layers:
            with contextlib.suppress(Exception):
                lay.events.contrast_limits.disconnect(self._on_contrast)
        wanted = list(dict.fromkeys([*layers, self._image_layer]))
        self._limit_layers = [lay for lay in wanted if lay is not None]
        for lay in self._limit_layers:
            lay.events.contrast_limits.connect(self._on_contrast)
        self._on_contrast()

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

    def _ensure_layers(self) -> None:
        """Create or reuse the three layers, matching the image's shape and transform."""
        from napari.layers import Labels, Points

        session = self._session
        shape = session.labels_shape
        ndim = len(shape)
        layers = self.viewer.layers
        kwargs = self._layer_kwargs()

        points = _unwrap(layers[CLICKS_LAYER]) if CLICKS_LAYER in layers else None
        if not (isinstance(points, Points) and points.ndim == ndim):
            size = max(2.0, max(session.spatial_shape) / 80.0)
            points = Points(
                np.zeros((0, ndim)),
                ndim=ndim,
                name=CLICKS_LAYER,
                features={"positive": np.zeros(0, dtype=bool)},
                face_color="positive",
                face_color_cycle={True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
                border_color="white",
                size=size,
                **kwargs,
            )
            layers.append(points)
        else:
            points.scale, points.translate = kwargs["scale"], kwargs["translate"]
            if "positive" not in points.features:
                points.features = {"positive": np.ones(len(points.data), dtype=bool)}
            points.face_color_cycle = {True: POSITIVE_COLOR, False: NEGATIVE_COLOR}
            points.face_color = "positive"
        self._points = points

        current = _unwrap(layers[CURRENT_LAYER]) if CURRENT_LAYER in layers else None
        if isinstance(current, Labels) and tuple(current.data.shape) == shape:
            current.data[...] = 0
            self._shown.clear()
            current.scale, current.translate = kwargs["scale"], kwargs["translate"]
            current.refresh()
        else:
            if isinstance(current, Labels):  # the preview of another image's geometry
                layers.remove(current)
            current = Labels(
                np.zeros(shape, dtype=np.uint8), name=CURRENT_LAYER, opacity=0.55, **kwargs
            )
            layers.append(current)
            self._shown.clear()
        current.colormap = _preview_colormap()
        self._current = current

        objects = self._objects if self._objects in layers else None
        if objects is None or tuple(objects.data.shape) != shape:
            objects = _unwrap(layers[OBJECTS_LAYER]) if OBJECTS_LAYER in layers else None
        if not (
            isinstance(objects, Labels)
            and tuple(objects.data.shape) == shape
            and isinstance(objects.data, np.ndarray)
        ):
            old = _unwrap(layers[OBJECTS_LAYER]) if OBJECTS_LAYER in layers else None
            if (
                isinstance(old, Labels)
                and isinstance(old.data, np.ndarray)
                and tuple(old.data.shape) != shape
                and not old.data.any()
            ):
                layers.remove(old)  # ours, empty, for another geometry (labels are kept)
            objects = Labels(np.zeros(shape, dtype=np.uint32), name=OBJECTS_LAYER, **kwargs)
            layers.append(objects)
        self._objects = objects

        # the preview above the objects, the clicks on top
        for lay in (objects, current, points):
            index = layers.index(lay)
            if index != len(layers) - 1:
                layers.move(index, len(layers))
        points.events.data.connect(self._on_points_data)
        points.events.features.connect(self._on_points_data)
        self._apply_default_polarity()

    def _layers_alive(self) -> bool:
        layers = self.viewer.layers
        return all(
            lay is not None and lay in layers
            for lay in (self._points, self._current, self._objects)
        )

    def _require_session(self) -> SegmentationSession | None:
        if self._session is None:
            _notify_warning("f-BRS: add or select an image layer first.")
            return None
        if not self._layers_alive():
            with self._guarding():
                self._detach_layer_events()
                self._ensure_layers()
            self._image_layer.events.data.connect(self._on_image_data)
            self._apply_channels(render=False)  # follows the contrast limits again
            self._refresh_objects_choices()
            self._write_points()
            self._render(self._session.preview_keys(), clear=True)
            self._adopt_objects_layer()
        return self._session

    def _adopt_objects_layer(self) -> None:
        """Follow the objects layer if its data was replaced outside the widget."""
        data = self._objects.data
        if data is not self._session.labels:
            self._session.set_labels(data)  # clears the history: it was about the old array

    @contextlib.contextmanager
    def _guarding(self) -> Iterator[None]:
        self._guard += 1
        try:
            yield
        finally:
            self._guard -= 1

    def _on_objects_choice(self, *_: Any) -> None:
        name = self.objects_combo.currentText()
        if self._session is None or not name or name not in self.viewer.layers:
            return
        layer = _unwrap(self.viewer.layers[name])
        if layer is self._objects:
            return
        try:
            self._session.set_labels(layer.data)
        except (TypeError, ValueError) as exc:
            _notify_error(f"f-BRS cannot commit into {name!r}: {exc}")
            self._refresh_objects_choices()
            return
        self._objects = layer
        self._update_buttons()

    def _on_contrast(self, event: Any = None) -> None:
        """Contrast limits of the image or a channel layer changed: the model sees what
        is shown, from the next object on (so a dragged slider does not re-predict)."""
        session = self._session
        if session is None or self._image_layer is None:
            return
        session.contrast_limits = tuple(self._image_layer.contrast_limits)
        if session.rgb or session.channel_axis is not None:
            return
        names = list(dict.fromkeys(c.currentData() for c in self.channel_combos))
        layers = [
            _unwrap(self.viewer.layers[n])
            for n in names
            if n is not None and n in self.viewer.layers
        ]
        if len(layers) == session.n_channels:
            session.channel_limits = [tuple(lay.contrast_limits) for lay in layers]

    def _apply_default_polarity(self, *_: Any) -> None:
        if self._points is not None:
            self._points.feature_defaults = {
                "positive": bool(self.default_positive_check.isChecked())
            }

    # ==================================================================== slices
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
            _notify_info("f-BRS: wait for the propagation (or cancel it), then move on.")
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

    # ==================================================================== input
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
            _notify_warning(
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
            _notify_warning(f"f-BRS: {rejected} click(s) outside the image were removed.")
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

    # ==================================================================== changes
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
            _notify_error(f"f-BRS {'undo' if undo else 'redo'} failed: {exc}")
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
        try:
            info = session.commit(
                self._key, label=label, overwrite=self.overwrite_check.isChecked()
            )
        except (ValueError, TypeError, OverflowError) as exc:
            self._step_pending = 0
            _notify_warning(f"f-BRS: {exc}")
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

    # ==================================================================== prediction
    def _schedule(self) -> None:
        """Predict the current slice if its preview is out of date (one job at a time)."""
        session = self._session
        if session is None or self._closed:
            return
        if self._running:
            self._rerun = True  # a stale running job stops through its cancel callback
            return
        request = session.request(self._key)
        if request is None:
            if self._finish_pending and session.is_up_to_date(self._key):
                self._commit_now()
            self._render([self._key])
            self._update_buttons()
            return
        self._running = True
        self._set_busy(True)
        if self.synchronous:
            try:
                result = session.compute(request)
            except Exception as exc:
                self._on_error(request, exc)
            else:
                self._on_result(result)
            self._on_done()
            return
        from napari.qt.threading import thread_worker

        worker = thread_worker(session.compute, start_thread=False, ignore_errors=True)(request)
        worker.returned.connect(self._on_result)
        worker.errored.connect(lambda exc, req=request: self._on_error(req, exc))
        worker.finished.connect(self._on_done)
        self._worker = worker
        worker.start()

    def _on_result(self, result: PredictionResult | None) -> None:
        session = self._session
        if session is None or result is None or self._closed:
            return
        if not session.apply(result):
            return
        self._render([result.key])
        self.applied_log.append(
            (result.key, len(result.request.clicks), time.perf_counter(), result.seconds)
        )
        n = len(result.request.clicks)
        stop = (
            " Only background clicks: a stop mark that propagation does not enter."
            if session.is_stop(result.key)
            else ""
        )
        self._set_status(
            f"{n} click{'s' if n != 1 else ''}: "
            f"{int(session.mask(result.key).sum())} pixels in the preview.{stop}"
        )
        if self._finish_pending and result.key == self._key and session.is_up_to_date(self._key):
            self._commit_now()
        self._update_buttons()

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
            _notify_warning(f"f-BRS: {exc}")
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
        message = _error_message(exc)
        self._set_status(f"Propagation failed: {message}")
        _notify_error(f"f-BRS propagation failed: {message}")

    def _on_error(self, request: PredictionRequest, exc: BaseException) -> None:
        self._finish_pending = False
        self._step_pending = 0
        session = self._session
        if session is not None and not self._closed:
            try:
                change = session.rollback(request)
            except Exception:  # pragma: no cover - never leave an error unreported
                change = None
            if change is not None:
                self._write_points()
                self._render(change.keys)
                self._update_buttons()
        message = _error_message(exc)
        self._set_status(f"Prediction failed: {message}")
        _notify_error(f"f-BRS prediction failed: {message}")

    def _on_done(self) -> None:
        self._running = False
        self._propagating = False
        self._cancel_requested = False
        self._worker = None
        self._set_busy(False)
        self._rerun = False
        self._update_buttons()
        if not self._closed:
            self._schedule()

    # ==================================================================== autosave
    def _open_autosave(self, layer: Image) -> None:
        """Find the sidecar of ``layer``; offer to restore one left by an earlier session."""
        self._saver, self._restorable, self._unclaimed = None, None, False
        self.restore_button.setVisible(False)
        if not self.autosave or self._session is None:
            return
        try:
            path = _layer_source_path(layer)
            saver = Autosave.for_image(path if path is not None else str(layer.name))
        except Exception as exc:  # never stop segmenting over the autosave
            self._autosave_failed(exc)
            return
        self._saver = saver
        if not saver.exists():
            return
        self._unclaimed = True  # kept aside before this session's first write
        try:
            state = saver.load()
            state.check_matches(self._session, pixels=self._fingerprint(self._session) is not None)
        except AutosaveError as exc:
            _notify_warning(f"f-BRS: {exc}. It is kept beside this session's autosave.")
            return
        except Exception as exc:
            self._autosave_failed(exc)
            return
        saver.last_state = None  # nothing restored yet: provenance starts afresh
        n_objects = len(state.objects)
        n_clicks = sum(len(c) for c in state.clicks.values())
        if not n_objects and not n_clicks and (state.labels is None or not state.labels.any()):
            return
        self._restorable = state
        self.restore_button.setText(
            f"Restore previous session ({n_objects} object{'s' if n_objects != 1 else ''})"
        )
        self.restore_button.setVisible(True)
        _notify_info(
            f"f-BRS found an autosaved session of {layer.name!r} from {state.saved_at} "
            f"({n_objects} objects, {n_clicks} clicks): click 'Restore previous session' "
            "in the f-BRS panel to bring it back."
        )

    @staticmethod
    def _fingerprint(session: SegmentationSession) -> str | None:
        """:func:`image_fingerprint` of the first slice of an in-memory image; ``None`` for
        a lazy one (dask, zarr), whose slices are read only when segmented."""
        if not isinstance(session.image, np.ndarray):
            return None
        return image_fingerprint(session.image_slice(tuple(0 for _ in session.stack_shape)))

    def _autosave_soon(self, immediate: bool = False) -> None:
        """Autosave now (commits, undo, redo) or after :attr:`autosave_delay_ms` (clicks)."""
        if self._saver is None or self._session is None or not self.autosave:
            return
        if immediate:
            self.save_autosave()
        else:
            self._autosave_timer.start(max(0, int(self.autosave_delay_ms)))

    def _flush_autosave(self) -> None:
        """Write a pending (debounced) autosave at once."""
        if self._autosave_timer.isActive():
            self.save_autosave()

    def _keep_old_sidecar(self, saver: Autosave) -> None:
        """Move a sidecar left by an earlier session (not restored) aside, so that this
        session's autosave never overwrites it: ``<name>.previous.fbrs-autosave.json``."""
        base = saver.path.name[: -len(SUFFIX)] if saver.path.name.endswith(SUFFIX) else ""
        backup = saver.path.with_name(f"{base or saver.path.stem}.previous{SUFFIX}")
        state = self._restorable
        if state is None:
            with contextlib.suppress(AutosaveError):
                state = Autosave.read(saver.path)
        if state is not None:
            Autosave(backup).write(state)
        elif saver.exists():  # unreadable: keep the file as it is, under another name
            os.replace(saver.path, backup.with_suffix(".damaged"))
        self._unclaimed = False

    def _autosave_failed(self, exc: BaseException) -> None:
        if not self._autosave_warned:
            self._autosave_warned = True
            _notify_warning(f"f-BRS autosave is off for this image: {exc}")

    # ==================================================================== models
    def _make_predictor(self) -> Predictor:
        """Predictor factory of the session (runs on the worker thread)."""
        s = self._settings
        net = self._load_net(s.model, s.device)
        from napari_fbrs.core.predictor import Predictor
        from napari_fbrs.core.transforms import ZoomIn

        zoom = (
            ZoomIn(
                target_size=s.zoom_target_size,
                skip_clicks=s.zoom_skip_clicks,
                expansion_ratio=s.zoom_expansion_ratio,
                min_crop_size=s.zoom_min_crop,
                first_click_crop=s.zoom_first_click_crop or None,
            )
            if s.zoom_in
            else None
        )
        return Predictor(
            net,
            mode=s.mode,
            device=s.device,
            with_flip=s.with_flip,
            zoom_in=zoom,
            prob_thresh=s.prob_thresh,
            max_size=s.max_size or None,
            lbfgs_maxfun=s.lbfgs_maxfun,
            net_clicks_limit=s.net_clicks or None,
            min_size=s.min_size or None,
        )

    def _load_net(self, model: Any, device: str) -> Any:
        """The network for ``model`` on ``device``, loaded once (any thread)."""
        if not isinstance(model, (str, Path)):
            return model  # a network object
        cache_key = (_model_key(model), device)
        with self._net_lock:
            net = self._nets.get(cache_key)
            if net is not None:
                return net
            from napari_fbrs.core.models.registry import load_model

            path: Any = model
            if isinstance(model, str) and model in zoo.CHECKPOINTS:
                info = zoo.CHECKPOINTS[model]

                def progress(done: int, total: int) -> None:
                    pct = f" {100 * done / total:.0f}%" if total else ""
                    self._bridge.model_message.emit(f"Downloading {model}...{pct}", False)

                path = zoo.checkpoint_path(model, download=True, progress=progress)
                if not info.bundled:
                    self._bridge.model_message.emit(f"{model}: cached at {path}", False)
            net = load_model(path, device=device)
            self._nets.clear()  # keep one network in memory
            self._nets[cache_key] = net
            return net

    def _on_model_choice(self, *_: Any) -> None:
        self._settings = self._read_settings()
        self._update_model_status()
        if not self.synchronous:
            self._warm_up()

    def _open_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open an f-BRS checkpoint",
            str(Path.home()),
            "Checkpoints (*.pth *.pt);;All files (*)",
        )
        if path:
            self.set_model(path)

    def _show_model_message(self, text: str, is_error: bool) -> None:
        self.model_status.setText(text)
        self.model_status.setStyleSheet("color: #e04040;" if is_error else "")

    def _model_problem(self) -> str | None:
        """Why the selected model cannot be used right now (``None``: it can, maybe after
        a download)."""
        model = self._settings.model
        if isinstance(model, Path):
            return None if model.is_file() else f"The checkpoint file {model} does not exist."
        if isinstance(model, str) and model in zoo.CHECKPOINTS:
            info = zoo.CHECKPOINTS[model]
            if info.bundled:
                try:
                    zoo.checkpoint_path(model, download=False)
                except FileNotFoundError as exc:
                    return (
                        f"The bundled model {model!r} is not installed: {exc}. Choose "
                        "another model, or open a checkpoint file."
                    )
        return None

    def _update_model_status(self, *_: Any) -> None:
        model = self._settings.model
        problem = self._model_problem()
        if problem is not None:
            self._show_model_message(problem, True)
            return
        if isinstance(model, str) and model in zoo.CHECKPOINTS:
            info = zoo.CHECKPOINTS[model]
            if info.bundled:
                text = f"{model}: {info.description}"
            else:
                try:
                    path = zoo.checkpoint_path(model, download=False)
                    text = f"{model}: cached at {path}"
                except FileNotFoundError:
                    text = (
                        f"{model}: downloaded on first use (~{info.size_mb:.0f} MB) into "
                        f"{zoo.cache_dir()} (set NAPARI_FBRS_CACHE to change it)."
                    )
        elif isinstance(model, Path):
            text = f"Checkpoint file {model}"
        else:
            text = f"In-memory network {type(model).__name__}"
        self._show_model_message(text, False)

    def _warm_up(self) -> None:
        """Import torch and load the model in the background, so the first click is fast."""
        if self.synchronous or self._closed or self._model_problem() is not None:
            return
        model = self._settings.model
        if isinstance(model, str) and model in zoo.CHECKPOINTS:
            if not zoo.CHECKPOINTS[model].bundled:
                try:
                    zoo.checkpoint_path(model, download=False)
                except FileNotFoundError:
                    return  # no download before the user clicks
        from napari.qt.threading import thread_worker

        def load() -> None:
            self._load_net(model, self._settings.device)
            import napari_fbrs.core.predictor  # noqa: F401

        worker = thread_worker(load, start_thread=False, ignore_errors=True)()
        worker.errored.connect(
            lambda exc: self._show_model_message(f"The model could not be loaded: {exc}", True)
        )
        worker.start()
