"""Provenance replay: committed objects made again from the clicks a sidecar recorded."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from napari_fbrs.core.autosave.records import ObjectRecord
from napari_fbrs.core.autosave.state import SessionState
from napari_fbrs.core.session import SegmentationSession


def replay(
    objects: SessionState | Iterable[ObjectRecord],
    session: SegmentationSession,
    *,
    overwrite: bool = False,
    stop_iou: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """Make committed objects again from their clicks (provenance replay).

    Each object's clicks are set on its slice, predicted with ``session``'s predictor
    factory, and committed with the recorded label id (propagated objects are propagated
    again with their recorded settings, axis, direction, stop rules and stop slices, or,
    in sidecars that lack them, along the default slice axis both ways; corrections
    replace the label's earlier pixels again). With the same model and settings, the
    labels come out as they were.

    Parameters
    ----------
    objects : SessionState or iterable of ObjectRecord
        What to replay, oldest first.
    session : SegmentationSession
        Where; its labels receive the objects (each commit is an undo step).
    overwrite : bool
        As in :meth:`SegmentationSession.commit`.
    stop_iou : float, optional
        Stop IoU of every propagation (:meth:`SegmentationSession.compute_propagation`);
        default each record's, else 0.5.
    progress : callable, optional
        ``progress(done, total)`` after each object.

    Returns
    -------
    list of CommitInfo
        One per object.

    Raises
    ------
    ValueError
        An object's clicks do not fit the image or give an empty mask (the objects
        before it stay committed).
    """
    records = list(objects.objects if isinstance(objects, SessionState) else objects)
    can_replace = "replace" in inspect.signature(session.commit).parameters
    infos = []
    for i, rec in enumerate(records):
        key = session.check_key(rec.key)
        session.set_clicks(key, [(c.y, c.x, c.positive) for c in rec.clicks])
        session.predict(key)
        extra = {"replace": rec.replaced} if can_replace else {}
        if rec.propagated:
            request = session.propagation_request(key, **_propagation_options(rec))
            volume = session.compute_propagation(request, stop_iou=stop_iou)
            if volume is None:
                raise ValueError(f"the propagation of label {rec.label} was cancelled")
            infos.append(
                session.commit_propagation(
                    request, volume, label=rec.label, overwrite=overwrite, **extra
                )
            )
        else:
            infos.append(session.commit(key, label=rec.label, overwrite=overwrite, **extra))
        if progress is not None:
            progress(i + 1, len(records))
    return infos


def _propagation_options(record: ObjectRecord) -> dict[str, Any]:
    """``propagation_request`` keywords of a record's settings (none when not recorded)."""
    how = record.propagation
    if how is None:
        return {}
    names = ("axis", "direction", "stop_iou", "stop_slices", "regrowth", "min_contrast")
    return {name: how[name] for name in names if name in how}
