"""Predictor behaviour on a tiny network: API, validation, undo/redo, modes, views."""

from __future__ import annotations

import numpy as np
import pytest

import napari_fbrs as nf
from napari_fbrs.core.models.inference import inference_network
from napari_fbrs.core.transforms import (
    bbox_iou,
    click_crop,
    clicks_to_view,
    object_roi,
    view_size,
)


@pytest.fixture(scope="module")
def net():
    return nf.build_model("tiny_test")


@pytest.fixture()
def image():
    rng = np.random.default_rng(0)
    img = (rng.random((60, 80, 3)) * 50).astype(np.uint8)
    img[20:40, 30:55] += 150
    return img


@pytest.mark.parametrize(
    "mode", ["NoBRS", "RGB-BRS", "DistMap-BRS", "f-BRS-A", "f-BRS-B", "f-BRS-C"]
)
def test_every_mode_returns_probability_map(net, image, mode):
    p = nf.Predictor(net, mode=mode, device="cpu", lbfgs_maxfun=3)
    p.set_image(image)
    for y, x, pos in [(30, 40, True), (5, 5, False), (35, 50, True)]:
        prob = p.add_click(y, x, positive=pos)
        assert prob.shape == (60, 80) and prob.dtype == np.float32
        assert np.all((prob >= 0) & (prob <= 1))
    assert p.mask.dtype == bool and p.mask.shape == (60, 80)
    assert [c.positive for c in p.clicks] == [True, False, True]


def test_unknown_mode_and_bad_settings_are_refused(net):
    with pytest.raises(ValueError, match="unknown mode 'f-BRS-D'"):
        nf.Predictor(net, mode="f-BRS-D")
    with pytest.raises(ValueError, match="prob_thresh"):
        nf.Predictor(net, prob_thresh=1.5)
    with pytest.raises(TypeError, match="InteractiveNet"):
        nf.Predictor(object())


def test_click_outside_image_changes_nothing(net, image):
    p = nf.Predictor(net, mode="NoBRS", device="cpu")
    p.set_image(image)
    p.add_click(30, 40)
    before = p.prob.copy()
    with pytest.raises(ValueError, match=r"outside the image of shape \(60, 80\)"):
        p.add_click(60, 10)
    with pytest.raises(ValueError, match="outside"):
        p.add_click(-1, 10)
    with pytest.raises(ValueError, match="finite"):
        p.add_click(float("nan"), 10)
    assert len(p.clicks) == 1
    np.testing.assert_array_equal(p.prob, before)


def test_click_on_last_pixel_edge_is_accepted(net, image):
    p = nf.Predictor(net, mode="NoBRS", device="cpu")
    p.set_image(image)
    p.add_click(59.4, 79.4)
    assert p.clicks[0].y == 59.0 and p.clicks[0].x == 79.0


def test_no_image_is_a_clear_error(net):
    p = nf.Predictor(net, mode="NoBRS", device="cpu")
    with pytest.raises(RuntimeError, match="set_image"):
        p.add_click(1, 1)


def test_undo_redo_restore_full_state(net, image):
    p = nf.Predictor(net, mode="f-BRS-B", device="cpu", lbfgs_maxfun=5)
    p.set_image(image)
    a = p.add_click(30, 40)
    b = p.add_click(5, 70, positive=False)
    c = p.add_click(22, 33)
    np.testing.assert_array_equal(p.undo(), b)
    np.testing.assert_array_equal(p.undo(), a)
    np.testing.assert_array_equal(p.redo(), b)
    assert p.can_redo
    c_again = p.add_click(22, 33)  # same click from the same state: same result
    np.testing.assert_allclose(c_again, c, atol=1e-6)
    assert not p.can_redo
    p.undo(), p.undo(), p.undo()
    assert not p.can_undo and p.clicks == []
    assert not p.prob.any()


def test_reset_keeps_image(net, image):
    p = nf.Predictor(net, mode="NoBRS", device="cpu")
    p.set_image(image)
    p.add_click(30, 40)
    p.reset()
    assert p.clicks == [] and p.image_shape == (60, 80)


