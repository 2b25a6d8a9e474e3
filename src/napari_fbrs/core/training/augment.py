"""Training augmentations: scaled crop window, flip, photometric changes.

Images are ``(H, W, 3)`` RGB, uint8 or float in ``[0, 1]``; targets are ``(H, W)`` uint8 with
0 background, 1 object, :data:`~napari_fbrs.core.training.clicks_sim.IGNORE` ignored.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_fbrs.core.training.clicks_sim import IGNORE

# largest image-based scale, in crops per longer image side
IMAGE_SCALE_MAX = 2.0

__all__ = ["augment", "photometric", "scaled_window"]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def scaled_window(
    image: np.ndarray,
    target: np.ndarray,
    crop: int,
    factor: float,
    rng: np.random.Generator,
    object_pixels: tuple[np.ndarray, np.ndarray] | None = None,
    mirror: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``crop x crop`` window of the image scaled by ``factor`` around a random object pixel.

    Only the window is resampled (the image is never scaled whole, which costs up to
    ``factor**2`` times more). Parts of the window beyond the image are 0 in the image and
    ``IGNORE`` in the target. With ``mirror`` the window may lie past the border even where
    it would fit inside, and the image is mirrored there (numpy's ``"reflect"``), as the
    predictor shows it with ``ZoomIn(beyond_border=True)``; the target stays ``IGNORE``
    there, since the predictor keeps only what is inside the image.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8 or float in ``[0, 1]``.
    target : np.ndarray
        ``(H, W)`` uint8 (0, 1, ``IGNORE``).
    crop : int
        Output side in pixels.
    factor : float
        Output pixels per input pixel.
    rng : np.random.Generator
        Source of randomness.
    object_pixels : (ys, xs), optional
        ``np.nonzero(target == 1)`` when the caller has it already.
    mirror : bool
        Any window holding the chosen pixel, the image mirrored past its border.

    Returns
    -------
    image : np.ndarray
        ``(crop, crop, 3)`` uint8.
    target : np.ndarray
        ``(crop, crop)`` uint8.
    """
    from PIL import Image

    image = _to_uint8(image)
    h, w = target.shape
    side = crop / factor  # window side in input pixels
    ys, xs = np.nonzero(target == 1) if object_pixels is None else object_pixels
    if len(ys):
        i = int(rng.integers(len(ys)))
        cy, cx = float(ys[i]) + 0.5, float(xs[i]) + 0.5
    else:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)

    def start(c: float, n: int) -> float:
        # the window holds the pixel centre and, where it fits (unless mirrored), lies
        # inside the image
        lo, hi = c - side + 0.5 / factor, c - 0.5 / factor
        if not mirror:
            lo, hi = max(lo, min(0.0, n - side)), min(hi, max(0.0, n - side))
        return float(rng.uniform(lo, hi)) if hi > lo else lo

    y0, x0 = start(cy, h), start(cx, w)
    # pad so that the window lies inside the array (PIL boxes must)
    top, left = max(0, int(np.ceil(-y0))), max(0, int(np.ceil(-x0)))
    bottom = max(0, int(np.ceil(y0 + side - h)))
    right = max(0, int(np.ceil(x0 + side - w)))
    if top or left or bottom or right:
        pad = ((top, bottom), (left, right))
        if mirror:
            image = np.pad(image, pad + ((0, 0),), mode="reflect")
        else:
            image = np.pad(image, pad + ((0, 0),))
        target = np.pad(target, pad, constant_values=IGNORE)
    box = (x0 + left, y0 + top, x0 + left + side, y0 + top + side)
    out_i = Image.fromarray(image).resize((crop, crop), Image.BILINEAR, box=box)
    out_t = Image.fromarray(target).resize((crop, crop), Image.NEAREST, box=box)
    return np.asarray(out_i), np.asarray(out_t)


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and gamma jitter, sometimes blur or noise.

    ``image`` ``(H, W, 3)`` uint8 or float in ``[0, 1]``; returns float32 in ``[0, 1]``.
    """
    img = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image
    if rng.random() < 0.8:
        img = img * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
        mean = img.mean()
        img = (img - mean) * rng.uniform(0.7, 1.3) + mean
        grey = img.mean(axis=2, keepdims=True)
        img = grey + (img - grey) * rng.uniform(0.6, 1.4)
        img = np.clip(img, 0, 1) ** rng.uniform(0.75, 1.33)
    if rng.random() < 0.15:
        img = ndimage.gaussian_filter(img, (rng.uniform(0.5, 1.5),) * 2 + (0,))
    if rng.random() < 0.15:
        img = img + rng.normal(0, rng.uniform(0.01, 0.05), img.shape)
    if rng.random() < 0.05:  # grey version of a colour image
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(img, 0, 1).astype(np.float32)


def augment(
    image: np.ndarray,
    target: np.ndarray,
    crop: int,
    rng: np.random.Generator,
    vertical_flip: bool = False,
    border_mirror: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Full training augmentation of one sample.

    The scale is chosen either from the image size (its longer side becomes 0.9-2 crops,
    so objects larger than the network's view occur, as at a full-resolution first click)
    or from the object (its bounding box's longer side becomes 0.25-0.9 crops), so the
    network sees both whole scenes and zoomed-in objects, as the predictor's zoom-in does.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8, or float in ``[0, 1]``.
    target : np.ndarray
        ``(H, W)`` uint8 (0, 1, ``IGNORE``) with at least one object pixel.
    crop : int
        Output side.
    rng : np.random.Generator
        Source of randomness.
    vertical_flip : bool
        Also flip upside down half the time (for microscopy and synthetic scenes).
    border_mirror : float
        Probability that the crop window may reach past the image border, the image
        mirrored there (``scaled_window(..., mirror=True)``).

    Returns
    -------
    image : np.ndarray
        ``(crop, crop, 3)`` float32 in ``[0, 1]``.
    target : np.ndarray
        ``(crop, crop)`` uint8.
    """
    h, w = target.shape
    ys, xs = np.nonzero(target == 1)
    if rng.random() < 0.5 and len(ys):
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        factor = rng.uniform(0.25, 0.9) * crop / extent
    else:
        factor = rng.uniform(0.9, IMAGE_SCALE_MAX) * crop / max(h, w)
    factor = float(np.clip(factor, 0.2, 4.0))
    # no draw at 0, so that runs without the option keep their random stream
    mirror = border_mirror > 0 and rng.random() < border_mirror
    image, target = scaled_window(image, target, crop, factor, rng, (ys, xs), mirror)
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    if vertical_flip and rng.random() < 0.5:
        image, target = image[::-1], target[::-1]
    image = photometric(np.ascontiguousarray(image), rng)
    return image, np.ascontiguousarray(target)
