"""Sidecar autosave of a segmentation session, so that a crash never loses work.

What is saved, after every change the caller chooses (each commit, undo, redo, and a few
seconds after the last click):

* the clicks of every slice's unfinished object;
* every committed object with the clicks that made it (its *provenance*: slice, label id,
  clicks, whether it was propagated, the predictor settings in effect), so that it can be
  replayed (:func:`replay`) or audited;
* the labels array itself (a compressed ``.npz`` beside the JSON, written only when the
  labels changed);
* what the session was about: the image's name, path, shape, dtype and a fingerprint of
  its pixels, the settings, the threshold and the contrast limits.

Files
-----
``<base>.json`` is the sidecar (plain JSON, never pickle); ``<base>.<digest>.labels.npz``
holds the labels, named after the BLAKE2b digest of their bytes, which the JSON records.
Both are written atomically (a temporary file in the same folder, ``fsync``, then
``os.replace``), the ``.npz`` first: whenever the process dies, the JSON on disk is the
previous or the new one, complete, and the ``.npz`` it names exists and matches its digest.

Where: :func:`sidecar_path` puts ``<image file>.fbrs-autosave.json`` beside an image that
was opened from a file (when that folder is writable), and otherwise, e.g. for a layer
that only lives in napari, ``<cache>/autosave/<layer name>-<hash>.fbrs-autosave.json`` in
:func:`autosave_dir` (``napari_fbrs.core.zoo.cache_dir() / "autosave"``, which
``NAPARI_FBRS_CACHE`` moves).

Use from a GUI (the napari widget) or a script::

    from napari_fbrs.core.autosave import Autosave

    saver = Autosave.for_image(layer.source.path or layer.name)
    if saver.exists():                       # a previous session crashed
        state = saver.load()                 # AutosaveError if unusable, with why
        state.restore(session)               # clicks and labels back into the session
        labels_layer.data = session.labels   # the widget shows them
    ...
    saver.write_session(session, name=layer.name, path=path, settings=settings_dict)
    ...
    saver.discard()                          # once the user saved their labels

Loading never runs code from the files (``json`` and ``numpy.load(allow_pickle=False)``),
refuses labels files outside the sidecar's folder, and checks every value before anything
in the session changes. Nothing here imports napari, Qt or torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from napari_fbrs.core.session import SegmentationSession, SessionClick, SliceKey

__all__ = [
    "FORMAT",
    "SUFFIX",
    "VERSION",
    "Autosave",
    "AutosaveError",
    "ImageInfo",
    "ObjectRecord",
    "SessionState",
    "autosave_dir",
    "image_fingerprint",
    "list_autosaves",
    "replay",
    "sidecar_path",
]

#: ``"format"`` entry of every sidecar.
FORMAT = "napari-fbrs-autosave"
#: Version of the sidecar layout this module writes; it reads this one and older.
VERSION = 1
#: File-name suffix of the sidecars.
SUFFIX = ".fbrs-autosave.json"
#: Sidecars larger than this are refused unread (a sidecar is a few kB per 100 clicks).
MAX_JSON_BYTES = 64 * 1024 * 1024
# labels with at most this fraction of non-zero pixels are stored as (index, value) pairs
_SPARSE_FRACTION = 1 / 8
_LABELS_NAME = re.compile(r"^[^/\\]+\.[0-9a-f]{32}\.labels\.npz$")


class AutosaveError(ValueError):
    """A sidecar cannot be used: unreadable, corrupt, from a newer version, or made for
    another image. Nothing in the session was changed; the message says why and what to do."""


# ------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ImageInfo:
    """What the session segmented, to recognise the image when restoring.

    Attributes
    ----------
    name : str
        Layer (or file) name, for people.
    path : str or None
        File the image was opened from, if any.
    shape : tuple of int
        The image's full shape (``(..., H, W)`` or ``(..., H, W, C)``).
    dtype : str
        Its numpy dtype, e.g. ``"uint16"``.
    rgb : bool
        Whether the last axis holds colour channels.
    fingerprint : str or None
        :func:`image_fingerprint` of the pixels (``None``: not computed).
    """

    name: str = ""
    path: str | None = None
    shape: tuple[int, ...] = ()
    dtype: str = ""
    rgb: bool = False
    fingerprint: str | None = None


@dataclass(frozen=True)
class ObjectRecord:
    """One committed object and how it was made (provenance).

    Attributes
    ----------
    label : int
        The id written into the labels.
    key : SliceKey
        The slice it was segmented on (``()`` for a 2D image).
    clicks : tuple of SessionClick
        The clicks that made it, oldest first, in image pixels.
    propagated : bool
        Carried through the stack from ``key`` (:meth:`SegmentationSession.
        commit_propagation`) rather than committed on one slice.
    n_pixels : int
        Pixels written by the commit.
    replaced : bool
        The commit first cleared the label's earlier pixels on the slices it wrote (a
        correction of an existing object, ``SegmentationSession.commit(replace=True)``).
    settings : dict or None
        The predictor settings in effect when it was first autosaved (JSON values).
    committed_at : str
        ISO 8601 UTC time when it was first autosaved.
    """

    label: int
    key: SliceKey
    clicks: tuple[SessionClick, ...]
    propagated: bool = False
    n_pixels: int = 0
    replaced: bool = False
    settings: Mapping[str, Any] | None = None
    committed_at: str = ""

    @property
    def uid(self) -> str:
        """A stable id of what was done: label, slice, clicks and propagation."""
        text = json.dumps(
            [self.label, list(self.key), [list(c) for c in self.clicks], self.propagated]
        )
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass
class SessionState:
    """Everything a sidecar holds.

    Attributes
    ----------
    image : ImageInfo
        The image the session was about.
    clicks : dict of SliceKey to tuple of SessionClick
        The unfinished objects' clicks, per slice (slices without clicks are absent).
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
        slice's clicks as another. Previews are then computed as usual (``session.request``).

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
        if labels and self.labels is not None:
            new = np.array(self.labels, copy=True)
            try:
                session.replace_labels(new, "restore of the autosaved objects")
            except (TypeError, ValueError) as exc:
                raise AutosaveError(f"the autosaved labels cannot be used: {exc}") from exc
        if clicks:
            session.set_all_clicks(mapping)
        return session.labels


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


