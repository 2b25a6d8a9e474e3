"""Simulated users for training: initial random clicks and clicks on the model's errors.

Masks here are ``(H, W)`` uint8 targets with ``0`` background, ``1`` object and
:data:`IGNORE` for pixels that must never be clicked nor scored.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_fbrs.core.clicks import Click

__all__ = ["IGNORE", "error_click", "initial_clicks"]

IGNORE = 255

# probabilities of 1, 2, 3 initial positive clicks and of 0..3 negative ones
_POS_COUNTS = (0.65, 0.25, 0.10)
_NEG_COUNTS = (0.55, 0.25, 0.12, 0.08)


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> tuple[int, int] | None:
    ys, xs = np.nonzero(candidates)
    if len(ys) == 0:
        return None
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def initial_clicks(
    mask: np.ndarray, rng: np.random.Generator, max_pos: int = 3, max_neg: int = 3
) -> list[Click]:
    """Random first clicks: positives inside the object, negatives in the background.

    The first positive click is either near the object's centre (deep inside, like the
    evaluation protocol's first click) or anywhere not too close to its border; negatives
    fall either in a band around the object (where users correct leaks) or anywhere.

    Parameters
    ----------
    mask : np.ndarray
        ``(H, W)`` uint8 target (0, 1, :data:`IGNORE`); must contain object pixels.
    rng : np.random.Generator
        Source of randomness.
    max_pos, max_neg : int
        Upper bounds on the numbers of positive and negative clicks.

    Returns
    -------
    list of Click
        At least one positive click, coordinates ``(y, x)`` in pixels of ``mask``.
    """
    obj = mask == 1
    bg = mask == 0
    if not obj.any():
        raise ValueError("the mask has no object pixel to click on")
    inside = ndimage.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1]
    deepest = inside.max()
    n_pos = 1 + int(rng.choice(len(_POS_COUNTS), p=_POS_COUNTS))
    n_neg = int(rng.choice(len(_NEG_COUNTS), p=_NEG_COUNTS))
    n_pos, n_neg = min(n_pos, max_pos), min(n_neg, max_neg)

    clicks: list[Click] = []
    for k in range(n_pos):
        if k == 0 and rng.random() < 0.5:
            region = inside >= 0.7 * deepest
        else:
            region = inside >= min(3.0, deepest)
        yx = _pick(rng, region)
        if yx is not None:
            clicks.append(Click(*yx, positive=True))

    if n_neg and bg.any():
        outside = ndimage.distance_transform_edt(~obj)
        for _ in range(n_neg):
            if rng.random() < 0.6:
                near = bg & (outside >= 3) & (outside <= max(8.0, 0.3 * deepest + 8))
                yx = _pick(rng, near) or _pick(rng, bg)
            else:
                yx = _pick(rng, bg)
            if yx is not None:
                clicks.append(Click(*yx, positive=False))
    return clicks


def error_click(pred: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Click | None:
    """A corrective click on the larger error of a prediction.

    False negatives and false positives (ignoring :data:`IGNORE` pixels) are measured by
    their distance to the error region's border (the image border counts as border); the
    click goes on a random pixel at least half as deep as the deepest error pixel, in the
    error type with the deepest pixel: positive for a missed object part, negative for a
    leak.

    Parameters
    ----------
    pred : np.ndarray
        ``(H, W)`` bool predicted object.
    mask : np.ndarray
        ``(H, W)`` uint8 target (0, 1, :data:`IGNORE`).
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    Click or None
        ``None`` when the prediction has no error on valid pixels.
    """
    fn = (mask == 1) & ~pred
    fp = (mask == 0) & pred
    if not (fn.any() or fp.any()):
        return None
    fn_dt = ndimage.distance_transform_edt(np.pad(fn, 1))[1:-1, 1:-1]
    fp_dt = ndimage.distance_transform_edt(np.pad(fp, 1))[1:-1, 1:-1]
    positive = fn_dt.max() >= fp_dt.max()
    dt = fn_dt if positive else fp_dt
    yx = _pick(rng, dt >= 0.5 * dt.max())
    assert yx is not None  # the error region is not empty
    return Click(*yx, positive=bool(positive))
