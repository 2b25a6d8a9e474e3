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

:class:`ImageSource` holds an image for the predictor in its compact form (a copy of the
user's integer pixels, or float32 for float images, never the 12 bytes per pixel of the
network's float RGB) and makes the network input of one crop at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageSource",
    "intensity_window",
    "network_input",
    "reflect_indices",
    "to_unit_rgb",
]

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
    return _unit_channels_first(image, intensity_window(image, contrast_limits))


def intensity_window(
    image: np.ndarray, contrast_limits: Sequence[float] | None = None
) -> tuple[float, float] | None:
    """The intensity window ``(low, high)`` that is mapped to ``[0, 1]``.

    Parameters
    ----------
    image : numpy.ndarray
        Any shape (an image, a stack); any numeric dtype.
    contrast_limits : (float, float), optional
        Used as given.

    Returns
    -------
    (float, float) or None
        ``contrast_limits``, else the 0.5 and 99.5 percentiles of the finite values (a
        regular subsample of large arrays); ``None`` for uint8 and bool, which have exact
        rules.
    """
    if contrast_limits is not None:
        lo, hi = (float(v) for v in contrast_limits)
        return lo, hi
    if image.dtype in (np.uint8, np.bool_):
        return None
    data = image
    if data.size > _PERCENTILE_SAMPLE:  # a regular subsample estimates the percentiles
        step = int(np.ceil(np.sqrt(data.size / _PERCENTILE_SAMPLE)))
        data = data[::step, ::step]
    # float64 stays float64 here: values beyond float32's range (~3.4e38) would become Inf
    data = data.astype(np.float64 if data.dtype == np.float64 else np.float32, copy=False)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:  # flat image: keep it flat, mid-grey if non-zero
        lo, hi = float(finite.min()), float(finite.min()) + 1.0
    return float(lo), float(hi)


# pixels used to estimate the percentiles of large images
_PERCENTILE_SAMPLE = 1 << 22