# ------------------------------------------------------------------------------- helpers
def image_fingerprint(image: Any, max_samples: int = 65536) -> str:
    """A short digest of an image's shape, dtype and a regular subsample of its pixels.

    Parameters
    ----------
    image : array-like
        Any array (numpy, dask, zarr); at most about ``max_samples`` elements are read,
        on a regular grid over every axis.
    max_samples : int
        Budget of elements read.

    Returns
    -------
    str
        32 hexadecimal digits (BLAKE2b); equal images give equal fingerprints.
    """
    shape = tuple(int(s) for s in image.shape)
    per_axis = max(1, int(max_samples ** (1.0 / max(len(shape), 1))))
    index = tuple(slice(None, None, max(1, math.ceil(s / per_axis))) for s in shape)
    sample = np.ascontiguousarray(np.asarray(image[index] if shape else image))
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((shape, str(sample.dtype))).encode())
    h.update(sample.tobytes())
    return h.hexdigest()


def autosave_dir() -> Path:
    """The folder for sidecars of images that have no writable folder of their own:
    ``napari_fbrs.core.zoo.cache_dir() / "autosave"`` (``NAPARI_FBRS_CACHE`` moves it)."""
    from napari_fbrs.core.zoo import cache_dir

    return cache_dir() / "autosave"


def _safe_stem(text: str, limit: int = 60) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return stem[:limit] or "image"


