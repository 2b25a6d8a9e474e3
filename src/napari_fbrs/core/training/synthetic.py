"""Procedurally generated training images with exact object masks.

Two kinds of scene, both drawn with plain numpy/scipy:

* ``"shapes"``: textured, overlapping ellipses, polygons, stars and blobs on a textured
  background, in colour or grey;
* ``"cells"``: crowded cell- or nucleus-like blobs with inner texture, microscope blur,
  uneven illumination and shot/read noise, grey, fluorescence-coloured or stained;
* ``"stack"``: one z-slice of a crowded 3D stack of ellipsoidal nuclei, blurred more
  along z than in the plane (so nuclei just above or below the slice leave out-of-focus
  haze, and the ends of a nucleus are small and faint); the labels are the nuclei's
  cross-sections at that slice, as in a slice of a 3D label image.

The target is one object's visible part (later objects occlude earlier ones).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["SCENE_KINDS", "synthetic_sample", "synthetic_scene"]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in ``[0, 1]``: a ``cells x cells`` random grid, cubic upsampled."""
    grid = rng.random((cells + 3, cells + 3))
    up = ndimage.zoom(grid, (shape[0] / cells, shape[1] / cells), order=3, mode="reflect")
    up = up[: shape[0], : shape[1]]
    if up.shape != shape:  # zoom can round one short
        up = np.pad(up, [(0, shape[0] - up.shape[0]), (0, shape[1] - up.shape[1])], mode="edge")
    lo, hi = up.min(), up.max()
    return (up - lo) / (hi - lo + 1e-6)