def test_prob_thresh_rethresholds_without_recompute(net, image):
    p = nf.Predictor(net, mode="NoBRS", device="cpu")
    p.set_image(image)
    prob = p.add_click(30, 40)
    p.prob_thresh = float(np.median(prob))
    assert p.mask.sum() == (prob >= p.prob_thresh).sum()


@pytest.mark.parametrize(
    "image_in",
    [
        np.zeros((30, 40), np.uint16),
        np.ones((30, 40, 4), np.float64),
        np.full((30, 40), 7, np.int32),
    ],
)
def test_image_dtypes_and_layouts(net, image_in):
    p = nf.Predictor(net, mode="NoBRS", device="cpu")
    p.set_image(image_in)
    assert p.add_click(10, 10).shape == (30, 40)


def test_bad_image_layouts_are_explained(net):
    p = nf.Predictor(net, mode="NoBRS", device="cpu")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB"):
        p.set_image(np.zeros((4, 5, 6, 7)))
    with pytest.raises(ValueError, match="empty"):
        p.set_image(np.zeros((0, 5)))


def record_view_sizes(net) -> list[tuple[int, int]]:
    """Make ``net`` append the (h, w) of every view its head sees to the returned list
    (through the prediction copy the predictor runs, ``inference_network(net)``);
    ``del inference_network(net).logits_from_maps`` undoes it."""
    seen: list[tuple[int, int]] = []
    net = inference_network(net)
    orig = net.logits_from_maps

    def spy(image, maps):
        seen.append(tuple(image.shape[2:]))
        return orig(image, maps)

    net.logits_from_maps = spy
    return seen


def test_max_size_limits_what_the_network_sees(net):
    seen = record_view_sizes(net)
    try:
        p = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=None, max_size=32)
        p.set_image(np.zeros((64, 128), np.uint8))
        prob = p.add_click(10, 100)
    finally:
        del inference_network(net).logits_from_maps
    assert seen == [(16, 32)]
    assert prob.shape == (64, 128)


def test_zoom_in_crops_around_the_object(net):
    zoom = nf.ZoomIn(target_size=64, skip_clicks=1, min_crop_size=20)
    prob = np.zeros((200, 300), np.float32)
    prob[50:70, 100:140] = 0.9
    roi, changed = zoom.next_roi(None, [nf.Click(60, 120, True)] * 2, prob)
    assert changed and roi[0] <= 50 and roi[1] >= 69 and roi[2] <= 100 and roi[3] >= 139
    # the same object next time keeps the crop
    roi2, changed2 = zoom.next_roi(roi, [nf.Click(60, 120, True)] * 3, prob)
    assert roi2 == roi and not changed2
    # a positive click outside the crop forces a new one
    roi3, changed3 = zoom.next_roi(roi, [nf.Click(190, 290, True)] * 3, prob)
    assert changed3 and roi3[1] == 199 and roi3[3] == 299


def test_first_click_crop_shows_a_small_object_enlarged(net):
    """With first_click_crop the first positive click is predicted in a square crop around
    it, resized to target_size; the paper's default predicts it on the whole image."""
    image = np.zeros((300, 500), np.uint8)
    image[140:160, 390:410] = 200  # a 20-pixel object
    seen = record_view_sizes(net)
    try:
        zoom = nf.ZoomIn(target_size=128, first_click_crop=64)
        p = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=zoom, with_flip=False)
        p.set_image(image)
        prob = p.add_click(150, 480)  # near the right border: the crop moves inside
        assert p.state.roi == (118, 181, 436, 499) and seen == [(128, 128)]
        assert prob.shape == (300, 500) and not prob[:, :436].any()  # 0 outside the crop
        p.reset()
        p.add_click(150, 400, positive=False)  # a negative first click: whole image
        assert p.state.roi is None and seen[-1] == (300, 500)
        # an image smaller than the crop is seen whole, enlarged
        p.set_image(np.zeros((40, 30), np.uint8))
        p.add_click(20, 15)
        assert p.state.roi == (0, 39, 0, 29) and seen[-1] == (128, 96)
    finally:
        del inference_network(net).logits_from_maps
    p2 = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=nf.ZoomIn(target_size=128))
    p2.set_image(image)
    p2.add_click(150, 480)
    assert p2.state.roi is None
    with pytest.raises(ValueError, match="first_click_crop must be >= 8"):
        nf.ZoomIn(first_click_crop=4)
    with pytest.raises(ValueError, match="must be an int, 'auto' or None, got 'big'"):
        nf.ZoomIn(first_click_crop="big")


