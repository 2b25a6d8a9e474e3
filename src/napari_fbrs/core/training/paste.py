"""Copy-paste compositing of training samples: new backgrounds and occluders.

With a few hundred real objects the network sees each object on one background only. Two
composites multiply the combinations: *transplant* puts the sample's object onto the image
of another sample (the target is unchanged, the background is new), and *occlude* puts
another sample's object in front of part of the sample's object (the covered part leaves
the target). The pasted object's edge is feathered by a small Gaussian, so a sharp cut-out
edge is not a shortcut for the network.

All arrays are augmented crops of the same size: images ``(S, S, 3)`` float32 in ``[0, 1]``,
targets ``(S, S)`` uint8 with 0 background, 1 object and ``IGNORE``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_fbrs.core.training.clicks_sim import IGNORE

__all__ = ["occlude", "transplant"]

#: Least fraction of the object an occluder leaves visible.
MIN_VISIBLE = 0.4


def _alpha(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(S, S, 1)`` float32 opacity of a pasted object: its mask with a feathered edge."""
    sigma = float(rng.uniform(0.4, 1.2))
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma)[..., None]


def _shift(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``array`` moved by ``(dy, dx)`` pixels along its first two axes; uncovered parts are 0."""
    out = np.zeros_like(array)
    h, w = array.shape[:2]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[dst_y, dst_x] = array[src_y, src_x]
    return out


def transplant(
    image: np.ndarray,
    target: np.ndarray,
    background: np.ndarray,
    background_target: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The sample's object on another sample's image.

    Parameters
    ----------
    image, target : np.ndarray
        The sample: ``(S, S, 3)`` float32 and ``(S, S)`` uint8.
    background, background_target : np.ndarray
        The other sample, same shapes; its object becomes background.
    rng : np.random.Generator
        Source of randomness (the edge feathering).

    Returns
    -------
    image, target : np.ndarray
        The composite ``(S, S, 3)`` float32 and its target ``(S, S)`` uint8: the object
        where it was, ``IGNORE`` where either sample ignored pixels (outside the image
        or an unknown band), 0 elsewhere.
    """
    obj = target == 1
    a = _alpha(obj, rng)
    out = background * (1 - a) + image * a
    new_target = np.where(obj, 1, 0).astype(np.uint8)
    ignored = ((target == IGNORE) & (a[..., 0] > 0.01)) | ((background_target == IGNORE) & ~obj)
    new_target[ignored] = IGNORE
    return out.astype(np.float32), new_target


def occlude(
    image: np.ndarray,
    target: np.ndarray,
    occluder: np.ndarray,
    occluder_target: np.ndarray,
    rng: np.random.Generator,
    attempts: int = 4,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Another sample's object in front of part of the sample's object.

    The occluder is moved so that one of its pixels lands on a pixel of the object (both
    random); positions that would hide more than ``1 - MIN_VISIBLE`` of the object are
    rejected.

    Parameters
    ----------
    image, target : np.ndarray
        The sample: ``(S, S, 3)`` float32 and ``(S, S)`` uint8 with object pixels.
    occluder, occluder_target : np.ndarray
        The sample whose object is pasted in front, same shapes.
    rng : np.random.Generator
        Source of randomness.
    attempts : int
        Positions tried.

    Returns
    -------
    (image, target) or None
        The composite, with the hidden part of the object set to background, or ``None``
        when no tried position leaves enough of the object visible.
    """
    obj = target == 1
    area = int(obj.sum())
    oys, oxs = np.nonzero(occluder_target == 1)
    tys, txs = np.nonzero(obj)
    if area == 0 or len(oys) == 0:
        return None
    for _ in range(attempts):
        i, j = int(rng.integers(len(tys))), int(rng.integers(len(oys)))
        dy, dx = int(tys[i] - oys[j]), int(txs[i] - oxs[j])
        shifted = _shift(occluder_target == 1, dy, dx)
        if int((obj & ~shifted).sum()) < MIN_VISIBLE * area:
            continue
        a = _alpha(shifted, rng)
        out = image * (1 - a) + _shift(occluder, dy, dx) * a
        new_target = target.copy()
        new_target[a[..., 0] >= 0.5] = 0
        return out.astype(np.float32), new_target
    return None
