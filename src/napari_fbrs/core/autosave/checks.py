"""Checking the values read from a sidecar: integers, slice keys and clicks of the right
type and range (each check raises ``TypeError`` or ``ValueError`` naming the value)."""

from __future__ import annotations

import math
from typing import Any

from napari_fbrs.core.session import SessionClick, SliceKey


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