def test_beyond_border_keeps_a_border_object_centred_in_a_mirrored_view(net):
    """With ``beyond_border`` a crop may reach past the image: the network sees the image
    mirrored there, and the prediction is kept inside the image only."""
    rng = np.random.default_rng(1)
    image = (rng.random((300, 500)) * 255).astype(np.uint8)
    seen = []
    orig = inference_network(net).logits_from_maps

    def spy(view, maps):
        seen.append(view[0].clone())  # the (3, h, w) input, as the network gets it
        return orig(view, maps)

    inference_network(net).logits_from_maps = spy
    try:
        zoom = nf.ZoomIn(target_size=64, first_click_crop=64, beyond_border=True)
        p = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=zoom, with_flip=False)
        p.set_image(image)
        prob = p.add_click(150, 480)  # 20 pixels from the right border: crop centred
        assert p.state.roi == (118, 181, 448, 511)
        (view,) = seen
        assert tuple(view.shape) == (3, 64, 64)  # 64 pixels at their own size
        inside, outside = view[:, :, :52], view[:, :, 52:]  # image columns 448-499, 500-511
        # column 500 + k is column 498 - k: the mirror, edge pixel not repeated
        np.testing.assert_array_equal(outside.numpy(), inside[:, :, 50 - np.arange(12)].numpy())
        whole = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=None, with_flip=False)
        whole.set_image(image)
        expected = (image[118:182, 448:500].astype(np.float32) / 255 - 0.485) / 0.229
        np.testing.assert_allclose(inside[0].numpy(), expected, atol=1e-5)
        assert prob.shape == (300, 500) and not prob[:118].any() and not prob[:, :448].any()
        assert prob[118:182, 448:].any()
        # without the option the crop is moved inside the image, as before
        p2 = nf.Predictor(
            net, mode="NoBRS", device="cpu", with_flip=False,
            zoom_in=nf.ZoomIn(target_size=64, first_click_crop=64),
        )  # fmt: skip
        p2.set_image(image)
        p2.add_click(150, 480)
        assert p2.state.roi == (118, 181, 436, 499)
    finally:
        del inference_network(net).logits_from_maps


def test_beyond_border_object_crops_are_not_clamped():
    zoom = nf.ZoomIn(target_size=64, min_crop_size=20, beyond_border=True)
    prob = np.zeros((100, 120), np.float32)
    prob[0:10, 50:70] = 0.9  # an object cut by the top border
    roi, changed = zoom.next_roi(None, [nf.Click(3, 60, True)] * 2, prob)
    assert changed and roi == (-6, 14, 46, 74)  # centred on the box 0-9 x 50-69
    clamped, _ = nf.ZoomIn(target_size=64, min_crop_size=20).next_roi(
        None, [nf.Click(3, 60, True)] * 2, prob
    )
    assert clamped == (0, 14, 46, 74)
    m = np.zeros((100, 100), bool)
    m[90:100, 0:10] = True
    assert object_roi(m, [], 2.0, 10, beyond_border=True) == (84, 104, -6, 14)
    # an axis the crop would fill is the whole image: no mirror images side by side
    assert object_roi(m, [], 2.0, 60, beyond_border=True) == (64, 124, -26, 34)
    assert object_roi(m, [], 2.0, 120, beyond_border=True) == object_roi(m, [], 2.0, 120)
    assert click_crop(nf.Click(5, 5, True), 64, (40, 100), True) == (0, 39, -27, 36)


def test_beyond_border_with_every_mode_and_undo(image):
    """Every mode, the previous-mask input and undo work with crops past the border."""
    from napari_fbrs.core.testing import disk_net

    net = disk_net(radius=6.0)
    zoom = nf.ZoomIn(target_size=48, min_crop_size=40, beyond_border=True)
    for mode in ("NoBRS", "f-BRS-B", "RGB-BRS"):
        p = nf.Predictor(net, mode=mode, device="cpu", zoom_in=zoom, lbfgs_maxfun=3)
        p.set_image(image)
        p.add_click(3, 40)
        prob = p.add_click(4, 44)
        assert p.state.roi is not None and p.state.roi[0] < 0
        assert prob.shape == (60, 80) and np.all((prob >= 0) & (prob <= 1))
        p.undo()
        np.testing.assert_array_equal(p.add_click(4, 44), prob)


