"""Propagation of an object through a stack (``napari_fbrs.propagate``) on synthetic stacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_fbrs as nf
from napari_fbrs.core.propagation import clicks_from_mask
from napari_fbrs.core.propagation_settings import check_setting, setting_problem


class ComponentPredictor:
    """Stand-in predictor: the bright connected component under the positive clicks.

    Records the images and clicks it is given, so tests can check what propagation asks.
    """

    def __init__(self):
        self.images, self.clicks, self.limits, self.priors = [], [], [], []

    def set_image(self, image, contrast_limits=None):
        self.images.append(np.asarray(image))
        self.limits.append(contrast_limits)
        self.clicks.append([])
        self._mask = np.zeros(image.shape[:2], bool)
        self.priors.append(None)

    def set_prior(self, prior):
        self.priors[-1] = None if prior is None else np.asarray(prior).copy()

    def add_click(self, y, x, positive=True):
        self.clicks[-1].append((y, x, positive))
        image = self.images[-1]
        grey = image.mean(axis=-1) if image.ndim == 3 else image
        comps, _ = ndi.label(grey > 0.5 * grey.max() if grey.max() > 0 else grey > 0)
        pos = [comps[int(cy), int(cx)] for cy, cx, p in self.clicks[-1] if p]
        self._mask = np.isin(comps, [c for c in pos if c > 0])
        return self._mask.astype(np.float32)

    @property
    def mask(self):
        return self._mask


def _ball_stack(n=11, size=40, radius=9, centre=5):
    """A ball of bright pixels centred on slice ``centre``; other slices dark.

    Consecutive slices overlap with IoU >= 0.39 (the smallest at the ball's poles), so the
    tests use ``stop_iou=0.3`` where the whole ball must be reached.
    """
    zz, yy, xx = np.mgrid[:n, :size, :size]
    r2 = (zz - centre) ** 2 * 4 + (yy - 20) ** 2 + (xx - 20) ** 2
    return (r2 <= radius**2).astype(np.uint16) * 1000


def test_propagates_both_ways_until_the_object_vanishes():
    vol = _ball_stack()
    gt = vol > 0
    fake = ComponentPredictor()
    out = nf.propagate(fake, vol, 5, gt[5], stop_iou=0.3)
    assert out.shape == vol.shape and out.dtype == bool
    np.testing.assert_array_equal(out, gt)
    assert all(p is None for p in fake.priors)  # no prior unless asked
    fake = ComponentPredictor()
    nf.propagate(fake, vol, 5, gt[5], stop_iou=0.3, use_prior=True)
    # each slice gets the mask of the slice it was reached from as its prior
    np.testing.assert_array_equal(fake.priors[0], gt[5])  # slice 6, from 5
    np.testing.assert_array_equal(fake.priors[1], gt[6])  # slice 7, from 6


@pytest.mark.parametrize(("direction", "slices"), [(1, range(5, 10)), (-1, range(1, 6))])
def test_one_direction_only(direction, slices):
    vol = _ball_stack()
    out = nf.propagate(ComponentPredictor(), vol, 5, vol[5] > 0, direction=direction, stop_iou=0.3)
    assert sorted(np.flatnonzero(out.any(axis=(1, 2)))) == list(slices)


def test_stop_slices_and_stop_iou():
    vol = _ball_stack()
    out = nf.propagate(ComponentPredictor(), vol, 5, vol[5] > 0, stop_slices={7}, stop_iou=0.3)
    assert list(np.flatnonzero(out.any(axis=(1, 2)))) == [1, 2, 3, 4, 5, 6]
    # an object that jumps sideways between slices fails the IoU test and stops there
    jumpy = _ball_stack()
    jumpy[7] = np.roll(jumpy[7], 14, axis=1)
    out = nf.propagate(ComponentPredictor(), jumpy, 5, jumpy[5] > 0, direction=1, stop_iou=0.5)
    assert list(np.flatnonzero(out.any(axis=(1, 2)))) == [5, 6]


def test_other_axis_rgb_slices_contrast_limits_progress_and_cancel():
    vol = np.moveaxis(_ball_stack(), 0, 1)  # (y, z, x): walk along axis 1
    rgb = np.repeat(vol[..., None], 3, axis=-1)
    seen = []
    pred = ComponentPredictor()
    out = nf.propagate(
        pred,
        rgb,
        5,
        rgb[:, 5, :, 0] > 0,
        axis=1,
        contrast_limits=(0, 1000),
        stop_iou=0.3,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert out.shape == vol.shape
    np.testing.assert_array_equal(out, vol > 0)
    assert pred.images[0].shape == (40, 40, 3) and pred.limits[0] == (0, 1000)
    assert seen[0] == (1, 10) and seen[-1][0] == len(pred.images)
    calls = []
    out = nf.propagate(
        ComponentPredictor(),
        vol,
        5,
        vol[:, 5] > 0,
        axis=1,
        cancel=lambda: calls.append(1) or len(calls) > 2,
    )
    assert out.any(axis=(0, 2)).sum() == 3  # start slice plus the two before cancelling


def test_lazy_volume_is_read_slice_by_slice():
    da = pytest.importorskip("dask.array")
    vol = _ball_stack()
    lazy = da.from_array(vol, chunks=(1, 40, 40))
    out = nf.propagate(ComponentPredictor(), lazy, 5, vol[5] > 0, stop_iou=0.3)
    np.testing.assert_array_equal(out, vol > 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"z": 20}, "outside the stack"),
        ({"direction": 2}, "direction must be"),
        ({"mask": np.zeros((40, 40), bool)}, "empty"),
        ({"mask": np.ones((10, 10), bool)}, "does not match"),
        ({"regrowth": 0.0}, "regrowth must be positive"),
        ({"min_contrast": 1.5}, r"min_contrast must lie in \(0, 1\]"),
    ],
)
def test_bad_arguments_are_explained(kwargs, message):
    vol = _ball_stack()
    args = {"z": 5, "mask": vol[5] > 0} | kwargs
    with pytest.raises(ValueError, match=message):
        nf.propagate(ComponentPredictor(), vol, args.pop("z"), args.pop("mask"), **args)


@pytest.mark.parametrize(
    ("name", "valid", "invalid", "requirement"),
    [
        ("direction", [-1, 0, 1], [2, -2, 0.5], "must be -1, 0 or +1"),
        ("stop_iou", [0.0, 0.5, 1.0], [-0.01, 1.01, math.nan], "must lie in [0, 1]"),
        ("regrowth", [1e-9, 1.2, 1e9], [0.0, -1.0, math.inf, math.nan], "must be positive"),
        ("min_contrast", [1e-9, 0.75, 1.0], [0.0, 1.5, math.nan], "must lie in (0, 1]"),
    ],
)
def test_each_setting_has_one_range_and_one_wording(name, valid, invalid, requirement):
    for value in valid:
        assert setting_problem(name, value) is None
        check_setting(name, value)
    for value in invalid:
        assert setting_problem(name, value) == requirement
        with pytest.raises(ValueError) as info:
            check_setting(name, value, label=f"objects[0].{name}")
        assert str(info.value) == f"objects[0].{name} {requirement}, got {value}"


def test_extra_positive_clicks_lie_inside_towards_the_edges():
    mask = np.zeros((30, 30), bool)
    mask[5:25, 8:20] = True
    clicks = clicks_from_mask(mask, n_negative=0, n_extra_positive=4)
    assert len(clicks) == 5 and all(c.positive and mask[int(c.y), int(c.x)] for c in clicks)
    first = clicks[0]
    # right, left, down, up of the first click, each half-way to the mask's edge
    assert clicks[1].y == first.y and clicks[1].x > first.x
    assert clicks[2].y == first.y and clicks[2].x < first.x
    assert clicks[3].x == first.x and clicks[3].y > first.y
    assert clicks[4].x == first.x and clicks[4].y < first.y
    tiny = np.zeros((9, 9), bool)
    tiny[4, 4] = True  # no room for more: only the first click
    assert len(clicks_from_mask(tiny, n_negative=0, n_extra_positive=4)) == 1
    assert len(clicks_from_mask(mask, n_negative=0, n_extra_positive=2)) == 3


def test_regrowth_stops_where_a_touching_neighbour_begins():
    # two balls stacked along z, centred on the same pixel: A around slice 5, B around 13;
    # their cross-sections shrink to one small disk at slice 9 and grow again after it
    zz, yy, xx = np.mgrid[:19, :40, :40]
    rho2 = (yy - 20) ** 2 + (xx - 20) ** 2
    a = (zz - 5) ** 2 * 4 + rho2 <= 81
    b = (zz - 13) ** 2 * 4 + rho2 <= 81
    vol = (a | b).astype(np.uint16) * 1000
    walked = nf.propagate(ComponentPredictor(), vol, 5, a[5], stop_iou=0.2)
    assert walked[12:].any()  # IoU alone follows the object into B
    out = nf.propagate(ComponentPredictor(), vol, 5, a[5], stop_iou=0.2, regrowth=0.1)
    np.testing.assert_array_equal(out[:10], a[:10])  # all of A, up to the narrow slice
    assert not out[10:].any()
    # started on the narrow slice itself, the area only grows at first: both balls are kept
    out = nf.propagate(ComponentPredictor(), vol, 9, a[9], stop_iou=0.2, regrowth=0.1)
    np.testing.assert_array_equal(out, a | b)


def test_min_contrast_stops_where_the_object_dims():
    vol = _ball_stack(n=11, radius=12, centre=5).astype(np.float32)  # radius 12: slices 0-10
    vol[8:] *= 0.3  # the same shape, much dimmer, from slice 8 on
    gt = vol > 0
    out = nf.propagate(ComponentPredictor(), vol, 5, gt[5], stop_iou=0.3)
    np.testing.assert_array_equal(out, gt)
    out = nf.propagate(ComponentPredictor(), vol, 5, gt[5], stop_iou=0.3, min_contrast=0.5)
    np.testing.assert_array_equal(out[:8], gt[:8])
    assert not out[8:].any()
    # a contrast window whose low end is the dim level: the dim slices have no contrast left
    out = nf.propagate(
        ComponentPredictor(), vol, 5, gt[5], stop_iou=0.3, min_contrast=0.1,
        contrast_limits=(300.0, 1000.0),
    )  # fmt: skip
    assert not out[8:].any() and out[:8].any()


def test_clicks_from_mask_inside_and_around():
    mask = np.zeros((50, 50), bool)
    mask[10:30, 15:35] = True
    clicks = clicks_from_mask(mask)
    assert clicks[0].positive and mask[int(clicks[0].y), int(clicks[0].x)]
    assert 15 <= clicks[0].y <= 24 and 20 <= clicks[0].x <= 29
    negs = [c for c in clicks if not c.positive]
    assert len(negs) == 4 and not any(mask[int(c.y), int(c.x)] for c in negs)
    # at the image border the clicks that would fall off are skipped
    edge = np.zeros((20, 20), bool)
    edge[0:8, 0:8] = True
    assert all(0 <= c.y < 20 and 0 <= c.x < 20 for c in clicks_from_mask(edge))
    assert len(clicks_from_mask(mask, n_negative=0)) == 1


def test_real_predictor_runs_through_a_stack():
    from napari_fbrs.core.testing import TinyNet

    vol = _ball_stack(n=5, size=32, radius=7, centre=2)
    p = nf.Predictor(TinyNet().eval(), mode="NoBRS", device="cpu", zoom_in=None)
    out = nf.propagate(p, vol, 2, vol[2] > 0, stop_iou=0.0, min_area_ratio=0.0)
    assert out.shape == vol.shape and out[2].sum() == (vol[2] > 0).sum()


def _threshold_oracle():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "threshold_oracle.py"
    spec = importlib.util.spec_from_file_location("threshold_oracle", path)
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    return oracle


def _touching_balls():
    zz, yy, xx = np.mgrid[0:16, 0:32, 0:48]
    left = (zz - 8) ** 2 + (yy - 16) ** 2 + (xx - 14) ** 2 <= 36
    right = (zz - 8) ** 2 + (yy - 16) ** 2 + (xx - 26) ** 2 <= 36  # overlaps `left`
    right &= ~left
    return left, right


def test_threshold_oracle_merges_touching_objects():
    """benchmarks/threshold_oracle.py: exact for an isolated blob, < 1 for touching ones."""
    oracle = _threshold_oracle()
    left, right = _touching_balls()
    alone = left.astype(np.float32)
    assert oracle.best_threshold_iou(alone, left) == 1.0
    touching = (left | right).astype(np.float32)  # same brightness: no level separates them
    iou = oracle.best_threshold_iou(touching, left)
    # measured inside the object's box padded by 4 px: x 4..24 of the merged blob
    box = (slice(None), slice(None), slice(4, 25))
    assert iou == pytest.approx(left.sum() / (left | right)[box].sum())
    assert iou < 0.8


def test_threshold_oracle_splits_touching_objects_by_shape():
    """The split oracles: true seeds inside each object, a shape split that separates them."""
    oracle = _threshold_oracle()
    left, right = _touching_balls()
    labels = left.astype(np.int32) + 2 * right.astype(np.int32)
    seeds = oracle.interior_seeds(labels)
    assert sorted(np.unique(seeds).tolist()) == [0, 1, 2] and (seeds > 0).sum() == 2
    assert labels[seeds == 1].tolist() == [1] and labels[seeds == 2].tolist() == [2]

    from scipy import ndimage

    depth = ndimage.distance_transform_edt(labels > 0)
    ious = oracle.seeded_split_ious(labels, seeds, -depth)
    assert set(ious) == {1, 2} and min(ious.values()) > 0.9
    flat = oracle.seeded_split_ious(labels, seeds, np.zeros(labels.shape))
    assert flat.keys() == ious.keys()

    image = (labels > 0).astype(np.float32)
    assert oracle.best_foreground_iou(image, labels > 0) == 1.0
    assert oracle.best_foreground_iou(1.0 - image, labels > 0) < 0.5
    # a level gives the merged pair; the split from the true seeds divides it again
    assert oracle.best_threshold_split_iou(image, labels, seeds, 1) > 0.9
    assert oracle.best_threshold_iou(image, left) < 0.8
