"""The valid values of a propagation's settings, in one place.

The panel, :func:`napari_fbrs.core.propagation.propagate`, autosave sidecars, the clicks
file and ``napari-fbrs segment`` all check these settings; each wraps the same words in
its own kind of error (``ValueError``, a sidecar field, a file line, an option name).
Plain Python: importing it costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["setting_problem", "check_setting"]

#: setting -> (test of a value, what a value must do). ``stop_iou`` 0 means "never stop on
#: IoU" and 1 "stop at the first change" (the panel's spin box allows both).
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "direction": (lambda v: v in (-1, 0, 1), "be -1, 0 or +1"),
    "stop_iou": (lambda v: 0.0 <= v <= 1.0, "lie in [0, 1]"),
    "regrowth": (lambda v: 0.0 < v < math.inf, "be positive"),
    "min_contrast": (lambda v: 0.0 < v <= 1.0, "lie in (0, 1]"),
}


def setting_problem(name: str, value: float) -> str | None:
    """What is wrong with ``value`` for the setting ``name``, or ``None`` when it is valid.

    Parameters
    ----------
    name : str
        ``"direction"`` (-1 backward, 0 both ways, +1 forward), ``"stop_iou"``,
        ``"regrowth"`` or ``"min_contrast"``.
    value : float
        The value; NaN is never valid.

    Returns
    -------
    str or None
        The requirement it breaks, e.g. ``"must lie in [0, 1]"``, to follow the setting's
        name in an error message.
    """
    test, requirement = _RANGES[name]
    return None if test(value) else f"must {requirement}"


def check_setting(name: str, value: float, label: str | None = None) -> None:
    """Raise ``ValueError("<label> must ..., got <value>")`` for an invalid value.

    Parameters
    ----------
    name : str
        The setting, as for :func:`setting_problem`.
    value : float
        The value to check.
    label : str, optional
        What the message calls the setting (default: ``name``).
    """
    problem = setting_problem(name, value)
    if problem is not None:
        raise ValueError(f"{label or name} {problem}, got {value}")