def test_first_click_crop_auto_zooms_into_small_objects_only():
    """``first_click_crop="auto"`` predicts the first click on the whole image and, when the
    object found is small (or none is found), again in the crop ZoomIn would take around it;
    a large object or a negative first click stays whole-image; undo and the same click give
    the same view."""
    from napari_fbrs.core.testing import disk_net

    image = np.zeros((300, 500), np.uint8)

    def run(radius, y=150.0, x=250.0, positive=True):
        net = disk_net(radius=radius)
        seen = record_view_sizes(net)
        zoom = nf.ZoomIn(target_size=128, min_crop_size=64, first_click_crop="auto")
        p = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=zoom, with_flip=False)
        p.set_image(image)
        prob = p.add_click(y, x, positive=positive)
        seen_by_p = list(seen)
        whole = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=None, with_flip=False)
        whole.set_image(image)
        whole_prob = whole.add_click(y, x, positive=positive)
        seen[:] = seen_by_p  # later calls of p append to it again
        return p, prob, seen, whole_prob, zoom

    # an 8-pixel disk: its crop is the 64-pixel minimum, enlarged to 128: seen twice
    p, prob, seen, whole_prob, zoom = run(8.0)
    expected = zoom.small_object_roi(whole_prob, p.clicks)
    assert expected is not None and p.state.roi == expected
    r0, r1, c0, c1 = expected
    assert (r1 - r0, c1 - c0) == (64, 64) and r0 < 150 < r1 and c0 < 250 < c1
    assert seen == [(300, 500), (128, 128)]
    # the disk's radius is in view pixels: half as large in the twice-enlarged crop
    assert 0.15 < p.mask.sum() / (whole_prob >= 0.49).sum() < 0.4
    assert not prob[:r0].any() and not prob[:, :c0].any()
    p.undo()
    again = p.add_click(150, 250)
    np.testing.assert_array_equal(again, prob)
    assert p.state.roi == expected
    # a second click continues with the paper's ZoomIn from that view
    p.add_click(150, 262, positive=False)
    assert p.state.roi is not None and len(seen) == 5

    # a large object (crop over half the image's longer side): the whole image only
    p, prob, seen, whole_prob, zoom = run(100.0)
    assert p.state.roi is None and seen == [(300, 500)]
    np.testing.assert_array_equal(prob, whole_prob)
    assert zoom.small_object_roi(whole_prob, p.clicks) is None
    # nothing found in the whole image (a net that finds nothing anywhere): the smallest
    # crop around the click, as for an object too small to be seen at the image's scale
    p, prob, seen, whole_prob, zoom = run(-1.0)
    assert not (whole_prob >= 0.49).any()
    assert p.state.roi == (118, 182, 218, 282) and seen == [(300, 500), (128, 128)]
    # a negative first click: the whole image only
    p, prob, seen, _, _ = run(8.0, positive=False)
    assert p.state.roi is None and seen == [(300, 500)]


def test_a_one_pixel_high_image_with_zoom_in(net):
    """A 1 x 16 image whose ZoomIn crop would be resized to 0 x 8 (found by hypothesis)."""
    p = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=nf.ZoomIn(target_size=8,
                     min_crop_size=1))  # fmt: skip
    p.set_image(np.zeros((1, 16), np.uint8))
    p.add_click(0, 2)
    prob = p.add_click(0, 10, positive=False)
    assert prob.shape == (1, 16) and np.all((prob >= 0) & (prob <= 1))