def _writable_dir(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def sidecar_path(image: str | os.PathLike, directory: str | os.PathLike | None = None) -> Path:
    """Where the autosave of an image lives.

    Parameters
    ----------
    image : pathlib.Path or str
        The file the image was opened from, as a :class:`pathlib.Path` (or an absolute
        path string), or, for an image that only exists in napari, the layer's name as a
        ``str`` (any text: it is sanitised; a relative string is always a name, so a
        layer called ``"../x"`` never lands outside ``directory``).
    directory : str or path, optional
        The fallback folder (default :func:`autosave_dir`).

    Returns
    -------
    pathlib.Path
        ``<file>.fbrs-autosave.json`` beside an existing image file whose folder is
        writable; otherwise ``<directory>/<safe name>-<hash>.fbrs-autosave.json``, the hash
        taken over the full path or name, so that different images never share a sidecar
        and no name can point outside ``directory``.
    """
    is_path = not isinstance(image, str) or os.path.isabs(image)
    text = os.fsdecode(os.fspath(image))
    fallback = Path(directory) if directory is not None else None
    candidate: Path | None = None
    if is_path:
        with contextlib.suppress(OSError, ValueError):
            p = Path(text).expanduser()
            if p.is_file():
                candidate = p.resolve()
    if candidate is not None and _writable_dir(candidate.parent):
        return candidate.with_name(candidate.name + SUFFIX)
    ident = str(candidate) if candidate is not None else text
    digest = hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    name = (candidate.name if candidate is not None else text) or "image"
    folder = fallback if fallback is not None else autosave_dir()
    return folder / f"{_safe_stem(name)}-{digest}{SUFFIX}"


def list_autosaves(directory: str | os.PathLike | None = None) -> list[tuple[Path, str, str]]:
    """Sidecars in ``directory`` (default :func:`autosave_dir`), newest first.

    Returns
    -------
    list of (path, image name, saved_at)
        Unreadable sidecars are listed with an empty name and time.
    """
    folder = Path(directory) if directory is not None else autosave_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob(f"*{SUFFIX}"):
        try:
            doc = _read_json(path)
            out.append((path, str(doc["image"]["name"]), str(doc["saved_at"])))
        except (AutosaveError, KeyError, TypeError):
            out.append((path, "", ""))
    out.sort(key=lambda t: (t[2], t[0].stat().st_mtime if t[0].exists() else 0), reverse=True)
    return out


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


# ------------------------------------------------------------------------------- writing
def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` through a temporary file in its folder, ``fsync`` and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # the rename itself, where supported
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _labels_digest(labels: np.ndarray) -> str:
    data = np.ascontiguousarray(labels)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((data.shape, data.dtype.str)).encode())
    h.update(memoryview(data).cast("B") if data.size else b"")
    return h.hexdigest()


def _encode_labels(labels: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    nonzero = int(np.count_nonzero(labels))
    if labels.size and nonzero <= labels.size * _SPARSE_FRACTION:
        flat = labels.reshape(-1)
        index = np.flatnonzero(flat)
        return "sparse", {"index": index.astype(np.int64), "values": flat[index]}
    return "dense", {"labels": np.ascontiguousarray(labels)}


class Autosave:
    """One sidecar: write the session's state, load it back, discard it.

    Parameters
    ----------
    path : str or path
        The sidecar's JSON file (see :func:`sidecar_path`); the labels go beside it.

    Notes
    -----
    :meth:`write` is safe to call often: the JSON is small, and the labels ``.npz`` is
    rewritten only when the labels' digest changed. Writes by several threads are
    serialised; a crash at any moment leaves the previous or the new sidecar, complete.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        #: the last state written or loaded (its objects' provenance carries over)
        self.last_state: SessionState | None = None
        self._labels_file: str | None = None
        self._labels_digest: str | None = None
        self._encoding: str | None = None
        self._image: tuple[int, ImageInfo] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_image(
        cls, image: str | os.PathLike, directory: str | os.PathLike | None = None
    ) -> Autosave:
        """The sidecar of an image file or layer name (:func:`sidecar_path`)."""
        return cls(sidecar_path(image, directory))

    def exists(self) -> bool:
        """Whether a sidecar is on disk (e.g. left by a session that crashed)."""
        return self.path.is_file()

    @property
    def _base(self) -> str:
        name = self.path.name
        return name[: -len(".json")] if name.endswith(".json") else name

    def _labels_path(self, digest: str) -> Path:
        return self.path.with_name(f"{self._base}.{digest}.labels.npz")

    def write(self, state: SessionState, labels_changed: bool | None = None) -> Path:
        """Write ``state`` atomically; returns the JSON's path.

        Parameters
        ----------
        state : SessionState
            What to write.
        labels_changed : bool, optional
            ``False`` promises that ``state.labels`` holds what the last write wrote, which
            skips hashing them (large arrays); by default their digest decides.

        Raises
        ------
        OSError
            The folder cannot be written (disk full, permissions); the previous sidecar
            is left as it was.
        """
        with self._lock:
            labels_doc = None
            if state.labels is not None:
                labels = state.labels
                reuse = labels_changed is False and self._labels_digest is not None
                digest = self._labels_digest if reuse else _labels_digest(labels)
                target = self._labels_path(digest)
                if digest != self._labels_digest or not target.is_file():
                    encoding, arrays = _encode_labels(labels)
                    _atomic_write(target, lambda f: np.savez_compressed(f, **arrays))
                else:
                    encoding = self._encoding
                labels_doc = {
                    "file": target.name,
                    "digest": digest,
                    "shape": list(labels.shape),
                    "dtype": labels.dtype.str,
                    "encoding": encoding,
                }
                self._labels_digest, self._labels_file = digest, target.name
                self._encoding = encoding
            doc = _state_to_doc(state, labels_doc)
            text = json.dumps(doc, indent=1, allow_nan=False)
            _atomic_write(self.path, lambda f: f.write(text.encode("utf-8")))
            self.last_state = state
            self._remove_stale_labels(keep=labels_doc["file"] if labels_doc else None)
            return self.path

    def write_session(
        self,
        session: SegmentationSession,
        *,
        name: str = "",
        path: str | os.PathLike | None = None,
        settings: Mapping[str, Any] | None = None,
        labels_changed: bool | None = None,
    ) -> SessionState:
        """Snapshot ``session`` (:meth:`SessionState.from_session`, provenance carried over
        from the last state) and :meth:`write` it; returns the state written.

        Call it on the thread that owns the session (the GUI thread). ``name``, ``path``
        and ``settings`` as in :meth:`SessionState.from_session`, ``labels_changed`` as in
        :meth:`write`.
        """
        cached = self._image
        image = cached[1] if cached is not None and cached[0] == id(session) else None
        state = SessionState.from_session(
            session,
            name=name,
            path=path,
            settings=settings,
            previous=self.last_state,
            image=image,
        )
        self._image = (id(session), state.image)
        self.write(state, labels_changed=labels_changed)
        return state

    def load(self, labels: bool = True) -> SessionState:
        """Read this sidecar (see :meth:`read`)."""
        state = self.read(self.path, labels=labels)
        self.last_state = state
        return state

    @staticmethod
    def read(path: str | os.PathLike, labels: bool = True) -> SessionState:
        """Read a sidecar.

        Parameters
        ----------
        path : str or path
            The JSON file.
        labels : bool
            Also read the labels ``.npz`` (checked against the digest the JSON records).

        Returns
        -------
        SessionState

        Raises
        ------
        AutosaveError
            Missing, truncated or corrupt files, a newer layout, values of the wrong type,
            a labels file that does not match its digest or lies elsewhere. Nothing is
            executed from the files.
        """
        path = Path(path)
        doc = _read_json(path)
        try:
            state, labels_doc = _doc_to_state(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise AutosaveError(
                f"the autosave {path} is damaged ({type(exc).__name__}: {exc}); it was not "
                "used. Move it away to start afresh."
            ) from exc
        if labels and labels_doc is not None:
            state.labels = _read_labels(path, labels_doc)
        return state

    def discard(self) -> None:
        """Remove the sidecar and its labels files (the work is saved elsewhere)."""
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._remove_stale_labels(keep=None)
            self._labels_digest = self._labels_file = None
            self.last_state = None

    def _remove_stale_labels(self, keep: str | None) -> None:
        for p in self.path.parent.glob(f"{_glob_escape(self._base)}.*.labels.npz"):
            if p.name != keep and _LABELS_NAME.match(p.name):
                with contextlib.suppress(OSError):
                    p.unlink()


def _glob_escape(text: str) -> str:
    """``text`` with the glob metacharacters ``*?[`` escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _state_to_doc(state: SessionState, labels_doc: dict[str, Any] | None) -> dict[str, Any]:
    from napari_fbrs._version import __version__

    img = state.image
    return {
        "format": FORMAT,
        "version": VERSION,
        "napari_fbrs": __version__,
        "saved_at": state.saved_at or _now(),
        "image": {
            "name": img.name,
            "path": img.path,
            "shape": [int(s) for s in img.shape],
            "dtype": img.dtype,
            "rgb": bool(img.rgb),
            "fingerprint": img.fingerprint,
        },
        "settings": _jsonable(state.settings),
        "prob_thresh": float(state.prob_thresh),
        "contrast_limits": _limits(state.contrast_limits),
        "clicks": [
            {"key": [int(k) for k in key], "clicks": [_click_doc(c) for c in clicks]}
            for key, clicks in sorted(state.clicks.items())
            if clicks
        ],
        "objects": [
            {
                "label": int(o.label),
                "key": [int(k) for k in o.key],
                "clicks": [_click_doc(c) for c in o.clicks],
                "propagated": bool(o.propagated),
                "n_pixels": int(o.n_pixels),
                "replaced": bool(o.replaced),
                "settings": _jsonable(o.settings) if o.settings is not None else None,
                "committed_at": o.committed_at,
            }
            for o in state.objects
        ],
        "labels": labels_doc,
    }


def _click_doc(c: Sequence[Any]) -> list[Any]:
    y, x = float(c[0]), float(c[1])
    if not (math.isfinite(y) and math.isfinite(x)):
        raise ValueError(f"click ({y}, {x}) is not finite")
    return [y, x, bool(c[2])]


# ------------------------------------------------------------------------------- reading
def _read_json(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise AutosaveError(f"there is no autosave at {path}") from exc
    except OSError as exc:
        raise AutosaveError(f"the autosave {path} cannot be read: {exc}") from exc
    if size > MAX_JSON_BYTES:
        raise AutosaveError(
            f"the autosave {path} is {size / 2**20:.0f} MiB, far larger than any autosave; "
            "it was not read"
        )
    try:
        text = path.read_bytes().decode("utf-8")
        doc = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AutosaveError(
            f"the autosave {path} is truncated or corrupt ({type(exc).__name__}: {exc}); it "
            "was not used. Move it away to start afresh."
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AutosaveError(f"{path} is not a napari-fbrs autosave")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise AutosaveError(f"the autosave {path} has no valid version number")
    if version > VERSION:
        raise AutosaveError(
            f"the autosave {path} was written by a newer napari-fbrs (layout {version}, this "
            f"one reads up to {VERSION}); update napari-fbrs to restore it"
        )
    return doc


def _int(value: Any, what: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def _key(value: Any, what: str) -> SliceKey:
    if not isinstance(value, list):
        raise TypeError(f"{what} must be a list of integers, got {value!r}")
    return tuple(_int(v, what, 0) for v in value)


def _click(value: Any, what: str) -> SessionClick:
    if not (isinstance(value, list) and len(value) == 3):
        raise TypeError(f"{what} must be [y, x, positive], got {value!r}")
    y, x, positive = value
    for v in (y, x):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{what} must have finite coordinates, got {value!r}")
    if not isinstance(positive, bool):
        raise TypeError(f"{what}: positive must be true or false, got {positive!r}")
    return SessionClick(float(y), float(x), positive)


def _doc_to_state(doc: Mapping[str, Any]) -> tuple[SessionState, dict[str, Any] | None]:
    img = doc["image"]
    if not isinstance(img, dict):
        raise TypeError("image must be an object")
    path = img.get("path")
    fingerprint = img.get("fingerprint")
    image = ImageInfo(
        name=str(img.get("name", "")),
        path=None if path is None else str(path),
        shape=tuple(_int(s, "image.shape", 0) for s in img.get("shape", [])),
        dtype=str(img.get("dtype", "")),
        rgb=bool(img.get("rgb", False)),
        fingerprint=None if fingerprint is None else str(fingerprint),
    )
    clicks: dict[SliceKey, tuple[SessionClick, ...]] = {}
    for i, item in enumerate(doc.get("clicks", [])):
        key = _key(item["key"], f"clicks[{i}].key")
        clicks[key] = tuple(
            _click(c, f"clicks[{i}].clicks[{j}]") for j, c in enumerate(item["clicks"])
        )
    objects = []
    for i, item in enumerate(doc.get("objects", [])):
        settings = item.get("settings")
        if settings is not None and not isinstance(settings, dict):
            raise TypeError(f"objects[{i}].settings must be an object")
        objects.append(
            ObjectRecord(
                label=_int(item["label"], f"objects[{i}].label", 1),
                key=_key(item["key"], f"objects[{i}].key"),
                clicks=tuple(
                    _click(c, f"objects[{i}].clicks[{j}]") for j, c in enumerate(item["clicks"])
                ),
                propagated=bool(item.get("propagated", False)),
                n_pixels=_int(item.get("n_pixels", 0), f"objects[{i}].n_pixels", 0),
                replaced=bool(item.get("replaced", False)),
                settings=settings,
                committed_at=str(item.get("committed_at", "")),
            )
        )
    settings = doc.get("settings") or {}
    if not isinstance(settings, dict):
        raise TypeError("settings must be an object")
    thresh = float(doc.get("prob_thresh", 0.49))
    if not 0.0 < thresh < 1.0:
        raise ValueError(f"prob_thresh must lie in (0, 1), got {thresh}")
    limits = doc.get("contrast_limits")
    state = SessionState(
        image=image,
        clicks=clicks,
        objects=objects,
        labels=None,
        settings=settings,
        prob_thresh=thresh,
        contrast_limits=_limits(limits) if limits is not None else None,
        saved_at=str(doc.get("saved_at", "")),
        version=int(doc["version"]),
    )
    labels_doc = doc.get("labels")
    if labels_doc is not None and not isinstance(labels_doc, dict):
        raise TypeError("labels must be an object or null")
    return state, labels_doc


def _read_labels(path: Path, meta: Mapping[str, Any]) -> np.ndarray:
    def bad(why: str) -> AutosaveError:
        return AutosaveError(
            f"the labels of the autosave {path} cannot be used: {why}. The clicks and the "
            "list of objects can still be read with labels=False."
        )

    name = meta.get("file")
    if not isinstance(name, str) or not _LABELS_NAME.match(name) or Path(name).name != name:
        raise bad(f"the labels file name {name!r} is not one this module writes")
    try:
        shape = tuple(_int(s, "labels.shape", 0) for s in meta["shape"])
        dtype = np.dtype(str(meta["dtype"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"invalid shape or dtype ({exc})") from exc
    if dtype.kind not in "iub":
        raise bad(f"the dtype {dtype} is not an integer dtype")
    file = path.with_name(name)
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError as exc:
        raise bad(f"{file.name} is missing") from exc
    except Exception as exc:  # zipfile/zlib/numpy format errors: a damaged file
        raise bad(f"{file.name} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    encoding = meta.get("encoding")
    try:
        if encoding == "dense":
            labels = arrays["labels"]
        elif encoding == "sparse":
            index, values = arrays["index"], arrays["values"]
            n = math.prod(shape)
            if index.ndim != 1 or values.shape != index.shape or index.dtype.kind not in "iu":
                raise ValueError("index and values do not match")
            if index.size and (int(index.min()) < 0 or int(index.max()) >= n):
                raise ValueError("an index lies outside the array")
            labels = np.zeros(n, dtype=dtype)
            labels[index] = values.astype(dtype, copy=False)
            labels = labels.reshape(shape)
        else:
            raise ValueError(f"unknown encoding {encoding!r}")
    except (KeyError, ValueError) as exc:
        raise bad(f"{file.name} does not hold what the autosave says ({exc})") from exc
    if labels.shape != shape or labels.dtype != dtype:
        raise bad(
            f"{file.name} holds {labels.dtype} {labels.shape}, the autosave says {dtype} {shape}"
        )
    if _labels_digest(labels) != meta.get("digest"):
        raise bad(f"{file.name} does not match its recorded digest (damaged or replaced)")
    return labels


# ------------------------------------------------------------------------------- replay
def replay(
    objects: SessionState | Iterable[ObjectRecord],
    session: SegmentationSession,
    *,
    overwrite: bool = False,
    stop_iou: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """Make committed objects again from their clicks (provenance replay).

    Each object's clicks are set on its slice, predicted with ``session``'s predictor
    factory, and committed with the recorded label id (propagated objects are propagated
    again along the default slice axis; corrections replace the label's earlier pixels
    again). With the same model and settings, the labels come out as they were.

    Parameters
    ----------
    objects : SessionState or iterable of ObjectRecord
        What to replay, oldest first.
    session : SegmentationSession
        Where; its labels receive the objects (each commit is an undo step).
    overwrite : bool
        As in :meth:`SegmentationSession.commit`.
    stop_iou : float
        As in :meth:`SegmentationSession.compute_propagation`.
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
            request = session.propagation_request(key)
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
