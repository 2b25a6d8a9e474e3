"""The :class:`Autosave` store: one sidecar on disk, written (labels first, each file
atomically), loaded back, and discarded."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_fbrs.core.atomic import atomic_write
from napari_fbrs.core.autosave.document import _doc_to_state, _read_json, _state_to_doc
from napari_fbrs.core.autosave.labels import (
    _LABELS_NAME,
    _encode_labels,
    _labels_digest,
    _read_labels,
)
from napari_fbrs.core.autosave.paths import sidecar_path
from napari_fbrs.core.autosave.records import AutosaveError, ImageInfo
from napari_fbrs.core.autosave.state import SessionState
from napari_fbrs.core.session import SegmentationSession


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
                    atomic_write(target, lambda f: np.savez_compressed(f, **arrays))
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
            atomic_write(self.path, lambda f: f.write(text.encode("utf-8")))
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