def test_view_helpers():
    assert view_size((0, 99, 0, 199), True, 400, None) == (200, 400)
    assert view_size((0, 99, 0, 199), False, 400, 100) == (50, 100)
    assert view_size((0, 0, 0, 15), True, 8, None) == (1, 8)  # never 0 pixels high
    # small whole-image views are enlarged to min_size; ZoomIn crops keep the target size
    assert view_size((0, 47, 0, 63), False, 400, None, 256) == (192, 256)
    assert view_size((0, 47, 0, 63), True, 400, None, 256) == (300, 400)
    assert view_size((0, 299, 0, 399), False, 400, None, 256) == (300, 400)
    assert view_size((0, 47, 0, 63), False, 400, 128, 128) == (96, 128)
    (c,) = clicks_to_view([nf.Click(10, 20, True)], (10, 29, 20, 59), (40, 80))
    assert (c.y, c.x) == (0.0, 0.0)
    assert bbox_iou((0, 9, 0, 9), (0, 9, 0, 9)) == 1.0
    assert bbox_iou((0, 9, 0, 9), (20, 29, 20, 29)) == 0.0
    m = np.zeros((100, 100), bool)
    m[40:60, 40:60] = True
    assert object_roi(m, [], 1.0, 10) == (40, 60, 40, 60)


def test_cancel_callback_stops_optimisation(net, image):
    p = nf.Predictor(net, mode="f-BRS-B", device="cpu", lbfgs_maxfun=20)
    p.set_image(image)
    p.add_click(30, 40)
    p.set_cancel_callback(lambda: True)
    prob = p.add_click(5, 5, positive=False)
    assert p.last_evaluations == 0 and prob.shape == (60, 80)


def test_click_patches_follow_reference_slicing():
    from napari_fbrs.core.brs import click_disks

    clicks = [nf.Click(5.5, 6.5, True), nf.Click(0.0, 3.0, False), nf.Click(9.0, 9.0, False)]
    pos, neg = click_disks([clicks], 10, 10)
    assert pos.shape == neg.shape == (1, 1, 10, 10)
    # round half to even: (5.5, 6.5) -> (6, 6); a 3x3 patch
    assert pos[0, 0].nonzero().tolist() == [[y, x] for y in (5, 6, 7) for x in (5, 6, 7)]
    # a click on the top row starts its slice at -1: no patch at all (as the reference);
    # one on the bottom-right corner keeps the part inside the image
    assert neg[0, 0].nonzero().tolist() == [[8, 8], [8, 9], [9, 8], [9, 9]]


def test_zoom_in_keeps_its_crop_when_the_mask_is_empty():
    zoom = nf.ZoomIn(target_size=64, skip_clicks=1, min_crop_size=20)
    roi = (10, 60, 20, 90)
    empty = np.zeros((100, 120), np.float32)
    assert zoom.next_roi(roi, [nf.Click(30, 40, True)] * 2, empty) == (roi, False)
    assert zoom.next_roi(None, [nf.Click(30, 40, True)] * 2, empty) == (None, False)


def test_clicks_to_view_scales_like_the_reference():
    # size * (coordinate - min) / extent
    (c,) = clicks_to_view([nf.Click(33, 142, False)], (0, 239, 0, 319), (300, 400))
    assert (c.y, c.x, c.positive) == (300 * 33 / 240, 400 * 142 / 320, False)


@pytest.mark.parametrize("mode", ["f-BRS-B", "RGB-BRS"])
def test_brs_leaves_network_weights_untouched(image, mode):
    net = nf.build_model("tiny_test")  # parameters still require grad
    before = {k: v.clone() for k, v in net.state_dict().items()}
    p = nf.Predictor(net, mode=mode, device="cpu", lbfgs_maxfun=4)
    p.set_image(image)
    p.add_click(30, 40)
    p.add_click(5, 5, positive=False)
    assert p.last_evaluations > 0
    assert all(q.grad is None for q in net.parameters())  # only the BRS variables' gradient
    for k, v in net.state_dict().items():
        assert np.array_equal(v.numpy(), before[k].numpy())