def _unit_channels_first(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """``(h, w)`` or ``(h, w, 3)`` pixels -> ``(3, h, w)`` float32 in ``[0, 1]``."""
    if window is not None:
        out = _scale(image, *window)
    elif image.dtype == np.uint8:
        out = image.astype(np.float32) / 255.0
    else:  # bool
        out = image.astype(np.float32)
    if out.ndim == 2:
        out = np.repeat(out[None], 3, axis=0)
    else:
        out = np.ascontiguousarray(np.moveaxis(out, -1, 0))
    return out.astype(np.float32, copy=False)


def _scale(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    if data.dtype == np.float64:  # scaled before narrowing: no overflow to Inf
        with np.errstate(over="ignore", invalid="ignore"):
            out = ((data - lo) / span).astype(np.float32)
    else:
        span32 = np.float32(span)
        if not (np.isfinite(span32) and span32 > 0):  # a span too small for float32
            span32 = np.float32(1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            out = (data.astype(np.float32) - np.float32(lo)) / span32
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


class ImageSource:
    """An image kept compactly, from which the network input of any crop is made.

    The pixels are copied once (so later edits of the caller's array change nothing):
    uint8, bool and 8/16-bit integer images as they are, other dtypes as float32; RGBA
    loses its alpha. The intensity window (see :func:`to_unit_rgb`) is fixed when the
    source is made, so every crop is normalised alike.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, any numeric dtype.
    contrast_limits : (low, high), optional
        Intensity window mapped to ``[0, 1]``.
    normalization : {"imagenet", "unit"}
        What the network expects (:func:`network_input`).
    """

    # above this many source pixels per view pixel, views sample the pixels they need
    # instead of converting the whole crop
    _GATHER_RATIO = 4

    def __init__(
        self,
        image: np.ndarray,
        contrast_limits: Sequence[float] | None = None,
        normalization: str = "imagenet",
    ):
        image = np.asarray(image)
        _check_layout(image)
        if normalization not in ("imagenet", "unit"):
            raise ValueError(f"unknown input normalization {normalization!r}")
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        self.window = intensity_window(image, contrast_limits)
        if image.dtype in (np.uint8, np.bool_, np.int8, np.uint16, np.int16):
            self.pixels = np.array(image, order="C")
        elif image.dtype == np.float64 and self.window is not None:
            # float64 is kept scaled to [0, 1] in float32: half the memory, and values
            # beyond float32's range survive; the window becomes the identity
            self.pixels = np.ascontiguousarray(_scale(image, *self.window))
            self.window = (0.0, 1.0)
        else:
            self.pixels = np.array(image, dtype=np.float32, order="C")
        self.normalization = normalization

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    def view(self, roi: tuple[int, int, int, int], size: tuple[int, int]):
        """Network input of the crop ``roi`` resized to ``size``.

        Parameters
        ----------
        roi : (rmin, rmax, cmin, cmax)
            Inclusive pixel bounds of the crop. Bounds outside the image are allowed:
            the image is mirrored there (:func:`reflect_indices`).
        size : (h, w)
            Output size; bilinear resizing with ``align_corners=True``.

        Returns
        -------
        torch.Tensor
            ``(1, 3, h, w)`` float32 on the CPU.
        """
        from torch.nn import functional as F

        rows = reflect_indices(roi[0], roi[1], self.shape[0])
        cols = reflect_indices(roi[2], roi[3], self.shape[1])
        if rows.size * cols.size > self._GATHER_RATIO * size[0] * size[1]:
            return self._sampled_view(rows, cols, size)
        h, w = self.shape
        if roi[0] >= 0 and roi[1] < h and roi[2] >= 0 and roi[3] < w:
            crop = self.pixels[roi[0] : roi[1] + 1, roi[2] : roi[3] + 1]  # no copy
        else:
            crop = self.pixels[np.ix_(rows, cols)]
        x = network_input(_unit_channels_first(crop, self.window), self.normalization)
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return x

    def _sampled_view(self, rows: np.ndarray, cols: np.ndarray, size: tuple[int, int]):
        """Bilinear resizing that reads only the rows and columns it interpolates from
        (at most two per output row/column), so a huge crop is never converted whole;
        ``rows``/``cols`` are the crop's source indices."""
        import torch

        r_lo, r_hi, r_w = _bilinear_taps(rows.size, size[0])
        c_lo, c_hi, c_w = _bilinear_taps(cols.size, size[1])
        r_lo, r_hi, c_lo, c_hi = rows[r_lo], rows[r_hi], cols[c_lo], cols[c_hi]
        used_rows = np.union1d(r_lo, r_hi)
        used_cols = np.union1d(c_lo, c_hi)
        sub = self.pixels[used_rows][:, used_cols]
        x = network_input(_unit_channels_first(sub, self.window), self.normalization)[0]
        ri0, ri1 = np.searchsorted(used_rows, r_lo), np.searchsorted(used_rows, r_hi)
        ci0, ci1 = np.searchsorted(used_cols, c_lo), np.searchsorted(used_cols, c_hi)
        rw = torch.from_numpy(r_w).view(1, -1, 1)
        cw = torch.from_numpy(c_w).view(1, 1, -1)
        x = x[:, ri0] * (1 - rw) + x[:, ri1] * rw
        x = x[:, :, ci0] * (1 - cw) + x[:, :, ci1] * cw
        return x[None].contiguous()


def reflect_indices(start: int, stop: int, n: int) -> np.ndarray:
    """Source indices of the pixels ``start..stop`` (inclusive) of an axis of length ``n``,
    mirrored at the edges where they fall outside it (the edge pixel is not repeated, as
    ``numpy.pad(mode="reflect")``: index -1 reads 1, index ``n`` reads ``n - 2``).

    Returns
    -------
    numpy.ndarray
        ``(stop - start + 1,)`` int64, each in ``[0, n)``.
    """
    idx = np.arange(start, stop + 1, dtype=np.int64)
    if n == 1:
        return np.zeros_like(idx)
    if start >= 0 and stop < n:
        return idx
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx < n, idx, period - idx)


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (low, high) and weights of ``align_corners=True`` resizing."""
    if n_out == 1:
        pos = np.zeros(1)
    else:
        pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)
