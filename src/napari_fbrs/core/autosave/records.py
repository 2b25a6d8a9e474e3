"""What a sidecar is and records: its layout's name and version, the error raised for
an unusable one, and the descriptions of the image and of each committed object."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from napari_fbrs.core.session import SessionClick, SliceKey

#: ``"format"`` entry of every sidecar.
FORMAT = "napari-fbrs-autosave"
#: Version of the sidecar layout this module writes; it reads this one and older.
VERSION = 1


class AutosaveError(ValueError):
    """A sidecar cannot be used: unreadable, corrupt, from a newer version, or made for
    another image. Nothing in the session was changed; the message says why and what to do."""


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
    object_pixels : int or None
        The object's pixels right after the commit when the commit made all of them (a
        replaced object's kept pixels included), else ``None`` (and in sidecars of before
        2026-11-27).
    settings : dict or None
        The predictor settings in effect when it was first autosaved (JSON values).
    propagation : dict or None
        A propagated object's settings (``axis``, ``direction``, ``stop_iou``,
        ``stop_slices``, ``regrowth``, ``min_contrast``, as
        :attr:`~napari_fbrs.core.session.CommittedObject.propagation`); ``None`` for an
        object made on one slice, and in sidecars of before the second half of 2026-11-27.
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
    object_pixels: int | None = None
    propagation: Mapping[str, Any] | None = None

    @property
    def uid(self) -> str:
        """A stable id of what was done: label, slice, clicks and propagation."""
        text = json.dumps(
            [self.label, list(self.key), [list(c) for c in self.clicks], self.propagated]
        )
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
