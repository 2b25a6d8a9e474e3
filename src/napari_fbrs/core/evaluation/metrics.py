"""Metrics of the NoC protocol: IoU, number of clicks, mIoU per click.

All summary numbers are computed from per-object IoU curves (``ious[k]`` = IoU after click
``k + 1``), so a report can always be recomputed from the curves stored in its JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "OVER_MAX_THRESHOLDS",
    "iou",
    "miou_curve",
    "noc",
    "over_max",
    "reached",
    "summarize",
    "threshold_key",
]

#: IoU thresholds of the NoC columns.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.80, 0.85, 0.90)
#: Thresholds for which the objects that never reach them are counted.
OVER_MAX_THRESHOLDS: tuple[float, ...] = (0.85, 0.90)


def threshold_key(threshold: float) -> str:
    """JSON/table key of an IoU threshold: ``0.85 -> "85"``."""
    return str(int(round(threshold * 100)))


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two masks, ignored pixels excluded.

    Parameters
    ----------
    pred, gt : np.ndarray
        ``(H, W)`` bool (anything non-zero counts as object).
    ignore : np.ndarray or None
        ``(H, W)`` bool; ``True`` pixels count neither as object nor as background.

    Returns
    -------
    float
        In ``[0, 1]``; ``1.0`` when both masks are empty outside the ignored pixels.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    inter = pred & gt
    union = pred | gt
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        inter &= keep
        union &= keep
    n_union = int(union.sum())
    if n_union == 0:
        return 1.0
    return float(inter.sum()) / n_union


def noc(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks an object needs to reach ``threshold``.

    Parameters
    ----------
    ious : sequence of float
        IoU after clicks 1, 2, ... (may stop early; only the first ``max_clicks`` count).
    threshold : float
        Target IoU in ``[0, 1]``.
    max_clicks : int
        Click budget; also the value for an object that never reaches ``threshold``.

    Returns
    -------
    int
        1-based index of the first click with IoU ``>= threshold``, else ``max_clicks``.
    """
    for k, value in enumerate(list(ious)[:max_clicks], start=1):
        if value >= threshold:
            return k
    return max_clicks


def reached(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> bool:
    """Whether any of the first ``max_clicks`` IoUs is ``>= threshold``.

    Parameters
    ----------
    ious : sequence of float
        IoU after clicks 1, 2, ...
    threshold : float
        Target IoU in ``[0, 1]``.
    max_clicks : int
        Click budget.

    Returns
    -------
    bool
    """
    return any(value >= threshold for value in list(ious)[:max_clicks])


def over_max(curves: Sequence[Sequence[float]], threshold: float, max_clicks: int = 20) -> int:
    """Number of objects that never reach ``threshold`` within ``max_clicks`` clicks.

    An object reaching it exactly on click ``max_clicks`` is not counted (its NoC is
    ``max_clicks`` all the same).

    Parameters
    ----------
    curves : sequence of sequences of float
        One IoU curve per object.
    threshold : float
        Target IoU in ``[0, 1]``.
    max_clicks : int
        Click budget.

    Returns
    -------
    int
    """
    return sum(not reached(c, threshold, max_clicks) for c in curves)


def miou_curve(curves: Sequence[Sequence[float]], max_clicks: int = 20) -> np.ndarray:
    """Mean IoU after ``k = 1 .. max_clicks`` clicks, each curve's last IoU carried forward.

    Parameters
    ----------
    curves : sequence of sequences of float
        One IoU curve per object; curves that stop early (target reached, or no click
        left) keep their last value. An empty curve counts as IoU 0.

    Returns
    -------
    np.ndarray
        ``(max_clicks,)`` float64; all NaN when ``curves`` is empty.
    """
    if len(curves) == 0:
        return np.full(max_clicks, np.nan)
    table = np.zeros((len(curves), max_clicks), dtype=np.float64)
    for i, curve in enumerate(curves):
        values = list(curve)[:max_clicks]
        if values:
            table[i, : len(values)] = values
            table[i, len(values) :] = values[-1]
    return table.mean(axis=0)


def summarize(
    curves: Sequence[Sequence[float]],
    max_clicks: int = 20,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    over_max_thresholds: Sequence[float] = OVER_MAX_THRESHOLDS,
) -> dict[str, dict[str, float | int]]:
    """NoC means and never-reached counts of a set of IoU curves.

    This is the single place the report's numbers come from; the runner and the table both
    call it on the same curves.

    Parameters
    ----------
    curves : sequence of sequences of float
        One IoU curve per object (IoU after clicks 1, 2, ...).
    max_clicks : int
        Click budget.
    thresholds, over_max_thresholds : sequence of float
        IoU thresholds of the NoC means and of the never-reached counts.

    Returns
    -------
    dict
        ``{"noc": {"80": mean NoC, ...}, "over_max": {"85": count, ...}}``; NoC means are
        NaN for an empty set of curves.
    """
    n = len(curves)
    noc_means: dict[str, float | int] = {}
    for t in thresholds:
        values = [noc(c, t, max_clicks) for c in curves]
        noc_means[threshold_key(t)] = float(np.mean(values)) if n else float("nan")
    counts: dict[str, float | int] = {
        threshold_key(t): over_max(curves, t, max_clicks) for t in over_max_thresholds
    }
    return {"noc": noc_means, "over_max": counts}
