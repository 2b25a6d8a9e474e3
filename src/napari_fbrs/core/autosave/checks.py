"""Checking the values read from a sidecar: integers, slice keys and clicks of the right
type and range (each check raises ``TypeError`` or ``ValueError`` naming the value)."""

from __future__ import annotations

import math
from typing import Any

from napari_fbrs.core.propagation_settings import check_setting
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


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _propagation(value: Any, what: str) -> dict[str, Any] | None:
    """A propagation's settings (``CommittedObject.propagation``): ``axis``,
    ``direction``, ``stop_iou``, ``stop_slices``, ``regrowth``, ``min_contrast``, each in
    its range; ``None`` stays ``None``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be an object or null, got {value!r}")
    direction = _int(value.get("direction", 0), f"{what}.direction")
    check_setting("direction", direction, f"{what}.direction")
    stop_iou = _number(value.get("stop_iou", 0.5), f"{what}.stop_iou")
    check_setting("stop_iou", stop_iou, f"{what}.stop_iou")
    rules: dict[str, float | None] = {}
    for name in ("regrowth", "min_contrast"):
        rule = value.get(name)
        rules[name] = None if rule is None else _number(rule, f"{what}.{name}")
        if rules[name] is not None:
            check_setting(name, rules[name], f"{what}.{name}")
    return {
        "axis": _int(value.get("axis", 0), f"{what}.axis", 0),
        "direction": direction,
        "stop_iou": stop_iou,
        "stop_slices": _key(value.get("stop_slices", []), f"{what}.stop_slices"),
        **rules,
    }
