"""The sidecar's JSON document: a :class:`SessionState` into JSON values and back (every
value read is checked, see ``checks``), and reading the file with its size, format and
version checks."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_fbrs.core.autosave.checks import _click, _int, _key, _propagation
from napari_fbrs.core.autosave.records import (
    FORMAT,
    VERSION,
    AutosaveError,
    ImageInfo,
    ObjectRecord,
)
from napari_fbrs.core.autosave.state import SessionState, _jsonable, _limits, _now
from napari_fbrs.core.session import SessionClick, SliceKey

#: Sidecars larger than this are refused unread (a sidecar is a few kB per 100 clicks).
MAX_JSON_BYTES = 64 * 1024 * 1024


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
        "pins": [
            {"key": [int(k) for k in key], "label": int(label)}
            for key, label in sorted(state.pins.items())
        ],
        "objects": [
            {
                "label": int(o.label),
                "key": [int(k) for k in o.key],
                "clicks": [_click_doc(c) for c in o.clicks],
                "propagated": bool(o.propagated),
                "n_pixels": int(o.n_pixels),
                "replaced": bool(o.replaced),
                "object_pixels": None if o.object_pixels is None else int(o.object_pixels),
                "settings": _jsonable(o.settings) if o.settings is not None else None,
                "propagation": _propagation_doc(o.propagation),
                "committed_at": o.committed_at,
            }
            for o in state.objects
        ],
        "labels": labels_doc,
    }


def _propagation_doc(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A propagation's settings as JSON values (``None`` stays ``None``)."""
    if settings is None:
        return None

    def number(v: Any) -> float | None:
        return None if v is None else float(v)

    return {
        "axis": int(settings["axis"]),
        "direction": int(settings.get("direction", 0)),
        "stop_iou": float(settings.get("stop_iou", 0.5)),
        "stop_slices": [int(i) for i in settings.get("stop_slices") or ()],
        "regrowth": number(settings.get("regrowth")),
        "min_contrast": number(settings.get("min_contrast")),
    }


def _click_doc(c: Sequence[Any]) -> list[Any]:
    y, x = float(c[0]), float(c[1])
    if not (math.isfinite(y) and math.isfinite(x)):
        raise ValueError(f"click ({y}, {x}) is not finite")
    return [y, x, bool(c[2])]


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
    pins: dict[SliceKey, int] = {}
    for i, item in enumerate(doc.get("pins", [])):  # absent in files of before 2026-11-27
        pins[_key(item["key"], f"pins[{i}].key")] = _int(item["label"], f"pins[{i}].label", 1)
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
                object_pixels=(
                    None  # absent in files of before 2026-11-27
                    if item.get("object_pixels") is None
                    else _int(item["object_pixels"], f"objects[{i}].object_pixels", 0)
                ),
                # absent in files of before the propagation settings were kept
                propagation=_propagation(item.get("propagation"), f"objects[{i}].propagation"),
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
        pins=pins,
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
