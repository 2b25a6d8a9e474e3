"""The session's value types: slice keys, clicks, requests, results and change reports.

``_Object`` (the current object of one slice) lives here too, because the requests
hold it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

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
    n_object : int or None
        The id's pixels on ``keys`` right after the commit, when the commit made all of
        them (the object there is its mask alone, kept pixels of a replaced object
        included); ``None`` when the id also held other pixels there.
    """

    key: SliceKey
    label: int
    clicks: tuple[SessionClick, ...]
    propagated: bool = False
    n_pixels: int = 0
    replaced: bool = False
    keys: tuple[SliceKey, ...] = ()
    propagation: Mapping[str, Any] | None = None
    n_object: int | None = None


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
