"""Snapping a bright object's mask to its intensity edge (``napari_fbrs.core.snap``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_fbrs as nf
from napari_fbrs.core.snap import snap_to_intensity


def _blurred_disk(size=48, cy=24, cx=24, radius=10, sigma=1.5, noise=0.02, seed=0):
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(disk.astype(np.float64), sigma) + rng.normal(0, noise, disk.shape)
    return image * 1000 + 100, disk


def _iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def test_an_undersized_mask_grows_to_the_edge():
    image, disk = _blurred_disk()
    small = ndi.binary_erosion(disk, iterations=3)
    snapped = snap_to_intensity(image, small, level=0.4)
    assert _iou(small, disk) < 0.75
    assert _iou(snapped, disk) > 0.9
    assert snapped.dtype == bool and snapped.shape == disk.shape
    # the level sets the edge: a higher level draws a smaller object
    assert snap_to_intensity(image, small, level=0.8).sum() < snapped.sum()


def test_growth_stops_within_grow_pixels_of_the_mask():
    # two touching blurred disks: snapping the left one must not swallow the right one
    left, a = _blurred_disk(size=64, cy=32, cx=20, radius=10)
    right, b = _blurred_disk(size=64, cy=32, cx=41, radius=10, seed=1)
    image = np.maximum(left, right)
    snapped = snap_to_intensity(image, a, level=0.3, grow=3)
    reach = ndi.binary_dilation(a, iterations=3)
    assert not (snapped & ~reach).any()
    assert (snapped & b).sum() < 0.2 * b.sum()


def test_masks_left_alone_when_there_is_nothing_to_snap_to():
    image, disk = _blurred_disk()
    empty = np.zeros_like(disk)
    assert not snap_to_intensity(image, empty).any()
    # a dark object on a bright background: not what the rule is for, the mask is kept
    np.testing.assert_array_equal(snap_to_intensity(-image, disk), disk)
    flat = np.full(disk.shape, 7.0)
    np.testing.assert_array_equal(snap_to_intensity(flat, disk), disk)
    with_nan = image.copy()
    with_nan[:5] = np.nan
    assert _iou(snap_to_intensity(with_nan, disk), disk) > 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": np.zeros((5, 5), bool)}, "same 2D shape"),
        ({"level": 1.0}, r"level must lie in \(0, 1\)"),
        ({"grow": -1}, "grow must be >= 0"),
    ],
)
def test_bad_arguments_are_explained(kwargs, message):
    image, disk = _blurred_disk()
    args = {"mask": disk} | kwargs
    with pytest.raises(ValueError, match=message):
        snap_to_intensity(image, **args)


class ShrinkingPredictor:
    """Stand-in predictor that finds the bright object under the click but draws it 3 px
    too small, like ``fbrs-lite`` on blurred nuclei."""

    def set_image(self, image, contrast_limits=None):
        self.image = np.asarray(image, dtype=np.float64)
        self._mask = np.zeros(self.image.shape, bool)

    def set_prior(self, prior):
        pass

    def add_click(self, y, x, positive=True):
        if positive:
            comps, _ = ndi.label(self.image > 0.5 * self.image.max())
            obj = comps == comps[int(y), int(x)]
            self._mask = ndi.binary_erosion(obj, iterations=3)
        return self._mask.astype(np.float32)

    @property
    def mask(self):
        return self._mask


def test_propagation_snaps_each_slice():
    zz, yy, xx = np.mgrid[:9, :48, :48]
    ball = (zz - 4) ** 2 * 2 + (yy - 24) ** 2 + (xx - 24) ** 2 <= 12**2
    volume = ndi.gaussian_filter(ball.astype(np.float64), (0, 1.5, 1.5)) * 1000 + 100
    plain = nf.propagate(ShrinkingPredictor(), volume, 4, ball[4], stop_iou=0.3)
    snapped = nf.propagate(ShrinkingPredictor(), volume, 4, ball[4], stop_iou=0.3, snap_level=0.4)
    assert _iou(snapped, ball) > _iou(plain, ball) + 0.1
    assert _iou(snapped, ball) > 0.85
    with pytest.raises(ValueError, match=r"snap_level must lie in \(0, 1\)"):
        nf.propagate(ShrinkingPredictor(), volume, 4, ball[4], snap_level=1.5)
