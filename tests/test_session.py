"""The Qt-free session: per-slice clicks, predictions, commits and the undo history."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from napari_fbrs.core.session import (
    SegmentationSession,
    SessionClick,
    promoted_dtype,
)

H, W = 40, 50


@dataclass(frozen=True)
class _Click:
    y: float
    x: float
    positive: bool


class DiskPredictor:
    """A stand-in for ``Predictor`` with the same interface and a predictable answer.

    The probability is 0.9 within ``radius`` pixels of the last positive click (minus the
    disks of negative clicks), 0.1 elsewhere. Counts its ``add_click`` calls.
    """

    instances: list[DiskPredictor] = []

    def __init__(self, radius: float = 6.0, prob_thresh: float = 0.49, neg_radius=None):
        self.radius = radius
        self.neg_radius = radius if neg_radius is None else neg_radius
        self.prob_thresh = prob_thresh
        self.image = None
        self.contrast_limits = None
        self.history: list[tuple] = [()]
        self.pos = 0
        self.calls = 0
        self.cancel = None
        self.fail = False
        self.during_click = None  # hook(self) run inside add_click, before the answer
        DiskPredictor.instances.append(self)

    def set_image(self, image, contrast_limits=None):
        self.image = np.asarray(image)
        self.contrast_limits = contrast_limits
        self.reset()

    def reset(self):
        self.history, self.pos = [()], 0

    def set_cancel_callback(self, fn):
        self.cancel = fn

    @property
    def clicks(self):
        return list(self.history[self.pos])

    @property
    def can_redo(self):
        return self.pos < len(self.history) - 1

    def add_click(self, y, x, positive=True):
        self.calls += 1
        if self.fail:
            raise RuntimeError("the network exploded")
        if self.during_click is not None:
            self.during_click(self)
        if self.cancel is not None:
            self.cancel()  # poll, as the L-BFGS loop does
        h, w = self.image.shape[:2]
        click = _Click(
            min(max(float(y), 0.0), h - 1.0), min(max(float(x), 0.0), w - 1.0), bool(positive)
        )
        del self.history[self.pos + 1 :]
        self.history.append(self.history[self.pos] + (click,))
        self.pos += 1
        return self.prob

    def undo(self):
        self.pos = max(0, self.pos - 1)
        return self.prob

    def redo(self):
        self.pos = min(len(self.history) - 1, self.pos + 1)
        return self.prob

    @property
    def mask(self):
        return self.prob >= self.prob_thresh

    @property
    def prob(self):
        h, w = self.image.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        inside = np.zeros((h, w), bool)
        clicks = self.history[self.pos]
        positives = [c for c in clicks if c.positive]
        if positives:
            c = positives[-1]
            inside = (yy - c.y) ** 2 + (xx - c.x) ** 2 <= self.radius**2
        for c in clicks:
            if not c.positive:
                inside &= (yy - c.y) ** 2 + (xx - c.x) ** 2 > self.neg_radius**2
        return np.where(inside, 0.9, 0.1).astype(np.float32)


def disk(y, x, r=6.0, shape=(H, W)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r**2


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (H, W), dtype=np.uint8)


@pytest.fixture
def session(image):
    DiskPredictor.instances.clear()
    return SegmentationSession(image, predictor_factory=DiskPredictor)


# ------------------------------------------------------------------------------ shapes


def test_shapes_of_2d_rgb_and_stacks():
    s = SegmentationSession(np.zeros((H, W)))
    assert s.stack_shape == () and s.spatial_shape == (H, W) and s.labels_shape == (H, W)
    s = SegmentationSession(np.zeros((H, W, 3), np.uint8), rgb=True)
    assert s.labels_shape == (H, W) and s.labels.dtype == np.uint32
    s = SegmentationSession(np.zeros((2, 5, H, W, 4), np.uint8), rgb=True)
    assert s.stack_shape == (2, 5) and s.labels_shape == (2, 5, H, W)
    assert s.image_slice((1, 3)).shape == (H, W, 4)
    with pytest.raises(ValueError, match="last axis of 3 or 4"):
        SegmentationSession(np.zeros((H, W, 5)), rgb=True)
    with pytest.raises(ValueError, match="two axes"):
        SegmentationSession(np.zeros(5))
    with pytest.raises(ValueError, match="do not match"):
        SegmentationSession(np.zeros((H, W)), labels=np.zeros((H, W + 1), np.uint8))
    with pytest.raises(TypeError, match="numpy"):
        SegmentationSession(np.zeros((H, W)), labels=[[0]])


def test_keys_and_clicks_are_validated_and_nothing_changes(session):
    with pytest.raises(ValueError, match="outside the image"):
        session.add_click(H, 3)
    with pytest.raises(ValueError, match="indices"):
        session.add_click(3, 3, key=(0,))
    assert session.clicks() == [] and not session.can_undo
    stack = SegmentationSession(np.zeros((3, H, W)))
    with pytest.raises(ValueError, match="outside the stack"):
        stack.add_click(1, 1, key=(3,))
    # napari draws pixel i over [i - 0.5, i + 0.5)
    assert session.click_inside(-0.5, W - 0.51) and not session.click_inside(-0.51, 0)
    assert not session.click_inside(np.nan, 0)


# ------------------------------------------------------------------------------ prediction


def test_predict_gives_the_predictors_map_and_a_mask(session, image):
    assert session.predict() is None  # no clicks, nothing to do
    session.add_click(10, 20)
    assert not session.is_up_to_date()
    prob = session.predict()
    assert prob.dtype == np.float32 and prob.shape == (H, W)
    np.testing.assert_array_equal(session.mask(), disk(10, 20))
    (pred,) = DiskPredictor.instances
    assert session.predictor() is pred and pred.image is not None
    np.testing.assert_array_equal(pred.image, image)
    assert session.is_up_to_date() and session.request() is None


def test_threshold_changes_the_mask_without_recomputing(session):
    session.add_click(10, 20)
    session.predict()
    calls = DiskPredictor.instances[0].calls
    session.prob_thresh = 0.95
    assert not session.mask().any()
    assert DiskPredictor.instances[0].calls == calls
    with pytest.raises(ValueError):
        session.prob_thresh = 1.0


def test_undo_and_redo_of_clicks_reuse_the_predictors_history(session):
    session.add_click(10, 20)
    session.predict()
    session.add_click(30, 40)
    session.predict()
    pred = DiskPredictor.instances[0]
    assert pred.calls == 2
    session.undo()
    assert session.clicks() == [SessionClick(10, 20, True)]
    np.testing.assert_array_equal(session.predict() > 0.5, disk(10, 20))
    session.redo()
    np.testing.assert_array_equal(session.predict() > 0.5, disk(30, 40))
    assert pred.calls == 2  # undo and redo cost no prediction


def test_a_newer_click_makes_a_request_stale(session):
    session.add_click(10, 20)
    old = session.request()
    session.add_click(30, 40)
    assert session.is_stale(old)
    assert session.compute(old) is None
    assert session.apply(None) is False
    new = session.request()
    result = session.compute(new)
    session.add_click(5, 5, positive=False)
    assert session.apply(result) is False  # computed, but superseded meanwhile
    assert session.prob() is None


def test_a_stale_request_stops_through_the_cancel_callback(session):
    session.add_click(10, 20)
    session.predict()
    pred = DiskPredictor.instances[0]
    session.add_click(30, 40)
    request = session.request()
    seen = []

    def newer_click_arrives(p):  # what the GUI thread does while the worker optimises
        p.during_click = None
        session.add_click(20, 25, positive=False)
        seen.append(p.cancel())

    pred.during_click = newer_click_arrives
    assert session.compute(request) is None
    assert seen == [True]
    # the cut-short state was dropped: the predictor is back at the first click
    assert [(c.y, c.x) for c in pred.clicks] == [(10, 20)]
    prob = session.predict()
    expected = disk(30, 40) & ~disk(20, 25)
    np.testing.assert_array_equal(prob > 0.5, expected)
    assert [(c.y, c.x, c.positive) for c in pred.clicks] == [
        (10, 20, True),
        (30, 40, True),
        (20, 25, False),
    ]


def test_compute_on_a_worker_thread_while_clicks_arrive(session):
    session.add_click(10, 20)
    request = session.request()
    pred_started = threading.Event()
    release = threading.Event()
    out = {}

    def factory():
        p = DiskPredictor()

        def wait(_):
            pred_started.set()
            release.wait(10)

        p.during_click = wait
        return p

    session.predictor_factory = factory
    thread = threading.Thread(target=lambda: out.setdefault("r", session.compute(request)))
    thread.start()
    assert pred_started.wait(10)
    session.add_click(30, 40)  # "GUI thread": supersedes the running request
    release.set()
    thread.join(10)
    assert out["r"] is None
    DiskPredictor.instances[-1].during_click = None
    np.testing.assert_array_equal(session.predict() > 0.5, disk(30, 40))


def test_a_prediction_error_rolls_the_clicks_back(session):
    session.add_click(10, 20)
    session.predict()
    pred = DiskPredictor.instances[0]
    pred.fail = True
    session.add_click(30, 40)
    request = session.request()
    with pytest.raises(RuntimeError, match="exploded"):
        session.compute(request)
    change = session.rollback(request)
    assert change.keys == ((),) and not change.labels
    assert session.clicks() == [SessionClick(10, 20, True)]
    np.testing.assert_array_equal(session.mask(), disk(10, 20))
    assert session.is_up_to_date()
    assert not session.can_redo
    session.undo()  # the history holds only the first click
    assert session.clicks() == [] and not session.can_undo


def test_an_error_making_the_predictor_leaves_nothing_behind(image):
    def broken():
        raise FileNotFoundError("the bundled model 'fbrs-lite' is not in this installation")

    s = SegmentationSession(image, predictor_factory=broken)
    s.add_click(10, 20)
    request = s.request()
    with pytest.raises(FileNotFoundError):
        s.compute(request)
    s.rollback(request)
    assert s.clicks() == [] and s.prob() is None and not s.can_undo


def test_evicted_predictors_replay_their_clicks(image):
    stack = np.stack([image, image[::-1], image[:, ::-1]])
    DiskPredictor.instances.clear()
    s = SegmentationSession(stack, predictor_factory=DiskPredictor, max_live_predictors=1)
    s.add_click(10, 20, key=(0,))
    s.add_click(12, 22, positive=False, key=(0,))
    first = s.predict((0,)).copy()
    s.add_click(5, 5, key=(2,))
    s.predict((2,))
    assert s.predictor((0,)) is None  # evicted
    s.add_click(30, 30, key=(0,))
    s.predict((0,))
    replayed = s.predictor((0,))
    assert len(replayed.clicks) == 3 and replayed.calls == 3
    s.undo()
    np.testing.assert_array_equal(s.predict((0,)), first)


# ------------------------------------------------------------------------------ commits


def test_commits_take_the_next_free_id_and_never_overwrite(session):
    session.add_click(10, 20)
    session.predict()
    info = session.commit()
    assert (info.label, info.n_pixels, info.promoted_from) == (1, disk(10, 20).sum(), None)
    np.testing.assert_array_equal(session.labels, disk(10, 20).astype(np.uint32))
    assert session.clicks() == [] and session.prob() is None  # a new object starts
    session.add_click(14, 24)  # overlaps object 1
    session.predict()
    info = session.commit()
    assert info.label == 2
    expected = np.where(disk(10, 20), 1, np.where(disk(14, 24), 2, 0))
    np.testing.assert_array_equal(session.labels, expected)


def test_overwrite_and_a_given_label(session):
    session.add_click(10, 20)
    session.predict()
    session.commit()
    session.add_click(14, 24)
    session.predict()
    session.commit(label=7, overwrite=True)
    expected = np.where(disk(14, 24), 7, np.where(disk(10, 20), 1, 0))
    np.testing.assert_array_equal(session.labels, expected)
    assert session.next_label() == 8


def test_failed_commits_change_nothing(session):
    with pytest.raises(ValueError, match="click on it first"):
        session.commit()
    session.add_click(10, 20)
    with pytest.raises(ValueError, match="not computed"):
        session.commit()
    session.predict()
    session.commit()
    session.add_click(10, 20)
    session.predict()
    before = session.labels.copy()
    with pytest.raises(ValueError, match="overwrite"):
        session.commit()  # lies entirely on object 1
    with pytest.raises(ValueError, match="start at 1"):
        session.commit(label=0)
    session.prob_thresh = 0.95
    with pytest.raises(ValueError, match="empty"):
        session.commit()
    np.testing.assert_array_equal(session.labels, before)
    assert len(session.clicks()) == 1


def test_dtype_is_promoted_instead_of_wrapping_around(image):
    labels = np.zeros((H, W), np.uint8)
    labels[0, 0] = 255
    s = SegmentationSession(image, labels=labels, predictor_factory=DiskPredictor)
    s.add_click(10, 20)
    s.predict()
    info = s.commit()
    assert info.label == 256 and info.promoted_from == np.uint8
    assert s.labels.dtype == np.uint16 and s.labels is not labels
    assert s.labels[10, 20] == 256 and s.labels[0, 0] == 255
    assert labels[10, 20] == 0  # the caller's array was not written
    s.undo()
    assert s.labels.dtype == np.uint8 and s.labels[10, 20] == 0 and s.labels[0, 0] == 255
    s.redo()
    assert s.labels.dtype == np.uint16 and s.labels[10, 20] == 256


def test_promoted_dtype():
    assert promoted_dtype(np.uint8, 255) == np.uint8
    assert promoted_dtype(np.uint8, 256) == np.uint16
    assert promoted_dtype(np.int8, 128) == np.int16
    assert promoted_dtype(np.uint16, 70000) == np.uint32
    assert promoted_dtype(np.uint32, 2**32) == np.uint64
    assert promoted_dtype(np.int32, 5) == np.int32
    assert promoted_dtype(bool, 1) == np.bool_ and promoted_dtype(bool, 2) == np.uint8
    with pytest.raises(TypeError):
        promoted_dtype(np.float32, 1)
    with pytest.raises(OverflowError):
        promoted_dtype(np.uint64, 2**64)


def test_one_history_of_clicks_and_commits(session):
    session.add_click(10, 20)
    session.predict()
    session.add_click(12, 30, positive=False)
    session.predict()
    mask1 = session.mask().copy()
    session.commit()
    committed = session.labels.copy()
    session.add_click(30, 40)
    session.predict()
    calls = DiskPredictor.instances[0].calls

    session.undo()  # the click after the commit
    assert session.clicks() == []
    change = session.undo()  # the commit: labels back, its clicks and preview back
    assert change.labels and change.description == "undo: commit of label 1"
    assert not session.labels.any()
    assert len(session.clicks()) == 2 and session.is_up_to_date()
    np.testing.assert_array_equal(session.mask(), mask1)
    session.undo()
    assert session.clicks() == [SessionClick(10, 20, True)]

    session.redo()
    session.redo()  # the commit again
    np.testing.assert_array_equal(session.labels, committed)
    assert session.clicks() == []
    session.redo()
    assert session.clicks() == [SessionClick(30, 40, True)]
    assert session.redo() is None and session.can_undo
    assert DiskPredictor.instances[0].calls == calls  # no commit undo recomputed anything
    # a new edit drops the redo steps
    session.undo()
    session.add_click(1, 1)
    assert not session.can_redo


def test_slices_keep_their_own_objects(image):
    stack = np.stack([image] * 3)
    s = SegmentationSession(stack, predictor_factory=DiskPredictor)
    s.add_click(10, 20, key=(0,))
    s.add_click(30, 40, key=(2,))
    s.predict((0,))
    s.predict((2,))
    np.testing.assert_array_equal(s.mask((0,)), disk(10, 20))
    np.testing.assert_array_equal(s.mask((2,)), disk(30, 40))
    assert s.preview_keys() == [(0,), (2,)]
    info = s.commit((2,))
    assert info.label == 1 and s.clicks((0,)) == [SessionClick(10, 20, True)]
    assert not s.labels[0].any() and not s.labels[1].any()
    np.testing.assert_array_equal(s.labels[2], disk(30, 40))
    assert s.commit((0,)).label == 2


def test_set_all_clicks_is_one_undo_step(image):
    s = SegmentationSession(np.stack([image] * 3))
    s.add_click(1, 1, key=(0,))
    changed = s.set_all_clicks({(1,): [(2, 2, True)], (2,): [(3, 3, False), (4, 4, True)]})
    assert changed == [(0,), (1,), (2,)]
    assert s.all_clicks() == {
        (1,): [SessionClick(2, 2, True)],
        (2,): [SessionClick(3, 3, False), SessionClick(4, 4, True)],
    }
    assert s.set_all_clicks(s.all_clicks()) == []
    s.undo()
    assert s.all_clicks() == {(0,): [SessionClick(1, 1, True)]}
    assert s.set_clicks((0,), [(1, 1, True)]) is False


def test_reset_clicks_is_undoable(session):
    session.add_click(10, 20)
    session.predict()
    assert session.reset_clicks()
    assert session.clicks() == [] and session.mask() is None
    assert not session.reset_clicks()
    session.undo()
    assert session.clicks() == [SessionClick(10, 20, True)] and session.is_up_to_date()


def test_set_labels_clears_the_history(session):
    session.add_click(10, 20)
    session.predict()
    session.commit()
    other = np.zeros((H, W), np.int32)
    session.set_labels(other)
    assert session.labels is other and not session.can_undo
    with pytest.raises(TypeError, match="integer"):
        session.set_labels(np.zeros((H, W), np.float32))


# ------------------------------------------------------------------------------ real predictor


def test_with_the_real_predictor_and_the_tiny_network(image):
    from napari_fbrs.core.models.registry import build_model
    from napari_fbrs.core.predictor import Predictor

    net = build_model("tiny_test")

    def factory():
        return Predictor(net, mode="f-BRS-B", device="cpu", zoom_in=None)

    s = SegmentationSession(np.stack([image, image[::-1]]), predictor_factory=factory)
    s.add_click(10, 20, key=(1,))
    s.add_click(30, 5, positive=False, key=(1,))
    prob = s.predict((1,)).copy()

    direct = factory()
    direct.set_image(image[::-1])
    direct.add_click(10, 20, True)
    np.testing.assert_allclose(prob, direct.add_click(30, 5, False), atol=1e-6)

    s.undo()
    s.predict((1,))
    s.redo()
    np.testing.assert_allclose(s.predict((1,)), prob, atol=1e-6)
    assert s.predictor((1,)).clicks[-1].positive is False


# ------------------------------------------------------------------------------ propagation


def _small_negatives():
    return DiskPredictor(neg_radius=1.0)


def test_propagation_through_a_stack_is_one_undo_step(image):
    s = SegmentationSession(np.stack([image] * 4), predictor_factory=_small_negatives)
    s.add_click(20, 25, key=(1,))
    s.predict((1,))
    request = s.propagation_request((1,))
    assert request.axis == 0 and request.mask.shape == (H, W)
    seen = []
    volume = s.compute_propagation(request, progress=lambda done, total: seen.append(total))
    assert volume.shape == (4, H, W) and seen and seen[-1] == 3
    for z in range(4):
        np.testing.assert_array_equal(volume[z], disk(20, 25))
    info = s.commit_propagation(request, volume)
    assert info.label == 1 and info.n_pixels == 4 * disk(20, 25).sum()
    np.testing.assert_array_equal(s.labels, np.stack([disk(20, 25)] * 4).astype(np.uint32))
    assert s.clicks((1,)) == []
    change = s.undo()
    assert change.description == "undo: propagation of label 1" and not s.labels.any()
    assert s.clicks((1,)) == [SessionClick(20, 25, True)]
    with pytest.raises(ValueError, match="changed"):
        s.add_click(5, 5, key=(1,))
        s.commit_propagation(request, volume)


def test_propagation_walks_one_axis_and_keeps_existing_labels(image):
    labels = np.zeros((2, 3, H, W), np.uint16)
    labels[1, 2, 20, 25] = 9
    s = SegmentationSession(
        np.stack([np.stack([image] * 3)] * 2), labels=labels, predictor_factory=_small_negatives
    )
    s.add_click(20, 25, key=(1, 0))
    s.predict((1, 0))
    with pytest.raises(ValueError, match="not a slice axis"):
        s.propagation_request((1, 0), axis=2)
    request = s.propagation_request((1, 0), axis=1)
    s.commit_propagation(request, s.compute_propagation(request))
    assert not labels[0].any()
    expected = disk(20, 25).astype(np.uint16) * 10
    np.testing.assert_array_equal(labels[1, 0], expected)
    assert labels[1, 2, 20, 25] == 9  # never overwritten
    assert (labels[1, 2] == 10).sum() == disk(20, 25).sum() - 1


def test_propagation_needs_a_stack_and_a_mask(session):
    session.add_click(10, 10)
    session.predict()
    with pytest.raises(ValueError, match="stack"):
        session.propagation_request()


# ------------------------------------------------------------------------------ channels


def _unit(plane, lo, hi):
    return np.clip((plane.astype(np.float32) - lo) / (hi - lo), 0, 1)


def test_channels_along_an_axis_are_one_slice_and_map_to_grey_or_rgb():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 4000, (2, 3, H, W), dtype=np.uint16)  # (z, c, y, x)
    DiskPredictor.instances.clear()
    s = SegmentationSession(
        image, channel_axis=1, contrast_limits=(100, 3000), predictor_factory=DiskPredictor
    )
    assert s.stack_shape == (2, 1) and s.labels_shape == (2, 1, H, W)
    assert s.n_channels == 3 and s.channel_map == (0,) and s.channel_axis == 1
    assert s.slice_axes == (0,) and s.default_axis == 0
    # every channel coordinate is the same slice
    assert s.key_at([1.2, 2.0]) == s.key_at([0.6, 0.0]) == (1, 0)
    assert s.key_at([2.0, 0.0]) is None and s.key_at([7.0, 0.0], clip=True) == (1, 0)
    plane, limits = s.input_slice((1, 0))
    np.testing.assert_array_equal(plane, image[1, 0])
    assert limits == (100.0, 3000.0)
    s.set_channels((2, None, 0))
    rgb, limits = s.input_slice((1, 0))
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.float32 and limits == (0.0, 1.0)
    np.testing.assert_allclose(rgb[..., 0], _unit(image[1, 2], 100, 3000), atol=1e-6)
    assert not rgb[..., 1].any()
    np.testing.assert_allclose(rgb[..., 2], _unit(image[1, 0], 100, 3000), atol=1e-6)
    s.add_click(10, 20, key=(1, 0))
    s.predict((1, 0))
    pred = DiskPredictor.instances[-1]
    np.testing.assert_array_equal(pred.image, rgb)
    assert pred.contrast_limits == (0.0, 1.0)
    np.testing.assert_array_equal(s.image_slice((1, 0)), image[1, 0])  # as stored
    with pytest.raises(ValueError, match="leading axis"):
        SegmentationSession(image, channel_axis=2)
    with pytest.raises(ValueError, match="does not exist"):
        s.set_channels((3,))
    with pytest.raises(ValueError, match="one to three"):
        s.set_channels((0, 1, 2, 0))
    with pytest.raises(ValueError, match="not a slice axis"):
        s.neighbour((0, 0), axis=1)


def test_separate_channel_arrays_each_with_their_own_contrast_limits():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 200, (3, H, W), dtype=np.uint8)
    b = rng.normal(500, 200, (3, H, W)).astype(np.float32)
    b[0, 0, 0] = np.nan
    s = SegmentationSession(
        a,
        channels=[a, b],
        channel_map=(1, 0),
        channel_limits=[(0, 100), (0, 1000)],
        predictor_factory=DiskPredictor,
    )
    assert s.n_channels == 2 and s.stack_shape == (3,) and s.labels_shape == (3, H, W)
    rgb, limits = s.input_slice((0,))
    assert rgb.shape == (H, W, 3) and limits == (0.0, 1.0)
    np.testing.assert_allclose(rgb[..., 0], np.nan_to_num(_unit(b[0], 0, 1000)), atol=1e-6)
    assert rgb[0, 0, 0] == 0.0  # NaN is the darkest value
    np.testing.assert_allclose(rgb[..., 1], _unit(a[0], 0, 100), atol=1e-6)
    assert not rgb[..., 2].any()
    s.set_channels((1,))  # one channel: grey, with its own limits
    plane, limits = s.input_slice((2,))
    np.testing.assert_array_equal(plane, b[2])
    assert limits == (0.0, 1000.0)
    s.channel_limits = [None, None]  # falls back to contrast_limits (here: none)
    assert s.input_slice((2,))[1] is None
    with pytest.raises(ValueError, match="does not match"):
        s.set_channels((0,), channels=[a[:, :-1]])
    with pytest.raises(ValueError, match="one entry per channel"):
        s.channel_limits = [(0, 1)]
    with pytest.raises(ValueError, match="RGB"):
        SegmentationSession(np.zeros((H, W, 3)), rgb=True, channels=[a])


def test_changing_the_channels_predicts_again_with_the_clicks_replayed():
    a = np.zeros((2, H, W), np.uint8)
    b = np.full((2, H, W), 7, np.uint8)
    DiskPredictor.instances.clear()
    s = SegmentationSession(a, channels=[a, b], predictor_factory=DiskPredictor)
    s.add_click(10, 20, key=(1,))
    s.add_click(12, 30, positive=False, key=(1,))
    s.predict((1,))
    (first,) = DiskPredictor.instances
    assert not first.image.any()
    s.add_click(30, 40, key=(1,))
    running = s.request((1,))
    assert s.set_channels((1,)) == [(1,)]
    assert s.set_channels((1,)) == []  # the same again: nothing to do
    assert s.is_stale(running) and s.compute(running) is None
    assert s.prob((1,)) is None and not s.is_up_to_date((1,))
    prob = s.predict((1,))
    second = DiskPredictor.instances[-1]
    assert second is not first and (second.image == 7).all()
    assert second.calls == 3  # the three clicks replayed
    np.testing.assert_array_equal(prob > 0.5, disk(30, 40) & ~disk(12, 30))
    with pytest.raises(ValueError, match="RGB"):
        SegmentationSession(np.zeros((H, W, 3)), rgb=True).set_channels((0,))


class _Recorder:
    """An array that records which planes are read from it (through dask)."""

    def __init__(self, array):
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, index):
        out = self.array[index]
        assert out.size == self.shape[-2] * self.shape[-1], f"not one plane: {index}"
        lead = [i.start if isinstance(i, slice) else int(i) for i in index[: self.ndim - 2]]
        self.reads.append(tuple(lead))
        return out


def _lazy(array, recorder_out):
    da = pytest.importorskip("dask.array")
    rec = _Recorder(array)
    recorder_out.append(rec)
    chunks = (1,) * (array.ndim - 2) + array.shape[-2:]
    return da.from_array(rec, chunks=chunks, meta=np.empty((0,) * array.ndim, array.dtype))


def test_lazy_stacks_are_read_one_plane_at_a_time():
    recs = []
    stack = np.stack([np.full((2, H, W), z, np.uint8) for z in range(5)])  # (z, c, y, x)
    lazy = _lazy(stack, recs)
    (rec,) = recs
    s = SegmentationSession(
        lazy, channel_axis=1, channel_map=(0, 1), predictor_factory=_small_negatives
    )
    assert rec.reads == []  # nothing read to set up
    s.add_click(20, 25, key=(3, 0))
    s.predict((3, 0))
    assert sorted(rec.reads) == [(3, 0), (3, 1)]  # the two channels of slice 3, once
    rec.reads.clear()
    request = s.propagation_request((3, 0), direction=1)
    volume = s.compute_propagation(request)
    assert volume[3:].any(axis=(1, 2)).all() and not volume[:3].any()
    assert sorted(rec.reads) == [(4, 0), (4, 1)]  # only the slice propagated to


# ------------------------------------------------------------------------------ object ids


def _predicted(s, y, x, key, positive=True):
    s.add_click(y, x, positive=positive, key=key)
    s.predict(key)


def test_object_ids_are_pinned_and_carried_to_the_next_slice(image):
    s = SegmentationSession(np.stack([image] * 4), predictor_factory=DiskPredictor)
    assert s.carried_label((0,)) is None
    _predicted(s, 10, 20, (0,))
    assert s.commit((0,)).label == 1
    assert s.carried_label((0,)) == 1  # the object just finished here
    assert s.neighbour((0,), 0, 1) == (1,) and s.neighbour((0,), 0, -1) is None
    assert s.neighbour((3,), step=1) is None
    s.set_object_label((1,), s.carried_label((0,)))
    assert s.object_label((1,)) == 1 and s.carried_label((1,)) == 1
    _predicted(s, 11, 21, (1,))
    info = s.commit((1,))
    assert info.label == 1 and s.labels[1, 11, 21] == 1
    assert s.object_label((1,)) is None  # the next object there is a new one
    _predicted(s, 30, 40, (1,))
    assert s.commit((1,)).label == 2
    assert s.carried_label((1,)) == 2  # the most recent object of the slice
    s.undo()  # the commit of 2
    s.undo()  # its click
    s.undo()  # the commit of 1 on slice 1: its object comes back, with its pin
    assert s.object_label((1,)) == 1 and s.labels[1].max() == 0
    s.predict((1,))
    assert s.commit((1,)).label == 1
    assert s.set_object_label((2,), None) is False
    with pytest.raises(ValueError, match="start at 1"):
        s.set_object_label((2,), 0)


def test_a_pinned_id_replaces_its_old_pixels_on_the_slice(image):
    s = SegmentationSession(image, predictor_factory=DiskPredictor)
    _predicted(s, 10, 20, ())
    s.commit()
    _predicted(s, 30, 30, ())
    s.commit()  # object 2 elsewhere
    before = s.labels.copy()
    s.set_object_label((), 1)  # a corrected version of object 1
    _predicted(s, 12, 24, ())
    info = s.commit()
    expected = np.where(disk(12, 24), 1, np.where(disk(30, 30), 2, 0))
    np.testing.assert_array_equal(s.labels, expected)
    assert info.label == 1 and info.n_cleared == (disk(10, 20) & ~disk(12, 24)).sum()
    assert info.n_pixels == (disk(12, 24) & ~disk(10, 20)).sum()
    s.undo()
    np.testing.assert_array_equal(s.labels, before)
    s.redo()
    np.testing.assert_array_equal(s.labels, expected)
    # the new mask inside the old object: nothing new to write, still a valid commit
    s.set_object_label((), 1)
    _predicted(s, 12, 24, ())
    s.prob_thresh = 0.95  # (no mask)
    with pytest.raises(ValueError, match="empty"):
        s.commit()
    s.prob_thresh = 0.49
    assert s.commit().n_cleared == 0
    # an explicit id without replace adds to the object
    _predicted(s, 10, 15, ())
    s.commit(label=1)
    assert (s.labels == 1).sum() == (disk(12, 24) | (disk(10, 15) & ~disk(30, 30))).sum()


def test_edit_object_reopens_a_finished_object_with_its_clicks(image):
    s = SegmentationSession(np.stack([image] * 3), predictor_factory=DiskPredictor)
    _predicted(s, 10, 20, (0,))
    s.add_click(12, 40, positive=False, key=(0,))
    s.predict((0,))
    s.commit((0,))  # object 1, two clicks
    _predicted(s, 30, 30, (0,))
    s.commit((0,))  # object 2
    for y, x in ((30, 10), (10, 40)):  # two more: object 1's predictor and map are released
        _predicted(s, y, x, (1,))
        s.commit((1,))
    before = s.labels.copy()
    assert s.edit_object(1, (0,)) == 2
    assert [tuple(c) for c in s.clicks((0,))] == [(10, 20, True), (12, 40, False)]
    assert s.object_label((0,)) == 1 and not s.is_up_to_date((0,))
    np.testing.assert_array_equal(s.labels, before)  # nothing written yet
    np.testing.assert_array_equal(s.predict((0,)) >= 0.49, before[0] == 1)
    # a correction, then finishing replaces object 1 on this slice only
    s.add_click(14, 22, key=(0,))
    s.predict((0,))
    info = s.commit((0,))
    assert info.label == 1 and info.n_cleared > 0
    np.testing.assert_array_equal(s.labels[0] == 1, disk(14, 22) & ~disk(30, 30))
    np.testing.assert_array_equal(s.labels[1:], before[1:])
    # undo: the commit, the click, then the reopening (the slice as it was, unpinned)
    for _ in range(2):
        s.undo()
    assert s.undo().description == "undo: edit of label 1"
    assert s.clicks((0,)) == [] and s.object_label((0,)) is None
    np.testing.assert_array_equal(s.labels, before)
    assert s.redo().description == "redo: edit of label 1"
    assert s.object_label((0,)) == 1 and len(s.clicks((0,))) == 2


def test_edit_object_right_after_finishing_shows_its_preview_at_once(session):
    _predicted(session, 10, 20, ())
    session.commit()
    calls = DiskPredictor.instances[-1].calls
    assert session.edit_object(1) == 1
    assert session.is_up_to_date() and session.request() is None
    np.testing.assert_array_equal(session.mask(), session.labels == 1)
    assert DiskPredictor.instances[-1].calls == calls


def test_edit_object_refuses_and_changes_nothing(image):
    s = SegmentationSession(np.stack([image] * 2), predictor_factory=DiskPredictor)
    _predicted(s, 10, 20, (0,))
    s.commit((0,))
    with pytest.raises(ValueError, match="no object 2 on this slice"):
        s.edit_object(2, (0,))
    with pytest.raises(ValueError, match="no object 1 on this slice"):
        s.edit_object(1, (1,))
    with pytest.raises(ValueError, match="start at 1"):
        s.edit_object(0, (0,))
    _predicted(s, 30, 30, (0,))
    with pytest.raises(ValueError, match="unfinished object"):
        s.edit_object(1, (0,))
    assert len(s.clicks((0,))) == 1 and s.object_label((0,)) is None
    # an object the session did not make (here: written into the labels): the pin only
    s.reset_clicks((0,))
    labels = s.labels.copy()
    labels[1, 5:9, 5:9] = 7
    s.set_labels(labels)
    assert s.edit_object(7, (1,)) == 0
    assert s.clicks((1,)) == [] and s.object_label((1,)) == 7
    _predicted(s, 20, 30, (1,))
    s.commit((1,))
    np.testing.assert_array_equal(s.labels[1] == 7, disk(20, 30))


# ------------------------------------------------------------------ propagation controls


def test_propagation_direction_and_stop_marks(image):
    s = SegmentationSession(np.stack([image] * 6), predictor_factory=_small_negatives)
    _predicted(s, 20, 25, (2,))
    reached = lambda v: [int(z) for z in np.flatnonzero(v.any(axis=(1, 2)))]  # noqa: E731
    request = s.propagation_request((2,), direction=1)
    assert request.stop_slices == () and request.direction == 1
    assert reached(s.compute_propagation(request)) == [2, 3, 4, 5]
    request = s.propagation_request((2,), direction=-1)
    assert reached(s.compute_propagation(request)) == [0, 1, 2]
    s.add_click(5, 5, positive=False, key=(4,))  # a stop mark on slice 4
    s.add_click(6, 6, positive=False, key=(0,))
    s.add_click(7, 7, positive=True, key=(0,))  # not a stop: it has an object click
    assert s.is_stop((4,)) and not s.is_stop((0,)) and not s.is_stop((1,))
    assert s.stop_slices((2,)) == (4,)
    request = s.propagation_request((2,))
    assert request.stop_slices == (4,)
    assert reached(s.compute_propagation(request)) == [0, 1, 2, 3]
    request = s.propagation_request((2,), stop_slices=[1, 2])
    assert request.stop_slices == (1,)
    assert reached(s.compute_propagation(request)) == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="direction"):
        s.propagation_request((2,), direction=2)
    with pytest.raises(ValueError, match="stop_iou"):
        s.propagation_request((2,), stop_iou=1.5)


def test_stop_marks_belong_to_their_line_of_slices():
    s = SegmentationSession(np.zeros((2, 4, H, W), np.uint8))  # (t, z, y, x)
    s.add_click(5, 5, positive=False, key=(0, 3))
    s.add_click(5, 5, positive=False, key=(1, 1))
    assert s.stop_slices((1, 2), axis=1) == (1,)  # along z at t = 1
    assert s.stop_slices((0, 0), axis=1) == (3,)  # along z at t = 0
    assert s.stop_slices((0, 1), axis=0) == (1,)  # along t at z = 1
    assert s.stop_slices((0, 2), axis=0) == ()
    assert s.stop_slices((0, 3), axis=0) == ()  # the start slice itself is no stop


class _RadiusFromImage(DiskPredictor):
    """A disk whose radius is the slice's (constant) intensity."""

    def set_image(self, image, contrast_limits=None):
        super().set_image(image, contrast_limits)
        self.radius = float(np.asarray(image).flat[0])
        self.neg_radius = 1.0


