""":class:`SegmentationSession`: its constructor, and the parts it is composed of.

Each part is a mixin in its own module (channels, slices, objects, prediction, labels,
commits, propagation, history); they share the state that ``__init__`` sets here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fbrs.core.session.channels import _ChannelsMixin
from napari_fbrs.core.session.commits import _CommitsMixin
from napari_fbrs.core.session.entries import _Entry
from napari_fbrs.core.session.history import _HistoryMixin
from napari_fbrs.core.session.labels import _LabelsMixin
from napari_fbrs.core.session.objects import _ObjectsMixin
from napari_fbrs.core.session.prediction import _PredictionMixin
from napari_fbrs.core.session.propagation import _PropagationMixin
from napari_fbrs.core.session.provenance import _ProvenanceMixin
from napari_fbrs.core.session.slices import _SlicesMixin
from napari_fbrs.core.session.types import SessionClick, SliceKey, _Object

if TYPE_CHECKING:  # pragma: no cover
    from napari_fbrs.core.predictor import Predictor


class SegmentationSession(
    _ChannelsMixin,
    _SlicesMixin,
    _ObjectsMixin,
    _PredictionMixin,
    _LabelsMixin,
    _CommitsMixin,
    _PropagationMixin,
    _ProvenanceMixin,
    _HistoryMixin,
):
    """Interactive segmentation state of one image or stack (see :mod:`napari_fbrs.core.session`).

    Parameters
    ----------
    image : array-like
        ``(..., H, W)`` grey or, with ``rgb=True``, ``(..., H, W, C)`` with ``C`` in
        ``{3, 4}``; any numeric dtype. Lazy arrays (dask, zarr) are read one ``(H, W)``
        plane at a time, when a slice's predictor is made (or a slice is propagated to).
    rgb : bool
        Whether the last axis holds colour channels.
    channel_axis : int, optional
        A leading axis of ``image`` (not one of the last two, not with ``rgb``) that holds
        channels. It stays in :attr:`stack_shape` with length 1: the labels have the
        image's number of axes and broadcast against it.
    channels : sequence of array-like, optional
        Channels as separate arrays, each of ``image``'s shape (napari layers split with
        ``channel_axis``); ``image`` then only gives the geometry (it usually is one of
        them). Not with ``channel_axis`` or ``rgb``.
    channel_map : sequence of int or None, optional
        Which channels the model sees (indices into the channels): one index: that
        channel, as grey; two or three: red, green(, blue), ``None`` for a black colour.
        Default ``(0,)``. See :meth:`set_channels`.
    labels : numpy.ndarray, optional
        Integer array of shape :attr:`labels_shape` to commit objects into (it is written
        in place unless its dtype must be widened). Default: zeros, ``uint32``.
    predictor_factory : callable, optional
        ``factory() -> Predictor`` (an unconfigured predictor, no image set); called once
        per object, on the thread that runs :meth:`compute`, so predictor settings take
        effect from the next object. Required before the first prediction.
    contrast_limits : (low, high), optional
        Intensity window of every channel (napari's contrast limits): what is shown is
        what the model sees. Default: the predictor's rules (``uint8 / 255``, else robust
        percentiles of the slice). Read when a predictor is made (from the next object).
    channel_limits : sequence of (low, high) or None, optional
        Per channel (one entry per channel), overriding ``contrast_limits`` for that
        channel: each napari channel layer has its own.
    prob_thresh : float
        Threshold of the preview masks and of commits; changing it re-thresholds without
        recomputing.
    max_live_predictors : int
        Predictors (each holding a copy of its slice) kept alive; an evicted object
        replays its clicks when it is predicted again.
    max_history : int
        Undo steps kept.

    Examples
    --------
    >>> s = SegmentationSession(image, predictor_factory=lambda: Predictor(net))  # doctest: +SKIP
    >>> s.add_click(120, 200, positive=True)                                     # doctest: +SKIP
    >>> prob = s.predict()                                                       # doctest: +SKIP
    >>> info = s.commit()                  # writes label 1 into s.labels        # doctest: +SKIP
    """

    def __init__(
        self,
        image: Any,
        *,
        rgb: bool = False,
        channel_axis: int | None = None,
        channels: Sequence[Any] | None = None,
        channel_map: Sequence[int | None] | None = None,
        labels: np.ndarray | None = None,
        predictor_factory: Callable[[], Predictor] | None = None,
        contrast_limits: Sequence[float] | None = None,
        channel_limits: Sequence[Sequence[float] | None] | None = None,
        prob_thresh: float = 0.49,
        max_live_predictors: int = 4,
        max_history: int = 1000,
    ):
        if not hasattr(image, "shape"):  # a nested list or another array-like
            image = np.asarray(image)
        shape = tuple(int(s) for s in image.shape)
        if rgb:
            if len(shape) < 3 or shape[-1] not in (3, 4):
                raise ValueError(f"an RGB image needs a last axis of 3 or 4, got shape {shape}")
            if channel_axis is not None or channels is not None:
                raise ValueError("an RGB image has its colours already: no channel_axis/channels")
            spatial_shape = shape[-3:-1]
            stack_shape = shape[:-3]
        else:
            if len(shape) < 2:
                raise ValueError(f"the image needs at least two axes, got shape {shape}")
            spatial_shape = shape[-2:]
            stack_shape = shape[:-2]
        if min(spatial_shape) < 1:
            raise ValueError(f"the image is empty (shape {shape})")
        if channel_axis is not None:
            if channels is not None:
                raise ValueError("give channels either along channel_axis or as arrays")
            n_lead = len(stack_shape)
            axis = int(channel_axis)
            axis = axis + len(shape) if axis < 0 else axis
            if not 0 <= axis < n_lead:
                raise ValueError(
                    f"channel_axis {channel_axis} is not a leading axis of the image of "
                    f"shape {shape} (the last two axes are spatial)"
                )
            self._channel_axis: int | None = axis
            self._n_channels = stack_shape[axis]
            stack_shape = stack_shape[:axis] + (1,) + stack_shape[axis + 1 :]
        else:
            self._channel_axis = None
            self._n_channels = 0 if rgb else 1
        self._image = image
        self.rgb = bool(rgb)
        self.stack_shape: tuple[int, ...] = stack_shape
        self.spatial_shape: tuple[int, int] = (int(spatial_shape[0]), int(spatial_shape[1]))
        self._channel_arrays: tuple[Any, ...] | None = None
        self._channel_map: tuple[int | None, ...] | None = None if rgb else (0,)
        self._input_gen = 0
        self.predictor_factory = predictor_factory
        self.contrast_limits = contrast_limits
        self._channel_limits: tuple[tuple[float, float] | None, ...] | None = None
        self.prob_thresh = prob_thresh
        self.max_live_predictors = max(1, int(max_live_predictors))
        self.max_history = max(1, int(max_history))
        self._labels: np.ndarray = (
            np.zeros(self.labels_shape, dtype=np.uint32) if labels is None else labels
        )
        self._check_labels(self._labels)
        self._objects: dict[SliceKey, _Object] = {}
        self._done: list[_Entry] = []
        self._undone: list[_Entry] = []
        # objects made before this session (a restored autosave): (label, key) ->
        # (clicks, pixels on the slice when made), for edit_object
        self._known: dict[tuple[int, SliceKey], tuple[tuple[SessionClick, ...], int]] = {}
        # propagations made before this session: label -> (start slice, clicks, pixels in
        # the whole stack when made, settings or None), for reproducible_objects
        self._known_propagations: dict[
            int, tuple[SliceKey, tuple[SessionClick, ...], int, dict[str, Any] | None]
        ] = {}
        self._lock = threading.RLock()  # one predictor computation at a time
        self._live: list[_Object] = []  # objects holding a predictor, oldest first
        if channels is not None or channel_map is not None:
            self.set_channels(channel_map, channels=channels)
        self.channel_limits = channel_limits

    def blank_copy(self) -> SegmentationSession:
        """A session of the same image with nothing in it yet, for work on another thread.

        Same image, channels and channel map, intensity windows, predictor factory and
        threshold; labels of zeros (``uint32``), no objects, an unbounded history (so that
        :meth:`commits` lists everything made in it). Its objects come back here with
        :meth:`commit_object`; this session is not touched meanwhile.
        """
        copy = SegmentationSession(
            self._image,
            rgb=self.rgb,
            channel_axis=self._channel_axis,
            channels=self._channel_arrays,
            channel_map=None if self.rgb else self._channel_map,
            labels=np.zeros(self.labels_shape, dtype=np.uint32),
            predictor_factory=self.predictor_factory,
            contrast_limits=self.contrast_limits,
            channel_limits=self._channel_limits,
            prob_thresh=self.prob_thresh,
            max_live_predictors=self.max_live_predictors,
            max_history=2**62,
        )
        return copy
