"""Qt-free state of an interactive segmentation session on an image or an nD stack.

A :class:`SegmentationSession` is what the napari widget wraps, and what a script can use
directly on arrays. It holds

* the image: ``(..., H, W)`` grey or ``(..., H, W, C)`` RGB(A) (``rgb=True``); the last two
  (non-channel) axes are spatial, every leading axis indexes a *slice*, identified by its
  **key**, the tuple of leading indices (``()`` for a 2D image);
* per slice, the *current object*: its clicks ``(y, x, positive)`` (``y, x`` = napari
  ``(row, col)`` in image pixels), its predictor (made on demand by ``predictor_factory``)
  and its last probability map;
* the labels array the objects are committed into, ``(..., H, W)`` integer (the image's
  shape without the channel axis);
* one linear undo/redo history of click edits and commits.

**What the model sees.** A grey image is one *channel*. An image may hold several: along
one of its leading axes (``channel_axis``; that axis stays in the stack with length 1, so
the labels broadcast against the image and line up with it in napari), or as separate
arrays of one shape (``channels``, e.g. napari layers made with ``channel_axis``). The
*channel map* picks one channel (given to the predictor as grey, with its contrast limits)
or up to three for red, green and blue (each scaled to ``[0, 1]`` by its own contrast
limits, then given as a float RGB image). Every read takes one ``(H, W)`` plane, so lazy
arrays (dask, zarr) are never loaded whole.

**Objects across slices.** The object of a slice may carry a *pinned* id
(:meth:`~SegmentationSession.set_object_label`): it is then committed with that id, and
that id's old pixels on the slices written are replaced (a correction of an object that
exists already). :meth:`~SegmentationSession.carried_label` says which id to keep when
moving to a neighbouring slice. On a slice whose clicks are all negative (a "stop"
mark), propagation along a line of slices stops.

Prediction is split so that the slow part can run on a worker thread while the caller
keeps its event loop responsive::

    req = session.request(key)          # main thread: snapshot, or None if up to date
    res = session.compute(req)          # any thread: runs the predictor; None if stale
    session.apply(res)                  # main thread: stores the result unless stale

A request is *stale* as soon as the slice's clicks differ from the ones it was made for
(a newer click supersedes it): the predictor's cancel callback then stops the L-BFGS loop
early, ``compute`` returns ``None`` and drops the half-optimised state, and ``apply``
refuses stale results. :meth:`predict` does all three steps in the calling thread.

Commits write the current object's mask into the labels array with the next free id (or
a given one), only over background unless ``overwrite=True``, and promote the array's
dtype (``uint8 -> uint16 -> ...``) instead of letting ids wrap around. Every error is
raised before anything is modified.

Nothing here imports napari, Qt or torch (the predictor factory does, when called).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from napari_fbrs.core.predictor import Predictor

__all__ = [
    "Change",
    "CommitInfo",
    "CommittedObject",
    "PredictionRequest",
    "PredictionResult",
    "PropagationRequest",
    "SegmentationSession",
    "SessionClick",
    "SliceKey",
    "promoted_dtype",
]

#: Leading (non-spatial) indices of a slice; ``()`` for a 2D image.
SliceKey = tuple[int, ...]


class SessionClick(NamedTuple):
    """One click of the session.

    Attributes
    ----------
    y, x : float
        Row and column in image pixels (napari ``(row, col)``).
    positive : bool
        ``True``: object, ``False``: background.
    """

    y: float
    x: float
    positive: bool = True


Clicks = tuple[SessionClick, ...]


@dataclass(eq=False)
class _Object:
    """The object being segmented on one slice (identity matters, not value)."""

    clicks: Clicks = ()
    prob: np.ndarray | None = None  # (H, W) float32 of ``prob_clicks``
    prob_clicks: Clicks = ()
    predictor: Any = None
    # the predictor's redo stack ends with a state whose optimisation was cut short
    redo_dirty: bool = False
    pred_gen: int = 0  # input generation the predictor's image was made for
    prob_gen: int = 0  # input generation of ``prob``
    label: int | None = None  # pinned id (None: the next free one)


@dataclass(frozen=True, eq=False)
class PredictionRequest:
    """A snapshot of what to predict: the clicks of one slice's current object.

    Attributes
    ----------
    key : SliceKey
        The slice.
    clicks : tuple of SessionClick
        The clicks to predict for, oldest first.
    """

    key: SliceKey
    clicks: Clicks
    obj: _Object = field(repr=False)
    gen: int = field(default=0, repr=False)


@dataclass(frozen=True, eq=False)
class PropagationRequest:
    """A snapshot of an object to carry through the stack.

    Attributes
    ----------
    key : SliceKey
        The start slice.
    clicks : tuple of SessionClick
        The object's clicks (the request is stale once they change).
    axis : int
        The leading axis walked (index into ``stack_shape``).
    mask : numpy.ndarray
        ``(H, W)`` bool, the object on the start slice.
    direction : int
        ``0`` both ways, ``+1`` towards higher indices only, ``-1`` lower only.
    stop_iou : float
        Stop where the IoU of consecutive slices' masks drops below this.
    stop_slices : tuple of int
        Indices along ``axis`` that are not entered (slices whose clicks are all
        negative: the user's stop marks).
    regrowth, min_contrast : float or None
        The optional stop rules of :func:`napari_fbrs.core.propagation.propagate`.
    """

    key: SliceKey
    clicks: Clicks
    obj: _Object = field(repr=False)
    axis: int = 0
    mask: np.ndarray = field(default=None, repr=False)
    direction: int = 0
    stop_iou: float = 0.5
    stop_slices: tuple[int, ...] = ()
    gen: int = field(default=0, repr=False)
    regrowth: float | None = None
    min_contrast: float | None = None


@dataclass(frozen=True, eq=False)
class PredictionResult:
    """What :meth:`SegmentationSession.compute` produced for a request.

    Attributes
    ----------
    request : PredictionRequest
        The request it answers.
    prob : numpy.ndarray
        ``(H, W)`` float32 in ``[0, 1]``.
    seconds : float
        Time :meth:`SegmentationSession.compute` took (making the predictor included).
    """

    request: PredictionRequest
    prob: np.ndarray
    seconds: float = 0.0

    @property
    def key(self) -> SliceKey:
        return self.request.key


@dataclass(frozen=True)
class CommitInfo:
    """What a commit (or its redo) wrote.

    Attributes
    ----------
    key : SliceKey
        The slice.
    label : int
        The id written.
    n_pixels : int
        Pixels that now hold ``label`` because of the commit.
    promoted_from : numpy.dtype or None
        The labels array's dtype before, when it had to be widened for ``label``.
    n_cleared : int
        Pixels of ``label`` set back to 0 because the new object replaced the old one
        there (a commit with a pinned id, see :meth:`SegmentationSession.commit`).
    """

    key: SliceKey
    label: int
    n_pixels: int
    promoted_from: np.dtype | None = None
    n_cleared: int = 0


@dataclass(frozen=True)
class CommittedObject:
    """A commit in the undo history and how it was made (provenance, for autosave and
    replay); see :meth:`SegmentationSession.commits`.

    Attributes
    ----------
    key : SliceKey
        The slice it was segmented (or propagated from) on.
    label : int
        The id written.
    clicks : tuple of SessionClick
        The clicks that made it, oldest first, in image pixels.
    propagated : bool
        Carried through the stack (:meth:`SegmentationSession.commit_propagation`).
    n_pixels : int
        Pixels the commit wrote.
    replaced : bool
        The commit first cleared the id's earlier pixels on the slices it wrote.
    keys : tuple of SliceKey
        The slices the commit wrote on, ascending.
    propagation : dict or None
        A propagation's ``axis``, ``direction``, ``stop_iou``, ``stop_slices``,
        ``regrowth`` and ``min_contrast``.
    """

    key: SliceKey
    label: int
    clicks: tuple[SessionClick, ...]
    propagated: bool = False
    n_pixels: int = 0
    replaced: bool = False
    keys: tuple[SliceKey, ...] = ()
    propagation: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Change:
    """What an undo, a redo or an edit changed, for a UI to refresh.

    Attributes
    ----------
    keys : tuple of SliceKey
        Slices whose clicks (and so preview) changed.
    labels : bool
        Whether the labels array changed (values, or the array itself after a dtype
        promotion: re-read :attr:`SegmentationSession.labels`).
    description : str
        One line for a status bar, e.g. ``"undo: commit of label 3"``.
    """

    keys: tuple[SliceKey, ...]
    labels: bool
    description: str


# -- history entries ----------------------------------------------------------------------
@dataclass(eq=False)
class _ClicksEdit:
    key: SliceKey
    before: Clicks
    after: Clicks

    def describe(self) -> str:
        n0, n1 = len(self.before), len(self.after)
        if n1 == n0 + 1 and self.after[:n0] == self.before:
            return "click"
        if n1 == 0:
            return "reset of the clicks"
        return "click edit"


@dataclass(eq=False)
class _Group:
    entries: tuple[_ClicksEdit, ...]

    def describe(self) -> str:
        return "click edits"


@dataclass(eq=False)
class _Commit:
    key: SliceKey
    label: int
    where: tuple[np.ndarray, ...]  # (N,) intp per labels axis: the pixels written
    old_values: np.ndarray  # (N,) what was there, labels' dtype before the commit
    promoted_from: np.dtype | None
    promoted_to: np.dtype | None
    obj: _Object  # the committed object (restored by undo)
    fresh: _Object  # the empty object that replaced it (restored by redo)

    propagated: bool = False
    # (M,) intp per labels axis: pixels of ``label`` set to 0 (replaced), disjoint from where
    cleared: tuple[np.ndarray, ...] | None = None
    keys: frozenset = frozenset()  # the slices the commit wrote on
    # a propagation's settings (axis, direction, stop rules; to replay it), else None
    propagation: dict | None = None

    def describe(self) -> str:
        what = "propagation" if self.propagated else "commit"
        return f"{what} of label {self.label}"


@dataclass(eq=False)
class _LabelsSwap:
    """The labels array replaced as a whole (a restore): undo puts the old one back."""

    before: np.ndarray
    after: np.ndarray
    what: str

    def describe(self) -> str:
        return self.what


_Entry = Any  # _ClicksEdit | _Group | _Commit | _LabelsSwap


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


def _click_items(click: Any) -> tuple[Any, Any, Any]:
    """``(y, x, positive)`` of one click item, or a ValueError that says what a click is."""
    try:
        items = tuple(click)
    except TypeError:
        items = ()
    if len(items) != 3:
        raise ValueError(f"a click is (y, x, positive), got {click!r}")
    return items


def _clamped(click: SessionClick, shape: tuple[int, int]) -> tuple[float, float, bool]:
    """The click as the predictor stores it (clamped onto the pixel grid)."""
    h, w = shape
    return (
        min(max(float(click.y), 0.0), h - 1.0),
        min(max(float(click.x), 0.0), w - 1.0),
        bool(click.positive),
    )


def _pair(value: Any) -> tuple[float, float] | None:
    """``(low, high)`` as floats, or ``None``."""
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    return (lo, hi)


class _WalkVolume:
    """The model input along one line of slices, read one slice at a time.

    What :func:`napari_fbrs.core.propagation.propagate` walks: ``shape`` is ``(n, H, W)``
    or ``(n, H, W, C)`` and ``numpy.take(volume, k, axis=0)`` (which calls :meth:`take`)
    reads slice ``k`` only, through :meth:`SegmentationSession.input_slice`.
    """

    def __init__(self, session: SegmentationSession, key: SliceKey, axis: int):
        self._session = session
        self._key = key
        self._axis = axis
        n = session.stack_shape[axis]
        self.shape = (n, *session.spatial_shape, *session.input_channels_shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def take(self, index: Any, axis: int | None = 0, out: Any = None, mode: str = "raise"):
        if axis not in (0, -self.ndim) or out is not None or np.ndim(index) != 0:
            raise NotImplementedError("only one slice along the walked axis can be read")
        key = list(self._key)
        key[self._axis] = int(index)
        return self._session.input_slice(tuple(key))[0]


class _CancelProbe:
    """Cancel callback for one request that remembers whether it ever fired."""

    def __init__(self, stale: Callable[[], bool]):
        self._stale = stale
        self.fired = False

    def __call__(self) -> bool:
        if self._stale():
            self.fired = True
        return self.fired


class SegmentationSession:
    """Interactive segmentation state of one image or stack (see the module docstring).

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
        self._lock = threading.RLock()  # one predictor computation at a time
        self._live: list[_Object] = []  # objects holding a predictor, oldest first
        if channels is not None or channel_map is not None:
            self.set_channels(channel_map, channels=channels)
        self.channel_limits = channel_limits

    # -- shapes and settings ----------------------------------------------------------------
    @property
    def image(self) -> Any:
        """The image array the session segments (as given)."""
        return self._image

    @property
    def contrast_limits(self) -> tuple[float, float] | None:
        """``(low, high)`` intensity window of every channel, or ``None`` (see the class
        parameters); a change applies to predictors made from then on."""
        return self._contrast_limits

    @contrast_limits.setter
    def contrast_limits(self, value: Sequence[float] | None) -> None:
        self._contrast_limits = _pair(value)

    @property
    def channel_limits(self) -> tuple[tuple[float, float] | None, ...] | None:
        """Per-channel ``(low, high)`` windows (``None`` entries fall back to
        :attr:`contrast_limits`), or ``None``."""
        return self._channel_limits

    @channel_limits.setter
    def channel_limits(self, value: Sequence[Sequence[float] | None] | None) -> None:
        if value is None:
            self._channel_limits = None
            return
        limits = tuple(_pair(v) for v in value)
        if len(limits) != self.n_channels:
            raise ValueError(
                f"channel_limits needs one entry per channel ({self.n_channels}), got {len(limits)}"
            )
        self._channel_limits = limits

    @property
    def channel_axis(self) -> int | None:
        """The leading axis of :attr:`image` that holds channels (length 1 in
        :attr:`stack_shape`), or ``None``."""
        return self._channel_axis

    @property
    def n_channels(self) -> int:
        """Number of channels: along :attr:`channel_axis`, or separate arrays, or 1 for a
        grey image; 0 for an RGB image (its colours are used as they are)."""
        if self._channel_arrays is not None:
            return len(self._channel_arrays)
        return self._n_channels

    @property
    def channel_map(self) -> tuple[int | None, ...] | None:
        """Channels the model sees: ``(c,)`` grey, or ``(r, g[, b])`` with ``None`` for a
        black colour; ``None`` for an RGB image."""
        return self._channel_map

    @property
    def input_channels_shape(self) -> tuple[int, ...]:
        """Trailing shape of what the predictor gets: ``()`` grey, ``(3,)`` a mapped RGB,
        ``(C,)`` an RGB(A) image."""
        if self.rgb:
            return (int(self._image.shape[-1]),)
        return () if len(self._channel_map) == 1 else (3,)

    def set_channels(
        self,
        channel_map: Sequence[int | None] | None = None,
        *,
        channels: Sequence[Any] | None = None,
    ) -> list[SliceKey]:
        """Choose what the model sees (see the class parameters).

        The previews of unfinished objects are dropped when it changes: their next
        prediction makes a new predictor on the new input and replays their clicks (a
        running prediction becomes stale). Not an undo step.

        Parameters
        ----------
        channel_map : sequence of int or None, optional
            One channel index (grey) or two or three (red, green, blue; ``None``: black).
            Default: keep the current one, or ``(0,)`` when the channels change.
        channels : sequence of array-like, optional
            New separate channel arrays, each of :attr:`image`'s shape (only for a
            session without :attr:`channel_axis`). Default: keep them.

        Returns
        -------
        list of SliceKey
            Slices whose previews were dropped.

        Raises
        ------
        ValueError
            An RGB image, a wrong shape, or a map that is empty, too long, all ``None``
            or out of range. Nothing changes.
        """
        if self.rgb:
            raise ValueError("an RGB image is used as it is: it has no channels to map")
        arrays = self._channel_arrays
        if channels is not None:
            if self._channel_axis is not None:
                raise ValueError("this image has its channels along channel_axis")
            arrays = tuple(channels)
            if not arrays:
                raise ValueError("channels is empty")
            shape = tuple(int(s) for s in self._image.shape)
            for array in arrays:
                if tuple(int(s) for s in array.shape) != shape:
                    raise ValueError(
                        f"a channel of shape {tuple(array.shape)} does not match the image {shape}"
                    )
        n = len(arrays) if arrays is not None else self._n_channels
        if channel_map is None:
            channel_map = self._channel_map if channels is None else (0,)
        cmap = tuple(None if c is None else int(c) for c in channel_map)
        if not 1 <= len(cmap) <= 3 or all(c is None for c in cmap):
            raise ValueError(f"a channel map has one to three channels, got {channel_map}")
        if len(cmap) == 1 and cmap[0] is None:
            raise ValueError("a one-channel map needs a channel")
        for c in cmap:
            if c is not None and not 0 <= c < n:
                raise ValueError(f"channel {c} does not exist (the image has {n})")
        same_arrays = arrays is self._channel_arrays or (
            arrays is not None
            and self._channel_arrays is not None
            and len(arrays) == len(self._channel_arrays)
            and all(a is b for a, b in zip(arrays, self._channel_arrays, strict=True))
        )
        if same_arrays and cmap == self._channel_map:
            return []
        if arrays is not None and self._channel_limits is not None:
            if len(arrays) != len(self._channel_limits):
                self._channel_limits = None
        self._channel_arrays = arrays
        self._channel_map = cmap
        self._input_gen += 1
        dropped = []
        for key, obj in sorted(self._objects.items()):
            if obj.prob is not None:
                dropped.append(key)
            obj.prob, obj.prob_clicks = None, ()
        return dropped

    def _limits(self, channel: int | None) -> tuple[float, float] | None:
        if channel is not None and self._channel_limits is not None:
            limits = self._channel_limits[channel]
            if limits is not None:
                return limits
        return self._contrast_limits

    def _plane(self, channel: int, key: SliceKey) -> np.ndarray:
        """One ``(H, W)`` plane of one channel, read alone."""
        if self._channel_axis is not None:
            index = list(key)
            index[self._channel_axis] = channel
            return np.asarray(self._image[tuple(index)])
        source = self._image if self._channel_arrays is None else self._channel_arrays[channel]
        return np.asarray(source[key] if key else source)

    def input_slice(self, key: SliceKey = ()) -> tuple[np.ndarray, tuple[float, float] | None]:
        """What the predictor gets for slice ``key``: the image and its contrast limits.

        Returns
        -------
        image : numpy.ndarray
            ``(H, W)`` one channel (any dtype, as stored); ``(H, W, 3)`` float32 in
            ``[0, 1]`` for a map of two or three channels, each scaled by its own
            contrast limits (or the predictor's default rules), black for ``None``;
            ``(H, W, C)`` for an RGB(A) image.
        contrast_limits : (low, high) or None
            The window to pass with it (``(0.0, 1.0)`` for a mapped RGB).
        """
        key = self.check_key(key)
        if self.rgb:
            return np.asarray(self._image[key] if key else self._image), self._contrast_limits
        cmap = self._channel_map
        if len(cmap) == 1:
            return self._plane(cmap[0], key), self._limits(cmap[0])
        from napari_fbrs.core.image import to_unit_rgb

        out = np.zeros((*self.spatial_shape, 3), dtype=np.float32)
        for i, c in enumerate(cmap):
            if c is not None:
                out[..., i] = to_unit_rgb(self._plane(c, key), self._limits(c))[0]
        return out, (0.0, 1.0)

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of the labels array: ``stack_shape + (H, W)``."""
        return self.stack_shape + self.spatial_shape

    @property
    def prob_thresh(self) -> float:
        """Threshold of the masks (``prob >= prob_thresh``), in ``(0, 1)``."""
        return self._prob_thresh

    @prob_thresh.setter
    def prob_thresh(self, value: float) -> None:
        value = float(value)
        if not 0.0 < value < 1.0:
            raise ValueError(f"prob_thresh must lie in (0, 1), got {value}")
        self._prob_thresh = value

    def check_key(self, key: Iterable[int]) -> SliceKey:
        """Validate a slice key and return it as a tuple of ints.

        Raises
        ------
        ValueError
            Wrong length or an index outside the stack.
        """
        key = tuple(int(k) for k in key)
        if len(key) != len(self.stack_shape):
            raise ValueError(
                f"a slice key needs {len(self.stack_shape)} indices for a stack of shape "
                f"{self.stack_shape}, got {key}"
            )
        for k, n in zip(key, self.stack_shape, strict=True):
            if not 0 <= k < n:
                raise ValueError(f"slice {key} lies outside the stack of shape {self.stack_shape}")
        return key

    def click_inside(self, y: float, x: float) -> bool:
        """Whether ``(y, x)`` is finite and inside the image as napari draws it.

        Pixel ``i`` covers ``[i - 0.5, i + 0.5)``.
        """
        h, w = self.spatial_shape
        y, x = float(y), float(x)
        return bool(
            np.isfinite(y) and np.isfinite(x) and -0.5 <= y < h - 0.5 and -0.5 <= x < w - 0.5
        )

    def key_at(self, coords: Sequence[float], clip: bool = False) -> SliceKey | None:
        """The slice at data coordinates of the image's leading axes.

        Parameters
        ----------
        coords : sequence of float
            One coordinate per leading axis of :attr:`image` (``len(stack_shape)``),
            e.g. from napari's ``layer.world_to_data``; rounded to the nearest index. The
            coordinate along :attr:`channel_axis` is ignored (every channel is one slice).
        clip : bool
            Clip to the stack instead of returning ``None`` outside it.

        Returns
        -------
        SliceKey or None
            ``None`` when a coordinate lies outside the stack (without ``clip``) or is
            not finite.
        """
        coords = [float(v) for v in coords]
        if len(coords) != len(self.stack_shape) or not all(np.isfinite(coords)):
            return None
        key = []
        for i, (v, n) in enumerate(zip(coords, self.stack_shape, strict=True)):
            k = 0 if i == self._channel_axis else int(np.round(v))
            if clip:
                k = min(max(k, 0), n - 1)
            elif not 0 <= k < n:
                return None
            key.append(k)
        return tuple(key)

    @property
    def slice_axes(self) -> tuple[int, ...]:
        """Leading axes with more than one slice (z, t, ...): those one can walk along
        (indices into :attr:`stack_shape`)."""
        return tuple(i for i, n in enumerate(self.stack_shape) if n > 1)

    @property
    def default_axis(self) -> int | None:
        """The axis walked by default: the last of :attr:`slice_axes` (z of
        ``(t, z, y, x)``), or ``None`` without slices."""
        return self.slice_axes[-1] if self.slice_axes else None

    def _check_axis(self, axis: int | None) -> int:
        axis = self.default_axis if axis is None else int(axis)
        if axis is None or not 0 <= axis < len(self.stack_shape) or axis == self._channel_axis:
            raise ValueError(f"axis {axis} is not a slice axis of the stack {self.stack_shape}")
        return axis

    def neighbour(self, key: SliceKey, axis: int | None = None, step: int = 1) -> SliceKey | None:
        """The slice ``step`` slices from ``key`` along ``axis`` (default
        :attr:`default_axis`), or ``None`` past the end of the stack.

        Raises
        ------
        ValueError
            A bad key, or an axis that is not a slice axis.
        """
        key = self.check_key(key)
        axis = self._check_axis(axis)
        k = key[axis] + int(step)
        if not 0 <= k < self.stack_shape[axis]:
            return None
        return key[:axis] + (k,) + key[axis + 1 :]

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

    def image_slice(self, key: SliceKey = ()) -> np.ndarray:
        """The plane of :attr:`image` at slice ``key`` as stored, as a numpy array: ``(H, W)``
        or ``(H, W, C)`` RGB(A); with a :attr:`channel_axis`, its channel 0. See
        :meth:`input_slice` for what the model sees."""
        key = self.check_key(key)
        return np.asarray(self._image[key] if key else self._image)

    # -- clicks -----------------------------------------------------------------------------
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

    # -- prediction -------------------------------------------------------------------------
    def prob(self, key: SliceKey = ()) -> np.ndarray | None:
        """Last computed ``(H, W)`` float32 probability map of slice ``key`` (or ``None``).

        It belongs to the clicks of the last applied prediction; see :meth:`is_up_to_date`.
        """
        obj = self._objects.get(self.check_key(key))
        return None if obj is None or not obj.clicks else obj.prob

    def mask(self, key: SliceKey = ()) -> np.ndarray | None:
        """``(H, W)`` bool preview mask of slice ``key`` (``prob >= prob_thresh``) or ``None``."""
        prob = self.prob(key)
        return None if prob is None else prob >= self._prob_thresh

    def preview_keys(self) -> list[SliceKey]:
        """Slices that have a preview (clicks and a computed probability map)."""
        return [k for k, o in sorted(self._objects.items()) if o.clicks and o.prob is not None]

    def is_up_to_date(self, key: SliceKey = ()) -> bool:
        """Whether slice ``key``'s preview belongs to its current clicks."""
        obj = self._objects.get(self.check_key(key))
        return (
            obj is None
            or not obj.clicks
            or (obj.prob is not None and obj.prob_clicks == obj.clicks)
        )

    def predictor(self, key: SliceKey = ()) -> Predictor | None:
        """The predictor of slice ``key``'s current object (``None`` until its first prediction).

        Do not call it while a :meth:`compute` runs on another thread.
        """
        obj = self._objects.get(self.check_key(key))
        return None if obj is None else obj.predictor

    def request(self, key: SliceKey = ()) -> PredictionRequest | None:
        """Snapshot what slice ``key`` needs predicted (main thread).

        Returns
        -------
        PredictionRequest or None
            ``None`` when the preview is up to date; a slice without clicks gets its
            preview cleared and needs nothing.
        """
        key = self.check_key(key)
        obj = self._obj(key)
        if not obj.clicks:
            obj.prob, obj.prob_clicks = None, ()
            return None
        if obj.prob is not None and obj.prob_clicks == obj.clicks:
            return None
        return PredictionRequest(key, obj.clicks, obj, self._input_gen)

    def is_stale(self, request: PredictionRequest | PropagationRequest) -> bool:
        """Whether ``request`` no longer describes its slice (clicks changed or committed,
        or the channels the model sees changed)."""
        return (
            self._objects.get(request.key) is not request.obj
            or request.obj.clicks != request.clicks
            or request.gen != self._input_gen
        )

    def compute(self, request: PredictionRequest) -> PredictionResult | None:
        """Run the predictor for ``request``; safe to call from a worker thread.

        The object's predictor is made on first use (``predictor_factory`` then
        ``set_image`` with the slice) and brought to the requested clicks by undo, redo
        and ``add_click``, so a click costs one prediction and an undo none.

        Returns
        -------
        PredictionResult or None
            ``None`` when the request went stale meanwhile (nothing to apply); the
            predictor is then left at a state of fully optimised clicks only.

        Raises
        ------
        Exception
            Whatever making the predictor or predicting raised (model missing, click
            rejected, out of memory...); the session's clicks and previews are untouched,
            see :meth:`rollback`.
        """
        started = time.perf_counter()
        with self._lock:
            if self.is_stale(request):
                return None
            obj = request.obj
            pred = obj.predictor
            if pred is None or obj.pred_gen != request.gen:
                if self.predictor_factory is None:
                    raise RuntimeError("no predictor factory: set session.predictor_factory")
                pred = self.predictor_factory()
                image, limits = self.input_slice(request.key)
                pred.set_image(image, contrast_limits=limits)
                obj.predictor, obj.redo_dirty, obj.pred_gen = pred, False, request.gen
            self._touch(obj)
            probe = _CancelProbe(lambda: self.is_stale(request))
            pred.set_cancel_callback(probe)
            try:
                done = self._sync(pred, obj, request.clicks, probe)
            finally:
                pred.set_cancel_callback(None)
            if not done or self.is_stale(request):
                return None
            prob = np.array(pred.prob, dtype=np.float32, copy=True)
            return PredictionResult(request, prob, time.perf_counter() - started)

    def _sync(self, pred: Any, obj: _Object, target: Clicks, probe: _CancelProbe) -> bool:
        """Bring ``pred`` to the clicks ``target``; False when cancelled on the way."""
        shape = self.spatial_shape
        want = [_clamped(c, shape) for c in target]
        have = [(c.y, c.x, c.positive) for c in pred.clicks]
        common = 0
        while common < min(len(want), len(have)) and want[common] == have[common]:
            common += 1
        while len(pred.clicks) > common:
            pred.undo()
        for i in range(common, len(want)):
            if probe():
                return False
            if not obj.redo_dirty and pred.can_redo:
                pred.redo()
                last = pred.clicks[-1]
                if (last.y, last.x, last.positive) == want[i]:
                    continue
                pred.undo()
            probe.fired = False
            pred.add_click(target[i].y, target[i].x, target[i].positive)
            obj.redo_dirty = False
            if probe.fired:  # the optimisation was cut short: do not keep that state
                pred.undo()
                obj.redo_dirty = True
                return False
        return True

    def _touch(self, obj: _Object) -> None:
        if obj in self._live:
            self._live.remove(obj)
        self._live.append(obj)
        while len(self._live) > self.max_live_predictors:
            old = self._live.pop(0)
            old.predictor, old.redo_dirty = None, False

    def apply(self, result: PredictionResult | None) -> bool:
        """Store a computed result as its slice's preview (main thread).

        Returns
        -------
        bool
            ``False`` for ``None`` or a stale result (dropped).
        """
        if result is None or self.is_stale(result.request):
            return False
        obj = result.request.obj
        obj.prob, obj.prob_clicks = result.prob, result.request.clicks
        obj.prob_gen = result.request.gen
        return True

    def predict(self, key: SliceKey = ()) -> np.ndarray | None:
        """Request, compute and apply in the calling thread; returns the preview's prob map.

        Returns
        -------
        numpy.ndarray or None
            ``(H, W)`` float32 for the current clicks, ``None`` without clicks.
        """
        key = self.check_key(key)
        request = self.request(key)
        if request is not None:
            self.apply(self.compute(request))
        return self.prob(key)

    def rollback(self, request: PredictionRequest) -> Change | None:
        """Undo the click edits that led to a failed ``request`` (main thread).

        The slice's clicks go back to those of its last successful prediction, and the
        undo entries that added the failing clicks are dropped, so everything is as it
        was before them. Nothing happens if the request is already stale.

        Returns
        -------
        Change or None
            What changed.
        """
        if self.is_stale(request):
            return None
        key, obj = request.key, request.obj
        good = obj.prob_clicks if obj.prob is not None else ()
        if obj.clicks == good:
            return None
        cut = None
        for i in range(len(self._done) - 1, -1, -1):
            entry = self._done[i]
            if not (isinstance(entry, _ClicksEdit) and entry.key == key):
                break
            if entry.before == good:
                cut = i
                break
        if cut is not None:
            del self._done[cut:]
            self._undone.clear()
            obj.clicks = good
        else:
            self._record(_ClicksEdit(key, obj.clicks, good))
        return Change((key,), False, "rollback of the failed clicks")

    # -- labels and commits -----------------------------------------------------------------
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

    def next_label(self) -> int:
        """The next free id: ``labels.max() + 1`` (1 for an empty array)."""
        if self._labels.size == 0:
            return 1
        return int(self._labels.max()) + 1

    def commit(
        self,
        key: SliceKey = (),
        label: int | None = None,
        overwrite: bool = False,
        replace: bool | None = None,
    ) -> CommitInfo:
        """Write slice ``key``'s current object into the labels (an undo step).

        The object's clicks are cleared (a new object starts; the predictor settings of
        the factory apply to it).

        Parameters
        ----------
        key : SliceKey
            The slice.
        label : int, optional
            The id to write; default the object's pinned id (:meth:`set_object_label`),
            else :meth:`next_label`.
        overwrite : bool
            Also write over pixels that hold another label; by default only background
            (0) pixels are written, so no existing label is ever lost.
        replace : bool, optional
            First clear the id's old pixels on this slice (they become 0 unless the new
            mask covers them). Default: when the id is the object's pinned one.

        Returns
        -------
        CommitInfo
            What was written.

        Raises
        ------
        ValueError
            No clicks, a preview not computed for the current clicks, an empty mask, a
            mask that lies entirely on other labels (without ``overwrite``), or a label
            below 1. Nothing is modified.
        OverflowError
            The label fits no integer dtype.
        """
        key = self.check_key(key)
        obj, mask = self._finished_mask(key)
        label, replace = self._resolve_label(obj, label, replace)
        rows, cols = np.nonzero(mask)
        where = tuple(np.full(rows.size, k, dtype=np.intp) for k in key) + (rows, cols)
        return self._commit_where(
            key, obj, where, label, overwrite, propagated=False, keys=(key,), replace=replace
        )

    def _resolve_label(
        self, obj: _Object, label: int | None, replace: bool | None
    ) -> tuple[int, bool]:
        pinned = label is None and obj.label is not None
        if label is None:
            label = obj.label if obj.label is not None else self.next_label()
        label = int(label)
        if label < 1:
            raise ValueError(f"label ids start at 1, got {label}")
        return label, pinned if replace is None else bool(replace)

    def _finished_mask(self, key: SliceKey) -> tuple[_Object, np.ndarray]:
        obj = self._objects.get(key)
        if obj is None or not obj.clicks:
            raise ValueError("there is no object to finish on this slice: click on it first")
        if obj.prob is None or obj.prob_clicks != obj.clicks:
            raise ValueError("the preview is not computed for the current clicks yet")
        mask = obj.prob >= self._prob_thresh
        if not mask.any():
            raise ValueError("the current mask is empty: nothing to commit")
        return obj, mask

    def _commit_where(
        self,
        key: SliceKey,
        obj: _Object,
        where: tuple[np.ndarray, ...],
        label: int,
        overwrite: bool,
        propagated: bool,
        keys: Iterable[SliceKey],
        replace: bool = False,
        propagation: dict | None = None,
    ) -> CommitInfo:
        """Write ``label`` at the full-array indices ``where`` (one undo step) and start a
        new object on ``key``; with ``replace``, first clear ``label`` on the slices
        ``keys``. Raises before modifying anything."""
        self._check_labels(self._labels)
        keys = frozenset(keys)
        labels = self._labels
        target = promoted_dtype(labels.dtype, label)
        if target == labels.dtype:  # a promotion writes into a new (writable) copy
            self._check_writable(labels)
        full_where = where
        old = labels[where]
        kept = 0
        if not overwrite:
            keep = old == 0
            if replace:
                kept = int(np.count_nonzero(old == label))
            where = tuple(w[keep] for w in where)
            old = old[keep]
        cleared = None
        if replace and (labels.dtype == np.bool_ or label <= np.iinfo(labels.dtype).max):
            parts = []
            for k in sorted(keys):
                found = np.nonzero(labels[k] == label)
                if found[0].size:
                    parts.append(tuple(np.full(found[0].size, i, dtype=np.intp) for i in k) + found)
            if parts:
                old_pixels = tuple(np.concatenate(a) for a in zip(*parts, strict=True))
                if full_where[0].size:  # old pixels that the new mask covers stay
                    again = np.isin(
                        np.ravel_multi_index(old_pixels, labels.shape),
                        np.ravel_multi_index(full_where, labels.shape),
                    )
                    old_pixels = tuple(a[~again] for a in old_pixels)
                if old_pixels[0].size:
                    cleared = old_pixels
        if where[0].size == 0 and kept == 0 and cleared is None:
            raise ValueError(
                "the object lies entirely on existing labels; tick 'overwrite' to replace them"
            )
        promoted_from = None
        if target != labels.dtype:
            promoted_from = labels.dtype
            labels = labels.astype(target)
        if cleared is not None:
            labels[cleared] = 0
        labels[where] = label
        self._labels = labels
        fresh = _Object()
        entry = _Commit(
            key=key,
            label=label,
            where=where,
            old_values=old,
            promoted_from=promoted_from,
            promoted_to=target if promoted_from is not None else None,
            obj=obj,
            fresh=fresh,
            propagated=propagated,
            cleared=cleared,
            keys=keys,
            propagation=propagation,
        )
        self._objects[key] = fresh
        self._push(entry)
        self._release_committed_predictors()
        n_cleared = 0 if cleared is None else int(cleared[0].size)
        return CommitInfo(key, label, int(where[0].size), promoted_from, n_cleared)

    # -- propagation through a stack --------------------------------------------------------
    def propagation_request(
        self,
        key: SliceKey = (),
        axis: int | None = None,
        direction: int = 0,
        stop_iou: float = 0.5,
        stop_slices: Iterable[int] | None = None,
        regrowth: float | None = None,
        min_contrast: float | None = None,
    ) -> PropagationRequest:
        """Snapshot slice ``key``'s object for :meth:`compute_propagation` (main thread).

        Parameters
        ----------
        key : SliceKey
            The slice whose current mask starts the propagation.
        axis : int, optional
            The leading axis to walk (an index into :attr:`stack_shape`); default
            :attr:`default_axis` (z of ``(t, z, y, x)``).
        direction : int
            ``0`` both ways, ``+1`` towards higher indices only, ``-1`` lower only.
        stop_iou : float
            Stop where the IoU between consecutive slices' masks drops below this.
        stop_slices : iterable of int, optional
            Indices along ``axis`` not to enter; default :meth:`stop_slices` (the slices
            of the line whose clicks are all negative).
        regrowth : float, optional
            Stop where a convex object's area grows again (see
            :func:`napari_fbrs.core.propagation.propagate`); ``None``: off.
        min_contrast : float, optional
            Stop where the object's brightness above the background falls below this
            fraction of the start slice's; ``None``: off.

        Raises
        ------
        ValueError
            A 2D image, an axis that is not a slice axis, a bad direction, stop_iou,
            regrowth or min_contrast, or no up-to-date non-empty mask on ``key``.
        """
        key = self.check_key(key)
        if not self.stack_shape:
            raise ValueError("propagation needs a stack: this image has no slices")
        axis = self._check_axis(axis)
        direction = int(direction)
        if direction not in (-1, 0, 1):
            raise ValueError(f"direction must be -1, 0 or +1, got {direction}")
        stop_iou = float(stop_iou)
        if not 0.0 <= stop_iou <= 1.0:
            raise ValueError(f"stop_iou must lie in [0, 1], got {stop_iou}")
        from napari_fbrs.core.propagation import check_stop_rules

        check_stop_rules(regrowth, min_contrast)
        if stop_slices is None:
            stops = self.stop_slices(key, axis)
        else:
            stops = tuple(sorted({int(k) for k in stop_slices} - {key[axis]}))
        obj, mask = self._finished_mask(key)
        return PropagationRequest(
            key,
            obj.clicks,
            obj,
            axis,
            mask.copy(),
            direction,
            stop_iou,
            stops,
            self._input_gen,
            regrowth=None if regrowth is None else float(regrowth),
            min_contrast=None if min_contrast is None else float(min_contrast),
        )

    def compute_propagation(
        self,
        request: PropagationRequest,
        *,
        stop_iou: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray | None:
        """Carry the object through the stack (any thread; slow).

        A fresh predictor from ``predictor_factory`` segments each next slice from clicks
        derived from the previous slice's mask (:func:`napari_fbrs.core.propagation.
        propagate`), along ``request.axis`` with the other leading indices fixed, in
        ``request.direction``, not entering ``request.stop_slices``. Each slice is read
        alone (:meth:`input_slice`), when it is reached.

        Parameters
        ----------
        request : PropagationRequest
            From :meth:`propagation_request`.
        stop_iou : float, optional
            Overrides ``request.stop_iou``.
        progress : callable, optional
            ``progress(done, total)`` after each slice.
        cancel : callable, optional
            ``cancel() -> bool``, polled before each slice.

        Returns
        -------
        numpy.ndarray or None
            ``(n, H, W)`` bool, ``n = stack_shape[request.axis]``: the object on every
            slice reached (``request.mask`` on the start slice); ``None`` when ``cancel``
            stopped it (nothing is to be written).
        """
        from napari_fbrs.core.propagation import propagate

        if self.predictor_factory is None:
            raise RuntimeError("no predictor factory: set session.predictor_factory")
        predictor = self.predictor_factory()
        volume = _WalkVolume(self, request.key, request.axis)
        limits = self._input_limits()
        result = propagate(
            predictor,
            volume,
            request.key[request.axis],
            request.mask,
            axis=0,
            direction=request.direction,
            stop_iou=request.stop_iou if stop_iou is None else float(stop_iou),
            stop_slices=request.stop_slices,
            regrowth=request.regrowth,
            min_contrast=request.min_contrast,
            contrast_limits=limits,
            progress=progress,
            cancel=cancel,
        )
        if cancel is not None and cancel():
            return None
        return result

    def _input_limits(self) -> tuple[float, float] | None:
        """The contrast limits that go with :meth:`input_slice`'s images."""
        if self.rgb:
            return self._contrast_limits
        if len(self._channel_map) == 1:
            return self._limits(self._channel_map[0])
        return (0.0, 1.0)

    def commit_propagation(
        self,
        request: PropagationRequest,
        volume: np.ndarray,
        label: int | None = None,
        overwrite: bool = False,
        replace: bool | None = None,
    ) -> CommitInfo:
        """Write a propagated object into the labels as one undo step (main thread).

        Parameters
        ----------
        request : PropagationRequest
            What was propagated.
        volume : numpy.ndarray
            ``(n, H, W)`` bool from :meth:`compute_propagation`.
        label, overwrite
            As in :meth:`commit` (default id: the start object's pinned one, else the
            next free one).
        replace : bool, optional
            First clear the id's old pixels on every slice the object was written on (a
            re-propagation of a corrected object). Default: when the id is the start
            object's pinned one.

        Raises
        ------
        ValueError
            The object changed meanwhile (stale request), a volume of the wrong shape, an
            empty result, or nothing left to write without ``overwrite``.
        """
        if self.is_stale(request):
            raise ValueError("the object changed while it was being propagated; try again")
        n = self.stack_shape[request.axis]
        if volume is None or volume.shape != (n, *self.spatial_shape):
            got = None if volume is None else volume.shape
            raise ValueError(f"expected a volume of shape {(n, *self.spatial_shape)}, got {got}")
        steps, rows, cols = np.nonzero(volume)
        if steps.size == 0:
            raise ValueError("the propagated object is empty: nothing to commit")
        label, replace = self._resolve_label(request.obj, label, replace)
        where = tuple(
            steps if i == request.axis else np.full(steps.size, k, dtype=np.intp)
            for i, k in enumerate(request.key)
        ) + (rows, cols)
        base = request.key
        keys = [
            base[: request.axis] + (int(s),) + base[request.axis + 1 :] for s in np.unique(steps)
        ]
        return self._commit_where(
            request.key,
            request.obj,
            where,
            label,
            overwrite,
            propagated=True,
            keys=keys,
            replace=replace,
            propagation={
                "axis": request.axis,
                "direction": request.direction,
                "stop_iou": request.stop_iou,
                "stop_slices": request.stop_slices,
                "regrowth": request.regrowth,
                "min_contrast": request.min_contrast,
            },
        )

    def _release_committed_predictors(self, keep: int = 2) -> None:
        """Keep predictors and probability maps only in the last ``keep`` commits of the
        history (memory); an undo of an older commit recomputes its preview from its
        clicks (:meth:`request`)."""
        commits = [e for e in self._done if isinstance(e, _Commit)]
        for entry in commits[:-keep] if keep else commits:
            obj = entry.obj
            obj.predictor = None
            obj.redo_dirty = False
            obj.prob, obj.prob_clicks = None, ()
        self._live = [o for o in self._live if o.predictor is not None]

    def commits(self, undone: bool = False) -> list[CommittedObject]:
        """The commits in the undo history, with the clicks that made each (provenance).

        Parameters
        ----------
        undone : bool
            List the undone commits (those :meth:`redo` would bring back, next first)
            instead of the applied ones.

        Returns
        -------
        list of CommittedObject
            Applied commits oldest first (only those still in the bounded history,
            ``max_history``).
        """
        entries = reversed(self._undone) if undone else self._done
        return [
            CommittedObject(
                key=tuple(int(k) for k in e.key),
                label=int(e.label),
                clicks=tuple(e.obj.clicks),
                propagated=bool(e.propagated),
                n_pixels=int(e.where[0].size) if e.where else 0,
                replaced=e.cleared is not None,
                keys=tuple(sorted(e.keys)),
                propagation=dict(e.propagation) if e.propagation is not None else None,
            )
            for e in entries
            if isinstance(e, _Commit)
        ]

    # -- history ----------------------------------------------------------------------------
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