def test_propagation_stops_where_the_object_changes_too_much():
    radii = [6, 6, 6, 3, 3]
    stack = np.stack([np.full((H, W), r, np.uint8) for r in radii])
    s = SegmentationSession(stack, predictor_factory=_RadiusFromImage)
    _predicted(s, 20, 25, (0,))
    request = s.propagation_request((0,), stop_iou=0.5)
    volume = s.compute_propagation(request)
    assert volume[:3].any(axis=(1, 2)).all() and not volume[3:].any()  # IoU 0.25 < 0.5
    volume = s.compute_propagation(request, stop_iou=0.2)  # the override
    assert volume.any(axis=(1, 2)).all()
    np.testing.assert_array_equal(volume[4], disk(20, 25, r=3))


def test_propagation_regrowth_rule_stops_at_a_touching_neighbour():
    radii = [6, 5, 3, 5, 6]  # a nucleus narrowing to slice 2, then the next one
    stack = np.stack([np.full((H, W), r, np.uint8) for r in radii])
    s = SegmentationSession(stack, predictor_factory=_RadiusFromImage)
    _predicted(s, 20, 25, (0,))
    volume = s.compute_propagation(s.propagation_request((0,), stop_iou=0.2))
    assert volume.any(axis=(1, 2)).all()  # IoU alone walks on into the neighbour
    request = s.propagation_request((0,), stop_iou=0.2, regrowth=0.1, min_contrast=0.5)
    assert (request.regrowth, request.min_contrast) == (0.1, 0.5)
    volume = s.compute_propagation(request)
    assert volume[:3].any(axis=(1, 2)).all() and not volume[3:].any()
    record = s.commit_propagation(request, volume)
    assert s.commits()[-1].propagation["regrowth"] == 0.1
    assert s.commits()[-1].propagation["min_contrast"] == 0.5
    assert record.label == 1
    with pytest.raises(ValueError, match="regrowth must be positive"):
        s.propagation_request((0,), regrowth=-1)
    with pytest.raises(ValueError, match="min_contrast must lie"):
        s.propagation_request((0,), min_contrast=0)


