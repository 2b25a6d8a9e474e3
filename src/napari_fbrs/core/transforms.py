"""Geometric views of the image the network sees: ZoomIn crops and the longest-side limit.

A *view* is a region of interest ``(rmin, rmax, cmin, cmax)`` (inclusive pixel bounds in
the full image) resized to ``(h, w)``. Clicks map into a view and probabilities map back
to the full image; outside the view the probability is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from napari_fbrs.core.clicks import Click

#: smallest longer side of a whole-image view (smaller images are enlarged to it); the
#: benchmark images (GrabCut, Berkeley, DAVIS, SBD, the conformance fixtures) are larger
MIN_VIEW_SIZE = 256

#: ``first_click_crop="auto"`` zooms in when the object's crop side is at most this
#: fraction of the image's longer side
AUTO_CROP_MAX_FRACTION = 0.5

__all__ = ["ZoomIn", "Roi", "bbox_iou", "click_crop", "object_roi", "view_size", "clicks_to_view"]

Roi = tuple[int, int, int, int]  # rmin, rmax, cmin, cmax (inclusive)


@dataclass(frozen=True)
class ZoomIn:
    """Settings of the ZoomIn transform (f-BRS paper, section 4.3).

    After ``skip_clicks`` clicks, the network sees a crop around the current object
    (its bounding box with the positive clicks, expanded by ``expansion_ratio`` and at
    least ``min_crop_size`` pixels), resized so its longer side is ``target_size``. The crop
    is kept while every positive click lies inside it and the new object box overlaps it
    with IoU >= ``recompute_iou``.

    Parameters
    ----------
    target_size : int
        Longer side of the resized crop, in pixels.
    skip_clicks : int
        Number of first clicks predicted on the whole image.
    expansion_ratio : float
        Box expansion around the object.
    min_crop_size : int
        Smallest crop side, in image pixels.
    recompute_iou : float
        Recompute the crop when the object box overlaps the current crop less than this.
    prob_thresh : float
        Threshold that defines the current object for the crop (strictly greater). The
        reference uses 0.5 here whatever the predictor's own threshold (0.49).
    first_click_crop : int, "auto" or None
        How the first ``skip_clicks`` clicks are predicted when the first click is positive
        (an extension, not in the paper). ``None``: on the whole image, as the paper. An
        int: in a square crop of that side, in image pixels, centred on the first click;
        for small objects in large images, such as nuclei, a crop of a few object diameters
        lets the network see the object at a useful size from the first click (an image
        smaller than the crop is seen whole, resized to ``target_size``). ``"auto"``: on
        the whole image, then, when the object found there is small (its ZoomIn crop at
        most half the image's longer side, :meth:`small_object_roi`) or nothing is found,
        once more in that crop (``min_crop_size`` around the click when nothing was
        found); costs a second network pass on those clicks only.
    beyond_border : bool
        Let crops reach past the image border (an extension, not in the paper; off: crops
        are clamped to the image, as the paper, or moved inside it). The network sees the
        image mirrored there and the prediction is kept inside the image only. An object
        cut by the border then stays at the centre of its crop, at the scale of the others,
        instead of being pushed to the crop's edge. Along an axis where the crop would be
        at least as long as the image, it is clamped to the image, as without this option.
    """

    target_size: int = 400
    skip_clicks: int = 1
    expansion_ratio: float = 1.4
    min_crop_size: int = 200
    recompute_iou: float = 0.5
    prob_thresh: float = 0.5
    first_click_crop: int | Literal["auto"] | None = None
    beyond_border: bool = False

    def __post_init__(self) -> None:
        if self.target_size < 8:
            raise ValueError(f"ZoomIn target_size must be >= 8, got {self.target_size}")
        if self.expansion_ratio < 1:
            raise ValueError(f"ZoomIn expansion_ratio must be >= 1, got {self.expansion_ratio}")
        crop = self.first_click_crop
        if isinstance(crop, str) and crop != "auto":
            raise ValueError(
                f"ZoomIn first_click_crop must be an int, 'auto' or None, got {crop!r}"
            )
        if isinstance(crop, int | float) and crop < 8:
            raise ValueError(f"ZoomIn first_click_crop must be >= 8 pixels or None, got {crop}")

    def next_roi(
        self,
        roi: Roi | None,
        clicks: Sequence[Click],
        prev_prob: np.ndarray | None,
        shape: tuple[int, int] | None = None,
    ) -> tuple[Roi | None, bool]:
        """The crop for the next prediction.

        Parameters
        ----------
        roi : Roi or None
            The crop used so far (``None``: whole image).
        clicks : sequence of Click
            All clicks, full-image coordinates.
        prev_prob : numpy.ndarray or None
            ``(H, W)`` previous probability map.
        shape : (H, W), optional
            Image size; needed for ``first_click_crop``.

        Returns
        -------
        (roi, changed)
            The crop to use (``None``: whole image) and whether it differs from ``roi``.
        """
        if len(clicks) <= self.skip_clicks:
            crop = self.first_click_crop
            if crop is None or crop == "auto" or shape is None or not clicks[0].positive:
                return roi, False  # "auto" is the predictor's two-pass job
            first = click_crop(clicks[0], int(crop), shape, self.beyond_border)
            return first, first != roi
        current = None
        if prev_prob is not None:
            mask = prev_prob > self.prob_thresh
            if mask.any():
                current = object_roi(
                    mask, clicks, self.expansion_ratio, self.min_crop_size, self.beyond_border
                )
        if current is None:
            # Nothing is above the threshold: keep the current view (the reference keeps its
            # crop box too; it then squeezes a whole-image prediction into that box, which
            # we do not reproduce).
            return roi, False
        if (
            roi is None
            or not _positive_clicks_inside(roi, clicks)
            or bbox_iou(current, roi) < self.recompute_iou
        ):
            return current, True
        return roi, False

    def small_object_roi(self, prob: np.ndarray, clicks: Sequence[Click]) -> Roi | None:
        """The crop ``first_click_crop="auto"`` zooms into after a whole-image prediction.

        Parameters
        ----------
        prob : numpy.ndarray
            ``(H, W)`` probabilities predicted on the whole image.
        clicks : sequence of Click
            The clicks so far, full-image ``(y, x)`` coordinates.

        Returns
        -------
        Roi or None
            The crop ZoomIn would take around the object (as after ``skip_clicks``); when
            nothing is above the threshold, the ``min_crop_size`` crop around the clicks (an
            object too small to be seen in the whole image). ``None`` when the first click is
            negative or the crop's longer side exceeds :data:`AUTO_CROP_MAX_FRACTION` of the
            image's.
        """
        if not clicks or not clicks[0].positive:
            return None
        mask = prob > self.prob_thresh
        if not mask.any():
            # the clicks alone then span the box, and the minimum crop size sets its side
            mask = np.zeros(prob.shape, dtype=bool)
            first = clicks[0]
            mask[int(round(first.y)), int(round(first.x))] = True
        roi = object_roi(mask, clicks, self.expansion_ratio, self.min_crop_size, self.beyond_border)
        side = max(roi[1] - roi[0] + 1, roi[3] - roi[2] + 1)
        if side > AUTO_CROP_MAX_FRACTION * max(prob.shape):
            return None
        return roi


def click_crop(click: Click, side: int, shape: tuple[int, int], beyond_border: bool = False) -> Roi:
    """A ``side`` x ``side`` crop centred on ``click``, moved inside an image of ``shape``
    ``(H, W)`` unless ``beyond_border`` (cut to the image along an axis where the image is
    smaller, either way)."""
    out = []
    for centre, n in ((click.y, shape[0]), (click.x, shape[1])):
        length = min(side, n)
        start = int(round(centre)) - length // 2
        if not beyond_border or length == n:
            start = min(max(start, 0), n - length)
        out += [start, start + length - 1]
    return (out[0], out[1], out[2], out[3])


def _positive_clicks_inside(roi: Roi, clicks: Sequence[Click]) -> bool:
    for c in clicks:
        if c.positive and not (roi[0] <= c.y < roi[1] and roi[2] <= c.x < roi[3]):
            return False
    return True


def object_roi(
    mask: np.ndarray,
    clicks: Sequence[Click],
    expansion_ratio: float,
    min_crop_size: int,
    beyond_border: bool = False,
) -> Roi:
    """Expanded bounding box of ``mask`` (``(H, W)`` bool) plus the positive clicks,
    clamped to the image unless ``beyond_border``; even then, an axis along which the box
    is at least as long as the image is clamped (the crop never shows the image twice)."""
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    rmin, rmax, cmin, cmax = rows[0], rows[-1], cols[0], cols[-1]
    for c in clicks:
        if c.positive:
            y, x = int(c.y), int(c.x)
            rmin, rmax, cmin, cmax = min(rmin, y), max(rmax, y), min(cmin, x), max(cmax, x)
    rc, cc = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    height = max(expansion_ratio * (rmax - rmin + 1), min_crop_size)
    width = max(expansion_ratio * (cmax - cmin + 1), min_crop_size)
    box = (
        int(round(rc - 0.5 * height)),
        int(round(rc + 0.5 * height)),
        int(round(cc - 0.5 * width)),
        int(round(cc + 0.5 * width)),
    )
    rows, cols = (box[0], box[1]), (box[2], box[3])
    # past the border only along an axis the crop does not fill: a crop wider than the
    # image would show its mirror images side by side
    if not beyond_border or rows[1] - rows[0] + 1 >= h:
        rows = (max(0, rows[0]), min(h - 1, rows[1]))
    if not beyond_border or cols[1] - cols[0] + 1 >= w:
        cols = (max(0, cols[0]), min(w - 1, cols[1]))
    return (rows[0], rows[1], cols[0], cols[1])


def _segment_iou(a0: int, a1: int, b0: int, b1: int) -> float:
    inter = max(0, min(a1, b1) - max(a0, b0) + 1)
    union = max(1e-6, max(a1, b1) - min(a0, b0) + 1)
    return inter / union


def bbox_iou(a: Roi, b: Roi) -> float:
    """IoU of two inclusive boxes, computed as the product of the per-axis IoUs."""
    return _segment_iou(a[0], a[1], b[0], b[1]) * _segment_iou(a[2], a[3], b[2], b[3])


def view_size(
    roi: Roi,
    zoomed: bool,
    target_size: int | None,
    max_size: int | None,
    min_size: int | None = None,
) -> tuple[int, int]:
    """Size ``(h, w)`` the network sees for ``roi``.

    A ZoomIn crop is resized so that its longer side is ``target_size``; any other view
    whose longer side is below ``min_size`` is enlarged to it; any view whose longer side
    exceeds ``max_size`` is shrunk to it.
    """
    h, w = roi[1] - roi[0] + 1, roi[3] - roi[2] + 1
    if zoomed and target_size is not None:
        scale = target_size / max(h, w)
        # at least one pixel: a 1-pixel-high crop of a thin image would round to 0
        h, w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    elif min_size is not None and max(h, w) < min_size:
        scale = min_size / max(h, w)
        h, w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if max_size is not None and max(h, w) > max_size:
        scale = max_size / max(h, w)
        h, w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    return h, w


def clicks_to_view(clicks: Sequence[Click], roi: Roi, size: tuple[int, int]) -> list[Click]:
    """Map full-image clicks into a view of ``roi`` resized to ``size``.

    Computed as ``size * (coordinate - min) / extent`` in that order (float64), as the
    reference does: the click disks of the BRS loss round these coordinates, so the last
    bit can matter.

    Parameters
    ----------
    clicks : sequence of Click
        Full-image ``(y, x)`` clicks.
    roi : Roi
        ``(rmin, rmax, cmin, cmax)``, inclusive.
    size : (int, int)
        ``(h, w)`` of the resized view.

    Returns
    -------
    list of Click
        The clicks in view pixels.
    """
    rmin, rmax, cmin, cmax = roi
    hh, ww = rmax - rmin + 1, cmax - cmin + 1
    return [
        Click(size[0] * (c.y - rmin) / hh, size[1] * (c.x - cmin) / ww, c.positive) for c in clicks
    ]