def test_distmap_brs_corrects_only_the_distance_maps(image):
    # a net whose click encoding has a previous-mask channel first (RITM's order; the
    # default distance_maps_channel, -2, means the same as the 1 set here)
    from napari_fbrs.core.testing import TinyNet

    class PrevFirst(TinyNet):
        uses_prev_mask = True
        distance_maps_channel = 1

        def encode_clicks(self, image, points, prev_mask=None):
            maps = super().encode_clicks(image, points)
            prev = image.new_zeros(image.shape[0], 1, *image.shape[2:])
            return torch.cat([prev, maps], dim=1)

        def logits_from_maps(self, image, maps):
            seen.append(maps.detach().clone())
            return super().logits_from_maps(image, maps[:, 1:])

    torch = pytest.importorskip("torch")
    seen = []
    p = nf.Predictor(PrevFirst(), mode="DistMap-BRS", device="cpu", lbfgs_maxfun=3)
    p.set_image(image)
    p.add_click(30, 40)
    seen.clear()
    p.add_click(5, 5, positive=False)
    assert p.last_evaluations > 1
    assert all(float(m[:, 0].abs().max()) == 0.0 for m in seen)  # prev mask untouched
    assert any(float((m[:, 1:] - seen[0][:, 1:]).abs().max()) > 0 for m in seen[1:])


# -- prior mask (previous-mask networks) -------------------------------------------------------
def test_prior_mask_steers_a_prev_mask_network_and_is_cleared_by_reset():
    net = nf.load_model("fbrs-lite", device="cpu")
    yy, xx = np.mgrid[:96, :96]
    image = np.where((yy - 48) ** 2 + (xx - 48) ** 2 < 20**2, 200, 40).astype(np.uint8)
    p = nf.Predictor(net, mode="NoBRS", device="cpu", zoom_in=None, with_flip=False)
    p.set_image(image)
    plain = p.add_click(48, 48).copy()
    p.reset()
    prior = np.zeros((96, 96), bool)
    prior[10:90, 10:90] = True  # a much larger object than the disk
    p.set_prior(prior)
    assert p.prob.max() == 0  # a prior is not a prediction
    steered = p.add_click(48, 48).copy()
    assert np.abs(steered - plain).max() > 0.05
    assert steered[prior].mean() > plain[prior].mean()  # pulled towards the prior
    p.reset()  # a new object starts without it
    np.testing.assert_allclose(p.add_click(48, 48), plain, atol=1e-6)


def test_prior_mask_is_ignored_by_networks_without_a_mask_input():
    from napari_fbrs.core.testing import TinyNet

    image = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    p = nf.Predictor(TinyNet().eval(), mode="NoBRS", device="cpu", zoom_in=None)
    p.set_image(image)
    plain = p.add_click(20, 20).copy()
    p.reset()
    p.set_prior(np.ones((40, 40), np.float32))
    np.testing.assert_array_equal(p.add_click(20, 20), plain)


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        (np.zeros((5, 5)), "shape"),
        (np.full((40, 40), 2.0), r"\[0, 1\]"),
        (np.full((40, 40), np.nan), r"\[0, 1\]"),
        (np.full((40, 40), "a"), "bool or numeric"),
    ],
)
def test_bad_prior_mask_is_refused_and_changes_nothing(prior, message):
    from napari_fbrs.core.testing import TinyNet

    p = nf.Predictor(TinyNet().eval(), mode="NoBRS", device="cpu", zoom_in=None)
    with pytest.raises(RuntimeError, match="image"):
        p.set_prior(np.zeros((40, 40)))
    p.set_image(np.zeros((40, 40), np.uint8))
    p.set_prior(np.ones((40, 40), bool))
    with pytest.raises(ValueError, match=message):
        p.set_prior(prior)
    assert p._prior is not None and p._prior.min() == 1.0  # the earlier prior stays