def test_cancelling_a_propagation_gives_nothing(image):
    s = SegmentationSession(np.stack([image] * 5), predictor_factory=_small_negatives)
    _predicted(s, 20, 25, (0,))
    request = s.propagation_request((0,))
    seen = []
    volume = s.compute_propagation(
        request, progress=lambda done, total: seen.append(done), cancel=lambda: bool(seen)
    )
    assert volume is None and seen == [1]


def test_correcting_a_slice_and_propagating_again_replaces_the_object(image):
    s = SegmentationSession(np.stack([image] * 5), predictor_factory=_small_negatives)
    _predicted(s, 20, 25, (0,))
    request = s.propagation_request((0,))
    assert s.commit_propagation(request, s.compute_propagation(request)).label == 1
    assert s.carried_label((3,)) == 1  # the propagation wrote on slice 3
    first = s.labels.copy()
    # slice 3 was wrong: the user corrects it there and propagates forward from it
    s.set_object_label((3,), s.carried_label((3,)))
    _predicted(s, 24, 30, (3,))
    request = s.propagation_request((3,), direction=1)
    info = s.commit_propagation(request, s.compute_propagation(request))
    assert info.label == 1 and info.n_cleared == 2 * (disk(20, 25) & ~disk(24, 30)).sum()
    np.testing.assert_array_equal(s.labels[:3], first[:3])  # before the corrected slice
    for z in (3, 4):
        np.testing.assert_array_equal(s.labels[z] == 1, disk(24, 30))
    s.undo()  # one step
    np.testing.assert_array_equal(s.labels, first)
    assert s.clicks((3,)) == [SessionClick(24, 30, True)] and s.object_label((3,)) == 1


