"""Carrying an object from one slice of a stack to its neighbours.

From a finished mask on slice ``z``, each next slice is segmented by the predictor with
clicks derived from the previous slice's mask: a positive click at its most interior
point and negative clicks on a ring around it, so BRS pulls the prediction towards an
object of about the same place and size. Propagation in one direction stops when the
object vanishes, when it changes too much (IoU with the previous slice below
``stop_iou``), at a slice the caller marks as a stop, or at the end of the stack; optionally
also where a convex object's area grows again after shrinking (``regrowth``: the walk
entering a touching neighbour) or where it dims (``min_contrast``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
from scipy import ndimage as ndi

from napari_fbrs.core.clicks import Click
from napari_fbrs.core.propagation_settings import check_setting

__all__ = ["propagate", "clicks_from_mask", "check_stop_rules"]


def clicks_from_mask(
    mask: np.ndarray, n_negative: int = 4, n_extra_positive: int = 0
) -> list[Click]:
    """Clicks that describe ``mask`` to the predictor of a neighbouring slice.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` bool, not empty.
    n_negative : int
        Negative clicks placed around the object (0 for none).
    n_extra_positive : int
        Up to 4 more positive clicks, half-way from the first one to the mask's edge
        (right, left, down, up), telling the predictor how far the object reaches.

    Returns
    -------
    list of Click
        First the positive click at the pixel farthest from the mask's border, then the
        extra positive clicks that fall inside the mask, then up to ``n_negative`` negative
        clicks at a margin outside the object (left, right, top, bottom of its centre),
        skipping those that fall off the image.
    """
    h, w = mask.shape
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    clicks = [Click(float(y), float(x), True)]
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))[: max(0, n_extra_positive)]:
        reach = 0  # pixels the mask extends from (y, x) in this direction
        while (
            0 <= y + dy * (reach + 1) < h
            and 0 <= x + dx * (reach + 1) < w
            and mask[y + dy * (reach + 1), x + dx * (reach + 1)]
        ):
            reach += 1
        if reach >= 2:
            clicks.append(Click(float(y + dy * (reach // 2)), float(x + dx * (reach // 2)), True))
    if n_negative <= 0:
        return clicks
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    radius = max(float(dist.max()), 1.0)
    margin = max(2.0, 0.5 * radius)
    cy, cx = 0.5 * (rows[0] + rows[-1]), 0.5 * (cols[0] + cols[-1])
    candidates = [
        (cy, cols[0] - margin),
        (cy, cols[-1] + margin),
        (rows[0] - margin, cx),
        (rows[-1] + margin, cx),
    ]
    for ny, nx in candidates[:n_negative]:
        iy, ix = int(round(ny)), int(round(nx))
        if 0 <= iy < h and 0 <= ix < w and not mask[iy, ix]:
            clicks.append(Click(float(iy), float(ix), False))
    return clicks


def check_stop_rules(regrowth: float | None, min_contrast: float | None) -> None:
    """Raise ``ValueError`` for a ``regrowth`` that is not positive or a ``min_contrast``
    outside ``(0, 1]`` (``None`` turns either rule off)."""
    if regrowth is not None:
        check_setting("regrowth", float(regrowth))
    if min_contrast is not None:
        check_setting("min_contrast", float(min_contrast))


def _grey(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 intensity of a grey or RGB(A) slice (mean of the colour channels)."""
    arr = np.asarray(image, dtype=np.float64)
    return arr[..., :3].mean(axis=-1) if arr.ndim == 3 else arr


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def propagate(
    predictor,
    volume: np.ndarray,
    z: int,
    mask: np.ndarray,
    axis: int = 0,
    direction: int = 0,
    stop_iou: float = 0.5,
    *,
    stop_slices: Collection[int] = (),
    min_area_ratio: float = 0.05,
    n_negative: int = 4,
    n_extra_positive: int = 0,
    regrowth: float | None = None,
    min_contrast: float | None = None,
    use_prior: bool = False,
    contrast_limits: tuple[float, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Segment an object through a stack from one finished slice.

    Parameters
    ----------
    predictor : Predictor
        Any configured predictor; its image is replaced slice by slice (its clicks and
        history are lost).
    volume : numpy.ndarray
        The stack; ``axis`` is the one to walk along. After removing that axis, each slice
        is ``(H, W)`` or ``(H, W, 3|4)``. Lazy arrays (dask, zarr) are read one slice at a
        time.
    z : int
        Index of the slice where ``mask`` was made.
    mask : numpy.ndarray
        ``(H, W)`` bool, the finished object on slice ``z``.
    axis : int
        Axis of ``volume`` to propagate along (z or t).
    direction : int
        ``0`` both ways, ``+1`` towards higher indices only, ``-1`` lower only.
    stop_iou : float
        Stop when the IoU between consecutive slices' masks drops below this.
    stop_slices : collection of int
        Slices that are not entered (e.g. where the user placed a "stop" click).
    min_area_ratio : float
        Stop when the mask is smaller than this fraction of the previous slice's.
    n_negative : int
        Negative clicks around the object on each new slice (see :func:`clicks_from_mask`).
    n_extra_positive : int
        Extra positive clicks inside the object on each new slice (0-4, same function).
    regrowth : float or None
        For convex objects (nuclei, cells), whose area along the walk rises to one peak and
        falls: once the area has fallen below ``(1 - regrowth)`` of its largest value so far,
        stop where it grows again above ``(1 + regrowth)`` of its smallest value since (the
        walk entering a touching neighbour). ``None``: off.
    min_contrast : float or None
        Stop where the object's mean intensity above the background falls below this
        fraction of the start slice's (the walk leaving a bright object). Background: the
        low contrast limit, else the start slice's 1st percentile. ``None``: off.
    use_prior : bool
        Also give the previous slice's mask as the starting mask to networks that take one
        (:meth:`Predictor.set_prior`; ``fbrs-lite``, RITM); others ignore it. Off by
        default: on nuclei3d it made ``fbrs-lite`` follow objects further into their
        neighbours (mean 3D IoU 0.47 against 0.59 without).
    contrast_limits : (low, high), optional
        Intensity window for every slice (napari's contrast limits); default: per-slice
        robust percentiles.
    progress : callable, optional
        ``progress(done, total)`` after each slice, total = slices that could be visited.
    cancel : callable, optional
        ``cancel() -> bool``; checked before each slice; returns what was done so far.

    Returns
    -------
    numpy.ndarray
        bool, the shape of ``volume`` without a trailing RGB(A) axis, with the object on
        every slice reached (and ``mask`` on slice ``z``).
    """
    check_setting("direction", direction)
    axis = axis % volume.ndim
    n = volume.shape[axis]
    if not 0 <= z < n:
        raise ValueError(f"slice {z} is outside the stack of {n} slices along axis {axis}")
    mask = np.asarray(mask, dtype=bool)
    slice_shape = tuple(s for i, s in enumerate(volume.shape) if i != axis)
    spatial = (
        slice_shape[:2] if len(slice_shape) == 3 and slice_shape[2] in (3, 4) else (slice_shape)
    )
    if mask.shape != tuple(spatial):
        raise ValueError(f"mask shape {mask.shape} does not match a slice {tuple(spatial)}")
    if not mask.any():
        raise ValueError("the mask on the start slice is empty: nothing to propagate")
    check_stop_rules(regrowth, min_contrast)
    out_shape = list(volume.shape)
    if len(slice_shape) == 3:  # drop the RGB(A) axis
        out_shape = out_shape[:-1]
    result = np.zeros(out_shape, dtype=bool)

    def put(k: int, m: np.ndarray) -> None:
        index = [slice(None)] * result.ndim
        index[axis] = k
        result[tuple(index)] = m

    def get_slice(k: int) -> np.ndarray:
        return np.asarray(np.take(volume, k, axis=axis))

    put(z, mask)
    background = start_level = None
    if min_contrast is not None:
        start = _grey(get_slice(z))
        background = (
            float(contrast_limits[0])
            if contrast_limits is not None
            else float(np.nanpercentile(start, 1))
        )
        start_level = float(np.nanmean(start[mask])) - background
        if not start_level > 0:  # an object no brighter than the background: rule off
            start_level = None
    steps = (1, -1) if direction == 0 else (direction,)
    total = sum((n - 1 - z) if d > 0 else z for d in steps)
    done = 0
    for d in steps:
        prev = mask
        largest, smallest_since = int(mask.sum()), None
        k = z + d
        while 0 <= k < n and k not in stop_slices:
            if cancel is not None and cancel():
                return result
            image = get_slice(k)
            predictor.set_image(image, contrast_limits=contrast_limits)
            if use_prior:
                predictor.set_prior(prev)
            for click in clicks_from_mask(prev, n_negative, n_extra_positive):
                predictor.add_click(click.y, click.x, click.positive)
            current = predictor.mask.copy()
            done += 1
            if progress is not None:
                progress(done, total)
            area = int(current.sum())
            if area < min_area_ratio * prev.sum() or _iou(current, prev) < stop_iou:
                break
            if regrowth is not None and smallest_since is not None:
                if area > (1 + regrowth) * smallest_since:
                    break
            if start_level is not None:
                level = float(np.nanmean(_grey(image)[current])) - background if area else 0.0
                if level < min_contrast * start_level:
                    break
            put(k, current)
            prev = current
            if regrowth is not None:  # follow the area's peak and the low after it
                if area > largest:
                    largest, smallest_since = area, None
                elif smallest_since is not None or area < (1 - regrowth) * largest:
                    smallest_since = area if smallest_since is None else min(smallest_since, area)
            k += d
    return result
