"""The state a sidecar holds (:class:`SessionState`): snapshotting a session into it,
carrying each object's provenance over from the previous snapshot, and restoring it into a
session after checking that it fits."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from napari_fbrs.core.autosave.fingerprint import image_fingerprint
from napari_fbrs.core.autosave.records import VERSION, AutosaveError, ImageInfo, ObjectRecord
from napari_fbrs.core.session import SegmentationSession, SessionClick, SliceKey


@dataclass
class SessionState:
    """Everything a sidecar holds.

    Attributes
    ----------
    image : ImageInfo
        The image the session was about.
    clicks : dict of SliceKey to tuple of SessionClick
        The unfinished objects' clicks, per slice (slices without clicks are absent).
    pins : dict of SliceKey to int
        The ids pinned to slices' unfinished objects (an object being edited, or carried
        from a neighbouring slice): finishing them replaces that id on the slice.
    objects : list of ObjectRecord
        Committed objects, oldest first (those undone are not listed).
    labels : numpy.ndarray or None
        The labels array (``stack_shape + (H, W)``, integer), or ``None`` when not saved
        or not loaded.
    settings : dict
        Predictor settings at the time of saving (JSON values).
    prob_thresh : float
        The session's threshold.
    contrast_limits : (float, float) or None
        The contrast limits the predictions used.
    saved_at : str
        ISO 8601 UTC time of saving.
    version : int
        Sidecar layout version it was read from (:data:`VERSION` when made here).
    """

    image: ImageInfo
    clicks: dict[SliceKey, tuple[SessionClick, ...]] = field(default_factory=dict)
    pins: dict[SliceKey, int] = field(default_factory=dict)
    objects: list[ObjectRecord] = field(default_factory=list)
    labels: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    prob_thresh: float = 0.49
    contrast_limits: tuple[float, float] | None = None
    saved_at: str = ""
    version: int = VERSION

    # -- making one from a session ------------------------------------------------------------
    @classmethod
    def from_session(
        cls,
        session: SegmentationSession,
        *,
        name: str = "",
        path: str | os.PathLike | None = None,
        settings: Mapping[str, Any] | None = None,
        previous: SessionState | None = None,
        image: ImageInfo | None = None,
        fingerprint: bool = True,
        copy_labels: bool = False,
    ) -> SessionState:
        """Snapshot a session (main thread: nothing may change it meanwhile).

        Parameters
        ----------
        session : SegmentationSession
            The session.
        name, path : str, optional
            Layer name and image file, stored in :attr:`image`.
        settings : mapping, optional
            Predictor settings (e.g. the widget's ``PredictorSettings`` as a dict); values
            that JSON cannot hold are stored as strings.
        previous : SessionState, optional
            The last state written: objects it lists keep their settings and time, and
            objects that left the session's bounded undo history (or that were committed
            before a restore) are kept when their label is still in the labels.
        image : ImageInfo, optional
            Reuse this image description (skips the fingerprint).
        fingerprint : bool
            Compute :func:`image_fingerprint` of the first slice (reads one slice).
        copy_labels : bool
            Copy the labels array, so that the state can be written on another thread
            while the session goes on.

        Returns
        -------
        SessionState
        """
        now = _now()
        settings_json = _jsonable(dict(settings or {}))
        if image is None:
            image = _image_info(session, name, path, fingerprint)
        labels = session.labels.copy() if copy_labels else session.labels
        done, undone = _commit_entries(session)
        old = list(previous.objects) if previous is not None else []
        by_uid: dict[str, list[ObjectRecord]] = {}
        for rec in old:
            by_uid.setdefault(rec.uid, []).append(rec)
        undone_uids = {_record_of(e, None, "").uid for e in undone}
        in_history: list[ObjectRecord] = []
        for entry in done:
            rec = _record_of(entry, settings_json, now)
            earlier = by_uid.get(rec.uid)
            if earlier:  # keep when and with what it was first made
                first = earlier.pop(0)
                rec = replace(rec, settings=first.settings, committed_at=first.committed_at)
            in_history.append(rec)
        # objects no longer in the history: aged out of it, or from before a restore
        leftover = [r for recs in by_uid.values() for r in recs if r.uid not in undone_uids]
        leftover.sort(key=old.index)
        if leftover:
            leftover = _still_present(labels, leftover)
        return cls(
            image=image,
            clicks={k: tuple(v) for k, v in session.all_clicks().items()},
            pins=dict(session.pinned_labels()),
            objects=leftover + in_history,
            labels=labels,
            settings=settings_json,
            prob_thresh=float(session.prob_thresh),
            contrast_limits=_limits(session.contrast_limits),
            saved_at=now,
        )

    # -- restoring ------------------------------------------------------------------------------
    def check_matches(self, session: SegmentationSession, pixels: bool = False) -> None:
        """Raise :class:`AutosaveError` unless this state fits ``session``'s image.

        Parameters
        ----------
        session : SegmentationSession
            The session to restore into.
        pixels : bool
            Also compare the pixel fingerprint (reads one slice of the image).
        """
        shape = _image_shape(session)
        if tuple(self.image.shape) and tuple(self.image.shape) != shape:
            raise AutosaveError(
                f"the autosave of {self.image.name or 'an image'!r} is for an image of shape "
                f"{tuple(self.image.shape)}, this one is {shape}; it was not restored"
            )
        if bool(self.image.rgb) != bool(session.rgb) and tuple(self.image.shape):
            raise AutosaveError(
                f"the autosave is for {'an RGB' if self.image.rgb else 'a grey'} image, this "
                f"one is {'RGB' if session.rgb else 'grey'}; it was not restored"
            )
        if self.labels is not None and self.labels.shape != session.labels_shape:
            raise AutosaveError(
                f"the autosaved labels have shape {self.labels.shape}, the image needs "
                f"{session.labels_shape}; it was not restored"
            )
        if pixels and self.image.fingerprint:
            now = image_fingerprint(session.image_slice(_first_key(session)))
            if now != self.image.fingerprint:
                raise AutosaveError(
                    f"the autosave of {self.image.name or 'an image'!r} was made on other "
                    "pixels (same shape, different content); it was not restored"
                )

    def restore(
        self,
        session: SegmentationSession,
        *,
        labels: bool = True,
        clicks: bool = True,
        pixels: bool = False,
    ) -> np.ndarray:
        """Put the saved labels and unfinished clicks back into ``session``.

        Everything is checked first (:meth:`check_matches`, every slice key and click);
        on any problem :class:`AutosaveError` is raised and the session is unchanged. The
        labels replace the session's labels (a copy) as one undo step
        (:meth:`SegmentationSession.replace_labels`: undo brings back the objects the
        session had, e.g. ones committed before restoring); the clicks replace every
        slice's clicks as another, and the pinned ids come back with them (not an undo
        step, as :meth:`SegmentationSession.set_object_label`). Previews are then computed
        as usual (``session.request``).

        Parameters
        ----------
        session : SegmentationSession
            Where to restore.
        labels, clicks : bool
            What to restore.
        pixels : bool
            Also check the image's pixel fingerprint.

        Returns
        -------
        numpy.ndarray
            ``session.labels`` afterwards: a GUI shows it (the napari widget sets its
            objects layer's data to it).
        """
        self.check_matches(session, pixels=pixels)
        mapping: dict[SliceKey, list[tuple[float, float, bool]]] = {}
        if clicks:
            for key, items in self.clicks.items():
                try:
                    key = session.check_key(key)
                except ValueError as exc:
                    raise AutosaveError(f"autosaved clicks on slice {key}: {exc}") from exc
                for c in items:
                    if not session.click_inside(c.y, c.x):
                        raise AutosaveError(
                            f"the autosaved click ({c.y}, {c.x}) on slice {key} lies outside "
                            f"the image of shape {session.spatial_shape}; nothing was restored"
                        )
                mapping[key] = [(c.y, c.x, c.positive) for c in items]
            pins: dict[SliceKey, int] = {}
            for key, label in self.pins.items():
                try:
                    pins[session.check_key(key)] = int(label)
                except ValueError as exc:
                    raise AutosaveError(f"an autosaved object id on slice {key}: {exc}") from exc
                if pins[key] < 1:
                    raise AutosaveError(
                        f"the autosaved object id {label} on slice {key} is not >= 1"
                    )
        if labels and self.labels is not None:
            new = np.array(self.labels, copy=True)
            try:
                session.replace_labels(new, "restore of the autosaved objects")
            except (TypeError, ValueError) as exc:
                raise AutosaveError(f"the autosaved labels cannot be used: {exc}") from exc
        if labels and self.labels is not None:
            # their clicks, for edit_object (only where each still is as it was made)
            known = [(o, _object_pixels(o)) for o in self.objects if o.clicks]
            known = [(o, n) for o, n in known if n is not None]
            session.remember_objects(
                (o.label, o.key, o.clicks, n) for o, n in known if not o.propagated
            )
            session.remember_propagations(
                (o.label, o.key, o.clicks, n, o.propagation) for o, n in known if o.propagated
            )
        if clicks:
            session.set_all_clicks(mapping)
            for key, label in pins.items():
                session.set_object_label(key, label)
        return session.labels


def _object_pixels(record: ObjectRecord) -> int | None:
    """The pixels a record's object had when made; ``None`` when unknown (a replaced
    object in an older sidecar, whose ``n_pixels`` leaves out the pixels it kept)."""
    if record.object_pixels is not None:
        return record.object_pixels
    return None if record.replaced else record.n_pixels


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _image_shape(session: SegmentationSession) -> tuple[int, ...]:
    image = getattr(session, "image", None)
    if image is None:  # older sessions kept it private
        image = session._image
    return tuple(int(s) for s in image.shape)


def _first_key(session: SegmentationSession) -> SliceKey:
    return tuple(0 for _ in session.stack_shape)


def _image_info(session: SegmentationSession, name: str, path: Any, fingerprint: bool) -> ImageInfo:
    image = getattr(session, "image", None)
    dtype = getattr(image if image is not None else session._image, "dtype", None)
    return ImageInfo(
        name=str(name),
        path=None if path is None else str(path),
        shape=_image_shape(session),
        dtype=str(np.dtype(dtype)) if dtype is not None else "",
        rgb=bool(session.rgb),
        fingerprint=(
            image_fingerprint(session.image_slice(_first_key(session))) if fingerprint else None
        ),
    )


def _limits(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def _commit_entries(session: SegmentationSession) -> tuple[list[Any], list[Any]]:
    """The session's commits with their clicks (:meth:`SegmentationSession.commits`):
    (applied oldest first, undone)."""
    return list(session.commits()), list(session.commits(undone=True))


def _record_of(entry: Any, settings: Mapping[str, Any] | None, now: str) -> ObjectRecord:
    """An :class:`ObjectRecord` of a :class:`~napari_fbrs.core.session.CommittedObject`."""
    return ObjectRecord(
        label=int(entry.label),
        key=tuple(int(k) for k in entry.key),
        clicks=tuple(SessionClick(float(c.y), float(c.x), bool(c.positive)) for c in entry.clicks),
        propagated=bool(entry.propagated),
        n_pixels=int(entry.n_pixels),
        replaced=bool(entry.replaced),
        settings=settings,
        committed_at=now,
        object_pixels=entry.n_object,
        propagation=None if entry.propagation is None else dict(entry.propagation),
    )


def _still_present(labels: np.ndarray, records: list[ObjectRecord]) -> list[ObjectRecord]:
    """The records whose label still occurs on their slice of ``labels`` (slices too large
    to scan cheaply keep their records)."""
    by_key: dict[SliceKey, set[int] | None] = {}
    for rec in records:
        if rec.key not in by_key:
            try:
                plane = labels[rec.key] if rec.key else labels
            except IndexError:
                by_key[rec.key] = set()
                continue
            by_key[rec.key] = (
                None if plane.size > 16_000_000 else {int(v) for v in np.unique(plane)}
            )
    return [r for r in records if by_key[r.key] is None or r.label in by_key[r.key]]


def _jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold turned into strings (non-finite floats
    into ``None``)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"  # e.g. a network object
