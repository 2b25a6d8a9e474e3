"""The simulated user of the NoC protocol: where the next click goes.

The robot compares the false-negative region (object pixels the prediction misses) with the
false-positive region (background pixels it covers). Each region's depth is the largest
Euclidean distance from one of its pixels to the region's boundary, computed on the region
padded by one background pixel so that the image border counts as boundary. The deeper
region gets the click, at its deepest pixel: positive in a miss, negative in a false object.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["RobotClick", "error_depth", "next_click"]


class RobotClick(NamedTuple):
    """A simulated click: row ``y``, column ``x`` (napari ``(row, col)``) and polarity."""

    y: int
    x: int
    positive: bool


def error_depth(region: np.ndarray) -> np.ndarray:
    """Distance of every pixel of ``region`` to the region's boundary.

    Parameters
    ----------
    region : np.ndarray
        ``(H, W)`` bool.

    Returns
    -------
    np.ndarray
        ``(H, W)`` float64: for a region pixel, the Euclidean distance to the nearest pixel
        outside the region or outside the image (so a one-pixel region has depth 1);
        0 outside the region.
    """
    region = np.asarray(region, dtype=bool)
    depth = np.zeros(region.shape, dtype=np.float64)
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return depth
    cols = np.flatnonzero(region.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # Cropping to the bounding box is exact: the one-pixel padding stands for both the pixels
    # around the box (outside the region) and the image border, and is never farther away.
    padded = np.pad(region[y0:y1, x0:x1], 1, mode="constant", constant_values=False)
    depth[y0:y1, x0:x1] = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    return depth


def next_click(
    pred: np.ndarray,
    gt: np.ndarray,
    ignore: np.ndarray | None = None,
    clicked: np.ndarray | None = None,
) -> RobotClick | None:
    """The simulated user's next click for the current prediction.

    Parameters
    ----------
    pred : np.ndarray
        ``(H, W)`` bool, the current predicted mask (all ``False`` before the first click,
        which puts the first click at the most interior pixel of the object).
    gt : np.ndarray
        ``(H, W)`` bool, the object.
    ignore : np.ndarray or None
        ``(H, W)`` bool; ignored pixels are errors neither way (and act as boundary).
    clicked : np.ndarray or None
        ``(H, W)`` bool, pixels clicked already; they are never clicked again.

    Returns
    -------
    RobotClick or None
        Integer ``(y, x)`` and ``positive=True`` for a false-negative region,
        ``False`` for a false-positive one. A tie in depth goes to the negative click;
        within a region, the first deepest pixel in row-major order wins. ``None`` when no
        unclicked error pixel is left.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    valid = np.ones(gt.shape, dtype=bool) if ignore is None else ~np.asarray(ignore, bool)
    fn_depth = error_depth(gt & ~pred & valid)
    fp_depth = error_depth(~gt & pred & valid)
    if clicked is not None:
        # Depth is measured before removing clicked pixels, so a clicked pixel does not
        # carve a hole that would shift the next click.
        done = np.asarray(clicked, dtype=bool)
        fn_depth[done] = 0.0
        fp_depth[done] = 0.0
    fn_max = float(fn_depth.max())
    fp_max = float(fp_depth.max())
    if fn_max <= 0.0 and fp_max <= 0.0:
        return None
    positive = fn_max > fp_max
    depth = fn_depth if positive else fp_depth
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return RobotClick(int(y), int(x), bool(positive))
