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

The package's modules, one job each: ``types`` (the value types), ``channels`` (what
the model sees), ``slices`` (slice keys and navigation), ``objects`` (clicks and object
ids per slice), ``prediction`` (previews), ``labels`` (the labels array), ``commits``,
``propagation`` (through a stack), ``entries`` and ``history`` (undo/redo), and
``segmentation`` (the class, composed of them).
"""

from __future__ import annotations

from napari_fbrs.core.session.labels import promoted_dtype
from napari_fbrs.core.session.segmentation import SegmentationSession
from napari_fbrs.core.session.types import (
    Change,
    CommitInfo,
    CommittedObject,
    PredictionRequest,
    PredictionResult,
    PropagationRequest,
    SessionClick,
    SliceKey,
)

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
