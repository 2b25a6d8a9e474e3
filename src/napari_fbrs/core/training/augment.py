"""Training augmentations: rescale, flip, crop to a fixed size, photometric changes.

Images are ``(H, W, 3)`` float32 RGB in ``[0, 1]``; targets are ``(H, W)`` uint8 with
0 background, 1 object, :data:`~napari_fbrs.core.training.clicks_sim.IGNORE` ignored.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_fbrs.core.training.clicks_sim import IGNORE

__all__ = ["augment", "photometric", "random_crop", "rescale"]


def rescale(image: np.ndarray, target: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``factor``: bilinear for the image, nearest for the target."""
    if abs(factor - 1.0) < 1e-3:
        return image, target
    from PIL import Image

    h, w = target.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    channels = [
        np.asarray(Image.fromarray(image[..., c]).resize(size, Image.BILINEAR)) for c in range(3)
    ]
    out_t = np.asarray(Image.fromarray(target).resize(size, Image.NEAREST))
    return np.stack(channels, axis=-1), out_t


def random_crop(
    image: np.ndarray, target: np.ndarray, crop: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``crop x crop`` window that contains a random object pixel.

    Sides shorter than ``crop`` are padded: image with 0, target with ``IGNORE``.
    """
    h, w = target.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        top, left = int(rng.integers(ph + 1)), int(rng.integers(pw + 1))
        pad = ((top, ph - top), (left, pw - left))
        image = np.pad(image, pad + ((0, 0),))
        target = np.pad(target, pad, constant_values=IGNORE)
        h, w = target.shape
    ys, xs = np.nonzero(target == 1)
    if len(ys):
        i = int(rng.integers(len(ys)))
        cy, cx = int(ys[i]), int(xs[i])
        y0 = int(rng.integers(max(cy - crop + 1, 0), min(cy, h - crop) + 1))
        x0 = int(rng.integers(max(cx - crop + 1, 0), min(cx, w - crop) + 1))
    else:
        y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    return image[y0 : y0 + crop, x0 : x0 + crop], target[y0 : y0 + crop, x0 : x0 + crop]


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and gamma jitter, sometimes blur or noise."""
    img = image
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
) -> tuple[np.ndarray, np.ndarray]:
    """Full training augmentation of one sample.

    The scale is chosen either from the image size (its longer side becomes 0.9-1.6 crops)
    or from the object (its bounding box's longer side becomes 0.25-0.9 crops), so the
    network sees both whole scenes and zoomed-in objects, as the predictor's zoom-in does.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` float32 in ``[0, 1]``.
    target : np.ndarray
        ``(H, W)`` uint8 (0, 1, ``IGNORE``) with at least one object pixel.
    crop : int
        Output side.
    rng : np.random.Generator
        Source of randomness.
    vertical_flip : bool
        Also flip upside down half the time (for microscopy and synthetic scenes).

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
        factor = rng.uniform(0.9, 1.6) * crop / max(h, w)
    factor = float(np.clip(factor, 0.2, 4.0))
    image, target = rescale(image, target, factor)
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    if vertical_flip and rng.random() < 0.5:
        image, target = image[::-1], target[::-1]
    image, target = random_crop(image, target, crop, rng)
    image = photometric(np.ascontiguousarray(image), rng)
    return image, np.ascontiguousarray(target)
