"""The NoC protocol with fake predictors: where the simulated user clicks, when it stops."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fbrs.core.evaluation.datasets import Sample
from napari_fbrs.core.evaluation.metrics import noc, summarize
from napari_fbrs.core.evaluation.robot import error_depth, next_click
from napari_fbrs.core.evaluation.runner import (
    InteractivePredictor,
    evaluate_dataset,
    evaluate_object,
)


# ------------------------------------------------------------------------------ fakes
class FakePredictor:
    """Predicts ``mask_fn(clicks, shape)``; counts set_image/reset calls."""

    def __init__(self, mask_fn):
        self.mask_fn = mask_fn
        self.clicks: list[tuple[float, float, bool]] = []
        self.shape: tuple[int, int] | None = None
        self.set_image_calls = 0
        self.reset_calls = 0
        self._mask: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]
        self.set_image_calls += 1
        self.clicks = []

    def reset(self) -> None:
        self.reset_calls += 1
        self.clicks = []

    def add_click(self, y: float, x: float, positive: bool = True) -> np.ndarray:
        self.clicks.append((y, x, positive))
        self._mask = np.asarray(self.mask_fn(self.clicks, self.shape), dtype=bool)
        return self._mask.astype(np.float32)

    @property
    def mask(self) -> np.ndarray:
        return self._mask


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def disks_predictor(radius):
    """Union of disks around positive clicks minus disks around negative clicks."""

    def fn(clicks, shape):
        m = np.zeros(shape, bool)
        for y, x, pos in clicks:
            if pos:
                m |= disk(shape, y, x, radius)
        for y, x, pos in clicks:
            if not pos:
                m &= ~disk(shape, y, x, radius)
        return m

    return FakePredictor(fn)


def constant_predictor(mask):
    return FakePredictor(lambda clicks, shape: mask)


def sample(gt, ignore=None, name="obj", image=None):
    image = np.zeros(gt.shape, np.uint8) if image is None else image
    return Sample(image=image, gt=gt, ignore=ignore, name=name)


# ------------------------------------------------------------------------------ robot
def test_fake_predictor_satisfies_protocol():
    assert isinstance(constant_predictor(np.zeros((2, 2), bool)), InteractivePredictor)


def test_first_click_on_empty_prediction_is_most_interior_point():
    gt = disk((60, 80), 30, 45, 12)
    click = next_click(np.zeros_like(gt), gt)
    assert (click.y, click.x, click.positive) == (30, 45, True)


@pytest.mark.parametrize(
    "rows, cols, expected",
    [
        (slice(0, 5), slice(0, 5), (2, 2)),  # top-left corner
        (slice(35, 40), slice(25, 30), (37, 27)),  # bottom-right corner
        (slice(0, 40), slice(0, 15), (7, 7)),  # a band along the left border
    ],
)
def test_image_border_counts_as_boundary(rows, cols, expected):
    gt = np.zeros((40, 30), bool)
    gt[rows, cols] = True
    click = next_click(np.zeros_like(gt), gt)
    assert (click.y, click.x) == expected and click.positive


def test_error_depth_of_one_pixel_region_and_padding():
    region = np.zeros((5, 5), bool)
    region[0, 0] = True
    depth = error_depth(region)
    assert depth[0, 0] == 1.0 and depth.sum() == 1.0
    full = np.ones((3, 3), bool)
    assert error_depth(full)[1, 1] == 2.0 and error_depth(full)[0, 0] == 1.0


def test_negative_click_in_the_deeper_false_positive_region():
    gt = disk((60, 80), 20, 20, 6)
    pred = gt.copy()
    pred[30:55, 45:75] = True  # a large false object
    pred[20, 20] = False  # a one-pixel miss, shallower
    click = next_click(pred, gt)
    assert not click.positive
    assert 30 <= click.y < 55 and 45 <= click.x < 75
    assert (click.y, click.x) == (42, 57)  # first deepest pixel of the 25 x 30 block


def test_positive_click_in_the_deeper_miss():
    gt = np.zeros((50, 50), bool)
    gt[5:45, 5:45] = True
    pred = gt.copy()
    pred[10:30, 10:30] = False  # a 20 x 20 hole
    pred[0:3, 47:50] = True  # a small false corner
    click = next_click(pred, gt)
    assert click.positive and 10 <= click.y < 30 and 10 <= click.x < 30


def test_robot_ignores_ignored_pixels_and_returns_none_without_errors():
    gt = disk((40, 40), 20, 20, 8)
    band = disk((40, 40), 20, 20, 11) & ~disk((40, 40), 20, 20, 6)
    pred = disk((40, 40), 20, 20, 10)  # errors only inside the ignored band
    assert next_click(pred, gt, ignore=band) is None
    assert next_click(gt, gt) is None


def test_ignored_pixels_act_as_boundary():
    gt = np.zeros((30, 30), bool)
    gt[5:25, 5:25] = True
    ignore = np.zeros_like(gt)
    ignore[5:25, 5:15] = True  # the left half is unknown
    click = next_click(np.zeros_like(gt), gt, ignore)
    assert not ignore[click.y, click.x]
    assert click.x == 19  # centre of the remaining 10-column strip (15..24), first in raster


def test_clicked_pixels_are_never_chosen_again():
    gt = np.zeros((10, 10), bool)
    gt[4, 4] = True
    clicked = np.zeros_like(gt)
    clicked[4, 4] = True
    assert next_click(np.zeros_like(gt), gt, clicked=clicked) is None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        next_click(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


# ------------------------------------------------------------------------------ runner
def test_perfect_first_click():
    gt = disk((50, 60), 25, 30, 10)
    result = evaluate_object(constant_predictor(gt), sample(gt))
    assert result.ious == [1.0]
    assert result.clicks == [(25, 30, True)]
    assert [noc(result.ious, t) for t in (0.8, 0.85, 0.9)] == [1, 1, 1]


def test_object_the_model_never_finds_spends_every_click_on_distinct_pixels():
    gt = disk((50, 60), 25, 30, 10)
    result = evaluate_object(constant_predictor(np.zeros_like(gt)), sample(gt), max_clicks=20)
    assert result.ious == [0.0] * 20
    assert all(pos for _, _, pos in result.clicks)
    assert len({(y, x) for y, x, _ in result.clicks}) == 20
    assert all(gt[y, x] for y, x, _ in result.clicks)
    summary = summarize([result.ious], max_clicks=20)
    assert summary["noc"] == {"80": 20.0, "85": 20.0, "90": 20.0}
    assert summary["over_max"] == {"85": 1, "90": 1}


def test_false_object_the_model_keeps_is_clicked_negatively_on_new_pixels():
    gt = disk((50, 60), 15, 15, 6)
    false_object = disk((50, 60), 35, 45, 9)
    pred = gt | false_object
    result = evaluate_object(constant_predictor(pred), sample(gt), max_clicks=6)
    assert len(result.clicks) == 6
    # the first click is made on the empty prediction: positive, at the object's centre
    assert result.clicks[0] == (15, 15, True)
    # then only the false object is wrong: negative clicks inside it, never twice the same
    assert not any(pos for _, _, pos in result.clicks[1:])
    assert all(false_object[y, x] for y, x, _ in result.clicks[1:])
    assert result.clicks[1][:2] == (35, 45)
    assert len({(y, x) for y, x, _ in result.clicks}) == 6


def test_three_pixel_object():
    gt = np.zeros((20, 20), bool)
    gt[10, 9:12] = True
    good = evaluate_object(constant_predictor(gt), sample(gt))
    assert good.ious == [1.0] and good.clicks[0][:2] in [(10, 9), (10, 10), (10, 11)]
    # a model that never finds it: the user runs out of pixels after three clicks
    bad = evaluate_object(constant_predictor(np.zeros_like(gt)), sample(gt), max_clicks=20)
    assert sorted((y, x) for y, x, _ in bad.clicks) == [(10, 9), (10, 10), (10, 11)]
    assert bad.ious == [0.0, 0.0, 0.0]
    assert noc(bad.ious, 0.85, 20) == 20


def test_ignore_band_counts_neither_way():
    gt = disk((60, 60), 30, 30, 12)
    band = disk((60, 60), 30, 30, 15) & ~disk((60, 60), 30, 30, 10)
    pred = disk((60, 60), 30, 30, 14)  # spills into the band only
    result = evaluate_object(constant_predictor(pred), sample(gt, ignore=band))
    assert result.ious == [1.0]


def test_stops_at_target_iou_and_clicks_correct_errors():
    gt = disk((80, 80), 40, 40, 20)
    result = evaluate_object(disks_predictor(8), sample(gt), max_clicks=20, target_iou=0.9)
    assert 1 < len(result.ious) <= 20
    # the curve stops at the first click reaching the target, or runs to the budget
    assert all(v < 0.9 for v in result.ious[:-1])
    assert result.ious[-1] >= 0.9 or len(result.ious) == 20
    # a positive click lands on the object, a negative one outside it
    for y, x, pos in result.clicks:
        assert gt[y, x] == pos
    assert len({(y, x) for y, x, _ in result.clicks}) == len(result.clicks)


def test_target_above_one_spends_every_click():
    gt = disk((30, 30), 15, 15, 6)
    result = evaluate_object(constant_predictor(gt), sample(gt), max_clicks=5, target_iou=1.01)
    # after the perfect first click no error is left: the curve stops there
    assert result.ious == [1.0]


def test_dataset_with_shared_image_sets_it_once_and_reports_progress():
    image = np.zeros((40, 40), np.uint16)
    objects = [disk((40, 40), 10, 10, 4), disk((40, 40), 30, 30, 5), disk((40, 40), 10, 30, 3)]
    samples = [sample(g, name=f"cells#{i}", image=image) for i, g in enumerate(objects, 1)]
    other = np.zeros((40, 40), np.uint16)
    samples.append(sample(objects[0], name="other#1", image=other))
    predictor = disks_predictor(4)
    calls = []
    result = evaluate_dataset(
        predictor,
        samples,
        dataset="cells",
        mode="fake",
        max_clicks=5,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert predictor.set_image_calls == 2 and predictor.reset_calls == 2
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [o.name for o in result.objects] == ["cells#1", "cells#2", "cells#3", "other#1"]
    assert result.num_clicks == sum(len(o.clicks) for o in result.objects)
    assert result.spc >= 0


def test_dataset_limit():
    gt = disk((20, 20), 10, 10, 4)
    samples = [sample(gt, name=str(i)) for i in range(5)]
    calls = []
    result = evaluate_dataset(
        constant_predictor(gt), samples, limit=2, progress=lambda d, t: calls.append((d, t))
    )
    assert len(result.objects) == 2 and calls == [(1, 2), (2, 2)]


def test_predictor_returning_wrong_shape_is_reported():
    gt = disk((20, 20), 10, 10, 4)
    with pytest.raises(ValueError, match="predictor returned"):
        evaluate_object(constant_predictor(np.zeros((5, 5), bool)), sample(gt))


def test_real_predictor_runs_the_protocol():
    nf = pytest.importorskip("napari_fbrs")
    net = nf.build_model("tiny_test")
    p = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=None)
    gt = disk((48, 64), 24, 30, 9)
    image = np.where(gt[..., None], 200, 30).astype(np.uint8).repeat(3, axis=2)
    result = evaluate_object(p, sample(gt, image=image), max_clicks=4)
    assert 1 <= len(result.ious) <= 4
    assert all(0.0 <= v <= 1.0 for v in result.ious)
    assert len(p.clicks) == len(result.clicks)


# ------------------------------------------------------------------------------ more edge cases
def brute_depth(region):
    """Distance of each region pixel to the nearest non-region pixel of the one-pixel-padded
    frame (so pixels outside the image count as boundary); a slow, independent reference."""
    padded = np.pad(region, 1)
    outside = np.argwhere(~padded)
    depth = np.zeros(region.shape)
    for y, x in np.argwhere(region):
        d2 = ((outside - (y + 1, x + 1)) ** 2).sum(axis=1)
        depth[y, x] = np.sqrt(d2.min())
    return depth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_depth_equals_a_brute_force_distance_with_the_border_as_boundary(seed):
    rng = np.random.default_rng(seed)
    region = rng.random((14, 17)) < 0.7
    region[0, :] = True  # make sure the region touches the image border
    np.testing.assert_allclose(error_depth(region), brute_depth(region))


def test_object_cut_by_the_image_border_is_clicked_away_from_the_border():
    gt = disk((40, 60), 0, 30, 12)  # a half disk on the top edge
    result = evaluate_object(constant_predictor(gt), sample(gt))
    y, x, positive = result.clicks[0]
    depth = brute_depth(gt)
    assert positive and depth[y, x] == depth.max()
    # without the border as boundary the deepest point would be on row 0
    assert y == 6 and x == 30
    assert result.ious == [1.0]


def test_equal_depths_go_to_the_negative_click():
    gt = np.zeros((20, 40), bool)
    gt[5:10, 5:10] = True
    pred = np.zeros_like(gt)
    pred[5:10, 25:30] = True  # a false object exactly as deep as the miss
    click = next_click(pred, gt)
    assert (click.y, click.x, click.positive) == (7, 27, False)


def test_three_pixel_object_on_the_border_reached_after_more_clicks():
    gt = np.zeros((12, 12), bool)
    gt[0, 0:3] = True  # three pixels in the top-left corner

    def one_pixel_per_click(clicks, shape):
        m = np.zeros(shape, bool)
        for y, x, pos in clicks:
            m[y, x] = pos
        return m

    result = evaluate_object(FakePredictor(one_pixel_per_click), sample(gt), max_clicks=20)
    # each click reveals one more pixel: IoU 1/3, 2/3, 1 and the user stops
    np.testing.assert_allclose(result.ious, [1 / 3, 2 / 3, 1.0])
    # a one-pixel-thick object is equally deep everywhere: raster order decides
    assert result.clicks == [(0, 0, True), (0, 1, True), (0, 2, True)]
    assert [noc(result.ious, t) for t in (0.8, 0.85, 0.9)] == [3, 3, 3]


def test_grabcut_band_is_not_clicked_and_not_counted():
    gt = disk((60, 60), 30, 30, 10)
    band = disk((60, 60), 30, 30, 14) & ~gt  # unknown ring around the object
    # a model that grows the object into the band and misses a bit of its centre
    pred = disk((60, 60), 30, 30, 13) & ~disk((60, 60), 30, 30, 2)
    click = next_click(pred, gt, ignore=band)
    assert click.positive and (click.y, click.x) == (30, 30)
    # IoU without the band would count the ring as false positives
    from napari_fbrs.core.evaluation.metrics import iou

    assert iou(pred, gt, band) == pytest.approx(1 - disk((60, 60), 30, 30, 2).sum() / gt.sum())
    assert iou(pred, gt) < iou(pred, gt, band)


def test_object_without_pixels_is_refused():
    gt = np.zeros((10, 10), bool)
    gt[4, 4] = True
    with pytest.raises(ValueError, match="no pixel"):
        evaluate_object(constant_predictor(gt), sample(gt, ignore=gt.copy()))
    with pytest.raises(ValueError, match="no pixel"):
        evaluate_object(constant_predictor(gt), sample(np.zeros_like(gt)))


def test_max_clicks_must_be_positive():
    gt = disk((20, 20), 10, 10, 4)
    with pytest.raises(ValueError, match="max_clicks"):
        evaluate_object(constant_predictor(gt), sample(gt), max_clicks=0)
