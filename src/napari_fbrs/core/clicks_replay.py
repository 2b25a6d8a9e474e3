"""Making the objects of a clicks file again in a session: checking that they fit the image,
choosing their ids, and segmenting (and propagating) each one.

``napari-fbrs segment --clicks`` runs it on a session of its own and writes the labels; the
panel's *Load objects...* runs it on a worker, on a blank copy of its session
(:meth:`SegmentationSession.blank_copy
<napari_fbrs.core.session.SegmentationSession.blank_copy>`), then adopts the objects
(:meth:`SegmentationSession.commit_object
<napari_fbrs.core.session.SegmentationSession.commit_object>`). The file format is in
:mod:`napari_fbrs.core.clicks_file`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_fbrs.core.clicks_file import ClicksFileError, ObjectClicks

__all__ = [
    "ObjectOutcome",
    "check_objects",
    "object_ids",
    "propagation_options",
    "replay_objects",
]


def _propagates(obj: ObjectClicks, propagate_all: bool) -> bool:
    return bool(propagate_all or obj.propagate)


def check_objects(
    objects: Sequence[ObjectClicks],
    stack_shape: tuple[int, ...],
    source: str,
    propagate_all: bool = False,
) -> None:
    """Check that the objects' clicks fit an image with ``stack_shape`` leading axes.

    Parameters
    ----------
    objects : sequence of ObjectClicks
        From :func:`~napari_fbrs.core.clicks_file.read_clicks_file`.
    stack_shape : tuple of int
        The image's leading (slice) axes; ``()`` for a 2D image.
    source : str
        The file, as the messages name it.
    propagate_all : bool
        Every object propagates (``--propagate``), not only those whose ``propagate`` cell
        says so.

    Raises
    ------
    ClicksFileError
        Slice columns that do not match the image's axes (none for a 2D image, one per
        leading axis for a stack), a slice index past the end of its axis, a propagating
        object on a 2D image, clicked on several slices, or with a ``propagate_axis`` that
        is not a slice axis. Clicks outside the image plane are the session's to refuse.
    """
    depths = {len(c[0]) for obj in objects for c in obj.clicks}
    if not stack_shape:
        if depths != {0}:
            raise ClicksFileError(f"the image is 2D: {source} must have no slice (z) column")
        if any(_propagates(obj, propagate_all) for obj in objects):
            raise ClicksFileError(f"the propagate column of {source} needs a stack (Z, H, W)")
        return
    if depths != {len(stack_shape)}:
        if len(stack_shape) == 1:
            wanted = "a z column"
        else:
            wanted = "columns " + ", ".join(f"axis-{i}" for i in range(len(stack_shape)))
        slices = " x ".join(str(n) for n in stack_shape)
        raise ClicksFileError(
            f"the image is a stack of {slices} slices: give the slice of each click in "
            f"{wanted} of {source}"
        )
    for obj in objects:
        for where, y, x, _ in obj.clicks:
            if any(i >= n for i, n in zip(where, stack_shape, strict=True)):
                at = ", ".join(str(i) for i in where)
                ranges = ", ".join(f"0..{n - 1}" for n in stack_shape)
                raise ClicksFileError(
                    f"object {obj.name}: click ({at}, {y:g}, {x:g}) is on slice {at}; the "
                    f"stack has slices {ranges}"
                )
        if not _propagates(obj, propagate_all):
            continue
        if len({c[0] for c in obj.clicks}) > 1:
            raise ClicksFileError(
                f"object {obj.name} has clicks on several slices; an object that propagates "
                "is clicked on one slice"
            )
        axis = obj.settings.axis
        if axis is not None and axis >= len(stack_shape):
            raise ClicksFileError(
                f"object {obj.name}: propagate_axis {axis} is not a slice axis; the stack has "
                f"{len(stack_shape)} (0..{len(stack_shape) - 1})"
            )


def object_ids(objects: Sequence[ObjectClicks]) -> list[int]:
    """The objects' label ids: their ``object`` values when these are all distinct
    positive integers, else 1, 2, ... in file order."""
    try:
        ids = [int(obj.name) for obj in objects]
    except ValueError:
        return list(range(1, len(objects) + 1))
    named = zip(ids, objects, strict=True)
    if len(set(ids)) == len(ids) and all(i > 0 and str(i) == o.name.strip() for i, o in named):
        return ids
    return list(range(1, len(objects) + 1))


def propagation_options(
    obj: ObjectClicks,
    *,
    stop_iou: float | None = None,
    regrowth: float | None = None,
    min_contrast: float | None = None,
) -> dict[str, Any]:
    """The keyword arguments of :meth:`SegmentationSession.propagation_request
    <napari_fbrs.core.session.SegmentationSession.propagation_request>` for ``obj``.

    Each stop rule given here applies over the file's setting; a setting neither gives
    takes the panel's default (both ways, stop IoU 0.5, no other rule, the last slice
    axis).
    """
    given = obj.settings
    return {
        "axis": given.axis,  # None: the last slice axis, as in the panel
        "direction": 0 if given.direction is None else given.direction,
        "stop_iou": next(v for v in (stop_iou, given.stop_iou, 0.5) if v is not None),
        "stop_slices": given.stop_slices or (),
        "regrowth": regrowth if regrowth is not None else given.regrowth,
        "min_contrast": min_contrast if min_contrast is not None else given.min_contrast,
    }


@dataclass(frozen=True)
class ObjectOutcome:
    """What :func:`replay_objects` made of one object.

    Attributes
    ----------
    name : str
        The object's name in the file.
    label : int
        The id it was written with.
    n_clicks : int
        Its clicks.
    n_pixels : int
        Pixels written (0: nothing; ``notes`` say why).
    n_slices : int
        Slices a propagation reached (0 when it did not propagate).
    seconds : float
        Time spent on it.
    notes : tuple of str
        Slices where it was not written, and why (an empty mask, a mask entirely on
        earlier objects).
    """

    name: str
    label: int
    n_clicks: int
    n_pixels: int
    n_slices: int
    seconds: float
    notes: tuple[str, ...] = ()


def replay_objects(
    session: Any,
    objects: Sequence[ObjectClicks],
    ids: Sequence[int] | None = None,
    *,
    propagate_all: bool = False,
    options: Callable[[ObjectClicks], dict[str, Any]] = propagation_options,
    progress: Callable[[ObjectOutcome, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[ObjectOutcome]:
    """Segment each object of a clicks file in ``session`` and commit it with its id.

    Objects are made in file order, each written only over background: where objects
    overlap, the earlier one keeps its pixels (as in the panel). An object clicked on
    several slices is committed on each of them with the same id; one that propagates
    (``propagate_all``, or its ``propagate`` cell) is carried through the stack from its
    slice and committed as one propagation.

    Parameters
    ----------
    session : SegmentationSession
        Where; it needs its ``predictor_factory``. Its objects' clicks are replaced on the
        slices the file clicks on.
    objects : sequence of ObjectClicks
        Checked with :func:`check_objects` against ``session.stack_shape``.
    ids : sequence of int, optional
        One label id per object; default :func:`object_ids`.
    propagate_all : bool
        Propagate every object (``--propagate``).
    options : callable
        ``options(obj) -> dict``: the keyword arguments of ``propagation_request`` for a
        propagating object; default :func:`propagation_options` (the file's settings).
    progress : callable, optional
        ``progress(outcome, total)`` after each object.
    cancel : callable, optional
        ``cancel() -> bool``, asked before each object and during propagations; when it
        answers true the objects made so far are returned.

    Returns
    -------
    list of ObjectOutcome
        One per object made, in file order.

    Raises
    ------
    ValueError
        A click outside the image plane, naming the object (the objects before it stay
        committed).
    """
    ids = object_ids(objects) if ids is None else list(ids)
    if len(ids) != len(objects):
        raise ValueError(f"{len(ids)} ids for {len(objects)} objects")
    outcomes: list[ObjectOutcome] = []
    for label, obj in zip(ids, objects, strict=True):
        if cancel is not None and cancel():
            break
        start = time.perf_counter()
        by_slice: dict[tuple[int, ...], list[tuple[float, float, bool]]] = {}
        for where, y, x, positive in obj.clicks:
            by_slice.setdefault(where, []).append((y, x, positive))
        pixels, reached, notes = 0, 0, []
        propagates = _propagates(obj, propagate_all)
        for key, clicks in by_slice.items():
            try:
                session.set_clicks(key, clicks)
            except ValueError as exc:  # a click off the image plane
                raise ValueError(f"object {obj.name}: {exc}") from None
            session.predict(key)
            try:
                if propagates:
                    request = session.propagation_request(key, **options(obj))
                    volume = session.compute_propagation(request, cancel=cancel)
                    if volume is None:  # cancelled
                        session.reset_clicks(key)
                        return outcomes
                    reached = int(np.count_nonzero(volume.any(axis=(1, 2))))
                    info = session.commit_propagation(request, volume, label=label)
                else:
                    info = session.commit(key, label=label)
            except ValueError as exc:  # an empty mask, or one entirely on earlier objects
                session.reset_clicks(key)
                where = f" on slice {', '.join(str(i) for i in key)}" if key else ""
                notes.append(f"not written{where}: {exc}")
                continue
            pixels += info.n_pixels
        outcome = ObjectOutcome(
            name=obj.name,
            label=int(label),
            n_clicks=len(obj.clicks),
            n_pixels=pixels,
            n_slices=reached if propagates and pixels else 0,
            seconds=time.perf_counter() - start,
            notes=tuple(notes),
        )
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome, len(objects))
    return outcomes