def test_a_nan_click_is_not_a_finite_coordinate():
    s = SegmentationSession(np.zeros((8, 8), np.uint8))
    for y, x in [(np.nan, 1.0), (1.0, np.inf)]:
        with pytest.raises(ValueError, match="not a finite coordinate"):
            s.add_click(y, x)
    with pytest.raises(ValueError, match="outside the image"):
        s.add_click(9.0, 1.0)
    with pytest.raises(ValueError, match="\\(y, x, positive\\)"):
        s.set_clicks((), [(1.0, 2.0)])
    assert s.all_clicks() == {}


def test_commits_list_each_committed_object_with_its_clicks():
    image = np.zeros((8, 8), np.uint8)
    s = SegmentationSession(image)
    assert s.commits() == [] and s.commits(undone=True) == []
    # a hand-made preview (no predictor needed): a 2 x 2 square around the click
    s.add_click(3, 3)
    obj = s._obj(())
    prob = np.zeros((8, 8), np.float32)
    prob[2:4, 2:4] = 1.0
    obj.prob, obj.prob_clicks = prob, obj.clicks
    s.commit()
    (c,) = s.commits()
    assert (c.key, c.label, c.n_pixels, c.propagated, c.replaced) == ((), 1, 4, False, False)
    assert c.clicks == (SessionClick(3.0, 3.0, True),) and c.keys == ((),)
    s.undo()
    assert s.commits() == [] and [u.label for u in s.commits(undone=True)] == [1]
    s.redo()
    assert [u.label for u in s.commits()] == [1] and s.commits(undone=True) == []
