"""Turning user images of any dtype and layout into network input.

A user image is ``(H, W)`` (grey), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA, alpha
dropped), of any numeric dtype. It becomes ``(3, H, W)`` float32 in ``[0, 1]``:

* ``uint8`` is divided by 255 (what the official models were trained on);
* anything else is scaled by robust percentiles (0.5 and 99.5 over finite pixels) unless
  explicit ``contrast_limits`` are given (napari's layer contrast limits: what the user
  sees is what the model sees);
* NaN becomes 0 (the darkest value), +/-Inf are clipped;
* grey images are repeated into three channels.

The networks then want either ImageNet mean/std normalisation (``"imagenet"``) or the
``[0, 1]`` image (``"unit"``), see :func:`network_input`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "network_input", "to_unit_rgb"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_layout(image: np.ndarray) -> None:
    if image.ndim == 2:
        ok = True
    elif image.ndim == 3:
        ok = image.shape[2] in (3, 4)
    else:
        ok = False
    if not ok:
        raise ValueError(
            f"expected a (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA image, got shape "
            f"{image.shape}; for stacks, pass one 2D slice"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"the image is empty (shape {image.shape})")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_):
        raise ValueError(f"the image has a non-numeric dtype {image.dtype}")
    if np.iscomplexobj(image):
        raise ValueError("complex images are not supported; pass abs() or real part")


def to_unit_rgb(image: np.ndarray, contrast_limits: Sequence[float] | None = None) -> np.ndarray:
    """Convert a user image to ``(3, H, W)`` float32 RGB in ``[0, 1]``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, any numeric dtype.
    contrast_limits : (low, high), optional
        Map ``low`` to 0 and ``high`` to 1 (clipped); overrides the dtype rules.

    Returns
    -------
    numpy.ndarray
        ``(3, H, W)`` float32, channel order RGB.
    """
    image = np.asarray(image)
    _check_layout(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if contrast_limits is not None:
        lo, hi = (float(v) for v in contrast_limits)
        out = _scale(image, lo, hi)
    elif image.dtype == np.uint8:
        out = image.astype(np.float32) / 255.0
    elif image.dtype == np.bool_:
        out = image.astype(np.float32)
    else:
        data = image.astype(np.float32, copy=False)
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = np.percentile(finite, [0.5, 99.5])
            if hi <= lo:  # flat image: keep it flat, mid-grey if non-zero
                lo, hi = float(finite.min()), float(finite.min()) + 1.0
        out = _scale(data, float(lo), float(hi))
    if out.ndim == 2:
        out = np.repeat(out[None], 3, axis=0)
    else:
        out = np.ascontiguousarray(np.moveaxis(out, -1, 0))
    return out.astype(np.float32, copy=False)


def _scale(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    out = (data.astype(np.float32) - np.float32(lo)) / np.float32(span)
    out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


def network_input(unit_rgb: np.ndarray, normalization: str):
    """``(3, H, W)`` unit RGB -> ``(1, 3, H, W)`` float32 tensor as the network expects.

    Parameters
    ----------
    normalization : {"imagenet", "unit"}
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(unit_rgb, dtype=np.float32))[None]
    if normalization == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        x = (x - mean) / std
    elif normalization != "unit":
        raise ValueError(f"unknown input normalization {normalization!r}")
    return x