# -- small images ------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [48, 96])
def test_small_images_are_enlarged_for_the_network(side):
    net = nf.load_model("fbrs-lite", device="cpu")
    yy, xx = np.mgrid[:side, :side]
    disk = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 4) ** 2
    image = np.where(disk, 220, 30).astype(np.uint8)
    p = nf.Predictor(net, mode="f-BRS-B", device="cpu")
    assert p.min_size == nf.core.predictor.MIN_VIEW_SIZE == 256
    p.set_image(image)
    prob = p.add_click(side // 2, side // 2)
    assert prob.shape == (side, side)
    iou = (p.mask & disk).sum() / (p.mask | disk).sum()
    assert iou > 0.9
    # seen at its own size, the bundled model finds nothing there
    raw = nf.Predictor(net, mode="f-BRS-B", device="cpu", min_size=None)
    raw.set_image(image)
    raw.add_click(side // 2, side // 2)
    assert raw.mask.sum() < 0.2 * disk.sum()


def test_min_size_is_checked_and_a_smaller_max_size_wins():
    from napari_fbrs.core.testing import TinyNet

    with pytest.raises(ValueError, match="min_size must be at least 16"):
        nf.Predictor(TinyNet().eval(), mode="NoBRS", device="cpu", min_size=8)
    p = nf.Predictor(TinyNet().eval(), mode="NoBRS", device="cpu", max_size=128)
    assert p.min_size == 128


def _ramp_objective(threshold_param: float):
    """One variable ``v``; logits ``10 v - 10 t`` on a 1x1x4x4 view with a positive click
    patch: the click is satisfied exactly when p > 0.49, i.e. ``v > t + logit(0.49) / 10``."""
    import torch

    from napari_fbrs.core.brs import BrsObjective

    pos = torch.zeros(1, 1, 4, 4)
    pos[0, 0, 1:3, 1:3] = 1
    return BrsObjective(
        lambda p: (10 * p[0] - 10 * threshold_param) * torch.ones(1, 1, 4, 4),
        lambda p: 1e-3 * p.square().sum(),
        pos,
        torch.zeros(1, 1, 4, 4),
        prob_thresh=0.49,
    )


def test_trim_overshoot_bisects_back_to_the_shortest_satisfying_step():
    from napari_fbrs.core.brs import trim_overshoot

    obj = _ramp_objective(0.3)  # satisfied from v = 0.3 + logit(0.49) / 10 = 0.296
    obj(np.array([0.0]))  # unsatisfied: gradient
    value, grad = obj(np.array([1.0]))  # far past: satisfied, zero gradient
    assert not grad.any() and obj.satisfying_step is not None
    x, logits = trim_overshoot(obj, steps=4)
    # bisection 0.5 ok, 0.25 no, 0.375 ok, 0.3125 ok -> 0.3125, four more evaluations
    assert x.tolist() == [0.3125] and obj.evaluations == 6
    assert float(logits[0, 0, 0, 0]) == pytest.approx(10 * 0.3125 - 3.0)
    # no shorter step satisfies: the untrimmed result stays
    obj = _ramp_objective(0.3)
    obj(np.array([0.0]))
    obj(np.array([0.31]))
    assert trim_overshoot(obj, steps=4) is None
    # satisfied from the start: nothing was crossed, nothing to trim
    obj = _ramp_objective(-1.0)
    obj(np.array([0.0]))
    assert obj.satisfying_step is None and trim_overshoot(obj) is None


def _blob_image() -> np.ndarray:
    yy, xx = np.mgrid[:160, :160]
    img = 40 + 150 * np.exp(-((((yy - 80) / 11.0) ** 2 + ((xx - 76) / 14.0) ** 2) ** 2))
    noise = np.random.default_rng(0).normal(0, 6, img.shape)
    return (img + noise).clip(0, 255).astype(np.uint8)


def test_trim_overshoot_makes_a_corrective_click_change_less():
    from scipy import ndimage

    net = nf.load_model("fbrs-lite", device="cpu")
    image = _blob_image()  # one nucleus-sized blob
    results = {}
    for trim in (False, True):
        p = nf.Predictor(net, mode="f-BRS-B", device="cpu", trim_overshoot=trim)
        p.set_image(image)
        p.add_click(80, 76)
        first = p.mask.copy()
        # a positive click three pixels outside the object found
        ring = ndimage.binary_dilation(first, iterations=3) & ~ndimage.binary_dilation(
            first, iterations=2
        )
        ys, xs = np.nonzero(ring)
        y, x = ys[np.argmax(xs)], xs[np.argmax(xs)]
        prob = p.add_click(y, x)
        results[trim] = (prob[y, x], int((p.mask & ~first).sum()), p.last_evaluations)
        # undo and the same click again: the same trimmed result
        p.undo()
        np.testing.assert_array_equal(p.add_click(y, x), prob)
    (prob_plain, added_plain, evals_plain), (prob_trim, added_trim, evals_trim) = (
        results[False],
        results[True],
    )
    assert prob_plain >= 0.49 and prob_trim >= 0.49  # the click is satisfied either way
    assert added_trim < 0.5 * added_plain  # measured: 123 pixels against 442
    assert evals_trim == evals_plain + 4