def _texture(rng: np.random.Generator, shape: tuple[int, int], colour: bool) -> np.ndarray:
    """``(H, W, 3)`` float32 texture in ``[0, 1]``: flat, gradient, stripes, checks or noise."""
    h, w = shape
    base = rng.random(3) if colour else np.full(3, rng.random())
    other = rng.random(3) if colour else np.full(3, rng.random())
    kind = rng.integers(5)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        t = np.zeros(shape, np.float32)
    elif kind == 1:
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * yy + np.sin(angle) * xx) / max(h, w)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    elif kind == 2:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 30)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(angle) * yy + np.sin(angle) * xx) / period)
    elif kind == 3:
        period = int(rng.integers(4, 24))
        t = (((yy // period) + (xx // period)) % 2).astype(np.float32)
    else:
        t = _smooth_noise(rng, shape, int(rng.integers(3, 20)))
    strength = rng.uniform(0.2, 1.0)
    tex = base + strength * t[..., None] * (other - base)
    tex += rng.normal(0, rng.uniform(0, 0.06), (h, w, 1 if not colour else 3))
    return tex.astype(np.float32)


def _shape_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A random ellipse, polygon, star or blob somewhere in the image (bool ``(H, W)``)."""
    h, w = shape
    size = min(h, w)
    r = rng.uniform(0.06, 0.35) * size
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    kind = rng.integers(4)
    if kind == 0:  # rotated ellipse
        a, b, t = r, r * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
        u = dy * np.cos(t) + dx * np.sin(t)
        v = -dy * np.sin(t) + dx * np.cos(t)
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    angle = np.arctan2(dy, dx)
    dist = np.hypot(dy, dx)
    if kind == 1:  # convex-ish polygon: radius as a function of angle
        n = int(rng.integers(3, 9))
        vertices = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = r * rng.uniform(0.6, 1.0, n)
        # radius of the polygon edge at each angle, linearly between vertex radii
        boundary = np.interp(
            angle % (2 * np.pi),
            np.r_[vertices, vertices[0] + 2 * np.pi],
            np.r_[radii, radii[0]],
            period=2 * np.pi,
        )
        return dist <= boundary
    if kind == 2:  # star
        n = int(rng.integers(4, 9))
        depth = rng.uniform(0.2, 0.6)
        boundary = r * (1 - depth * 0.5 * (1 + np.cos(n * angle + rng.uniform(0, 6.3))))
        return dist <= boundary
    # blob: thresholded smooth noise inside a soft disc
    field = _smooth_noise(rng, shape, int(rng.integers(4, 10)))
    return (field * np.exp(-((dist / (1.3 * r)) ** 2))) > rng.uniform(0.2, 0.4)


def _camera_noise(
    rng: np.random.Generator,
    grey: np.ndarray,
    photons: tuple[float, float],
    max_read_noise: float,
) -> np.ndarray:
    """Shot noise (a random number of photons per unit intensity, within ``photons``) plus
    Gaussian read noise (sigma up to ``max_read_noise``) on a ``(H, W)`` intensity image."""
    scale = rng.uniform(*photons)
    noisy = rng.poisson(np.clip(grey, 0, None) * scale) / scale
    return noisy + rng.normal(0, rng.uniform(0, max_read_noise), grey.shape)


def _shapes_scene(
    rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    colour = rng.random() < 0.75
    image = _texture(rng, shape, colour)
    labels = np.zeros(shape, np.int32)
    for k in range(1, int(rng.integers(2, 9)) + 1):
        m = _shape_mask(rng, shape)
        if not m.any():
            continue
        image[m] = _texture(rng, shape, colour)[m]
        labels[m] = k
    if rng.random() < 0.5:
        image = ndimage.gaussian_filter(image, (rng.uniform(0.3, 1.5),) * 2 + (0,))
    return image, labels


def _cells_scene(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    r_mean = rng.uniform(6, 28)
    n = int(np.clip(rng.uniform(0.15, 0.6) * h * w / (np.pi * r_mean**2), 3, 150))
    signal = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        r = r_mean * rng.uniform(0.6, 1.4)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = int(max(cy - 2 * r, 0)), int(min(cy + 2 * r + 1, h))
        x0, x1 = int(max(cx - 2 * r, 0)), int(min(cx + 2 * r + 1, w))
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        t = rng.uniform(0, np.pi)
        u = dy * np.cos(t) + dx * np.sin(t)
        v = (-dy * np.sin(t) + dx * np.cos(t)) / rng.uniform(0.55, 1.0)
        angle = np.arctan2(v, u)
        wobble = 1 + sum(
            rng.uniform(0, 0.08) * np.cos(j * angle + rng.uniform(0, 6.3)) for j in range(2, 6)
        )
        inside = np.hypot(u, v) <= r * wobble
        if not inside.any():
            continue
        brightness = rng.uniform(0.3, 1.0)
        texture = 1 + rng.uniform(0, 0.4) * (rng.random(inside.shape) - 0.5)
        patch = signal[y0:y1, x0:x1]
        patch[inside] = (brightness * texture)[inside]
        labels[y0:y1, x0:x1][inside] = k
    signal = ndimage.gaussian_filter(signal, rng.uniform(0.7, 3.0))
    background = rng.uniform(0, 0.25) * _smooth_noise(rng, shape, 3)
    illumination = 1 - rng.uniform(0, 0.4) * _smooth_noise(rng, shape, 2)
    grey = (signal + background) * illumination
    grey = _camera_noise(rng, grey, (20, 300), 0.04)
    grey = np.clip(grey / max(np.percentile(grey, 99.8), 1e-3), 0, 1).astype(np.float32)
    style = rng.integers(3)
    if style == 0:  # grey
        image = np.repeat(grey[..., None], 3, axis=2)
    elif style == 1:  # one fluorescence colour
        tint = rng.dirichlet(np.ones(3) * 0.5).astype(np.float32)
        image = grey[..., None] * (tint / tint.max())
    else:  # stain-like: dark objects on a light background
        stain = rng.uniform(0.2, 0.9, 3).astype(np.float32)
        image = 1 - grey[..., None] * stain
    return image.astype(np.float32), labels


def _stack_scene(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    r_mean = rng.uniform(4, 18)  # in-plane radius, pixels
    z_ratio = rng.uniform(0.35, 1.0)  # z radius (slices) per in-plane radius: anisotropy
    c_mean = max(r_mean * z_ratio, 1.0)
    sigma_xy = rng.uniform(0.5, 2.0)
    sigma_z = rng.uniform(0.3, 1.2) * c_mean  # out-of-focus light reaches nearby slices
    half = int(np.ceil(c_mean * 1.4 + 2.5 * sigma_z))  # slab of slices rendered around z=0
    depth = 2 * half + 1
    volume = np.zeros((depth, h, w), np.float32)
    labels = np.zeros(shape, np.int32)
    fill = rng.uniform(0.25, 0.55)  # fraction of the slab's volume inside nuclei
    n = int(np.clip(fill * h * w * depth / (4 / 3 * np.pi * r_mean**2 * c_mean), 3, 400))
    yy0, xx0 = np.mgrid[0:h, 0:w].astype(np.float32)
    centres = np.full((n, 3), np.inf, np.float32)  # (z/c, y/r, x/r) of the nuclei so far
    for k in range(1, n + 1):
        r = r_mean * rng.uniform(0.7, 1.3)
        c = c_mean * rng.uniform(0.7, 1.3)
        cz = rng.uniform(-half, half)
        cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
        here = np.array([cz / c_mean, cy / r_mean, cx / r_mean], np.float32)
        # nuclei push each other aside: only slight overlaps (touching is at distance 2)
        if np.sqrt(((centres[:k] - here) ** 2).sum(axis=1)).min(initial=np.inf) < 1.6:
            continue
        centres[k - 1] = here
        y0, y1 = int(max(cy - 1.5 * r, 0)), int(min(cy + 1.5 * r + 1, h))
        x0, x1 = int(max(cx - 1.5 * r, 0)), int(min(cx + 1.5 * r + 1, w))
        if y1 <= y0 or x1 <= x0:
            continue
        dy, dx = yy0[y0:y1, x0:x1] - cy, xx0[y0:y1, x0:x1] - cx
        t = rng.uniform(0, np.pi)
        u = dy * np.cos(t) + dx * np.sin(t)
        v = (-dy * np.sin(t) + dx * np.cos(t)) / rng.uniform(0.6, 1.0)
        angle = np.arctan2(v, u)
        wobble = 1 + sum(
            rng.uniform(0, 0.1) * np.cos(j * angle + rng.uniform(0, 6.3)) for j in range(2, 5)
        )
        radial = np.hypot(u, v) / (r * wobble)  # 1 on the nucleus's widest outline
        brightness = rng.uniform(0.35, 1.0)
        texture = 1 + rng.uniform(0, 0.5) * (_smooth_noise(rng, radial.shape, 3) - 0.5)
        for z in range(max(int(np.floor(cz - c)), -half), min(int(np.ceil(cz + c)), half) + 1):
            scale = 1 - ((z - cz) / c) ** 2
            if scale <= 0:
                continue
            inside = radial <= np.sqrt(scale)
            volume[z + half, y0:y1, x0:x1][inside] = (brightness * texture)[inside]
            if z == 0:
                labels[y0:y1, x0:x1][inside] = k
    volume = ndimage.gaussian_filter(volume, (sigma_z, sigma_xy, sigma_xy), mode="constant")
    signal = volume[half]
    background = rng.uniform(0.05, 0.3) * _smooth_noise(rng, shape, int(rng.integers(2, 6)))
    grey = signal + background
    grey = _camera_noise(rng, grey, (10, 200), 0.05)
    lo, hi = np.percentile(grey, [0.5, 99.8])
    grey = np.clip((grey - lo) / max(hi - lo, 1e-3), 0, 1).astype(np.float32)
    if rng.random() < 0.7:
        image = np.repeat(grey[..., None], 3, axis=2)
    else:
        tint = rng.dirichlet(np.ones(3) * 0.5).astype(np.float32)
        image = grey[..., None] * (tint / tint.max())
    return image.astype(np.float32), labels


_SCENES = {"shapes": _shapes_scene, "cells": _cells_scene, "stack": _stack_scene}
#: scene kinds of :func:`synthetic_scene`
SCENE_KINDS = tuple(_SCENES)


def synthetic_scene(
    rng: np.random.Generator, size: tuple[int, int] = (320, 320), kind: str = "shapes"
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic image and its instance labels.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness (the same state gives the same scene).
    size : (int, int)
        ``(H, W)`` of the image.
    kind : {"shapes", "cells", "stack"}
        Scene type (see the module docstring).

    Returns
    -------
    image : np.ndarray
        ``(H, W, 3)`` float32 RGB in ``[0, 1]``.
    labels : np.ndarray
        ``(H, W)`` int32 instance labels (0 background; ids need not be consecutive).
    """
    if kind not in _SCENES:
        raise ValueError(f"kind must be one of {', '.join(map(repr, SCENE_KINDS))}, not {kind!r}")
    image, labels = _SCENES[kind](rng, tuple(size))
    return np.clip(image, 0, 1).astype(np.float32), labels


def synthetic_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (320, 320),
    kind: str | None = None,
    min_area: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic image and the mask of one of its objects.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness (the same state gives the same sample).
    size : (int, int)
        ``(H, W)`` of the image.
    kind : {"shapes", "cells", "stack"} or None
        Scene type; ``None`` picks shapes (60 %) or cells (40 %).
    min_area : int
        Smallest visible object area, in pixels, that may be chosen as the target.

    Returns
    -------
    image : np.ndarray
        ``(H, W, 3)`` float32 RGB in ``[0, 1]``.
    mask : np.ndarray
        ``(H, W)`` bool, the target object.
    """
    if kind is None:
        kind = "shapes" if rng.random() < 0.6 else "cells"
    for _ in range(20):
        image, labels = synthetic_scene(rng, size, kind)
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        ok = ids[counts >= min_area]
        if len(ok):
            return image, labels == ok[rng.integers(len(ok))]
    raise RuntimeError("could not draw a synthetic object large enough")  # pragma: no cover
