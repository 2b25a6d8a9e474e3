"""Property-based tests (hypothesis) of the core API.

* The predictor, on random images (every numeric dtype, grey/RGB/RGBA, 1 to 40 pixels a
  side, NaN and +/-Inf included), random clicks (some off the image or not finite) and
  random settings (all six modes, ZoomIn, flip, longest side, network clicks): every
  call returns an ``(H, W)`` float32 probability map in ``[0, 1]``, or raises a
  documented ``ValueError`` (bad image, click off the image) that changes nothing.
* The session, driven by random clicks, commits, undos, redos and resets: the labels
  change only by a commit (or its undo/redo), ids never wrap, and undoing everything
  restores the labels exactly.

``max_examples`` is small so that the file runs in well under a minute; the tiny test
network (``tiny_test``) makes each example a few milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import napari_fbrs as nf
from napari_fbrs.core.models.registry import build_model
from napari_fbrs.core.session import SegmentationSession

NET = build_model("tiny_test")
NUMERIC = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
           np.float16, np.float32, np.float64, np.bool_]  # fmt: skip

FAST = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@st.composite
def images(draw):
    """``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` of any numeric dtype, any values."""
    dtype = draw(st.sampled_from(NUMERIC))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    channels = draw(st.sampled_from([(), (3,), (4,)]))
    shape = (h, w, *channels)
    if draw(st.booleans()):  # mostly constant (flat images, single values)
        fill = draw(arrays(dtype, (1,)))[0]
        return np.full(shape, fill, dtype=dtype)
    return draw(arrays(dtype, shape))


@st.composite
def predictors(draw):
    mode = draw(st.sampled_from(nf.MODES))
    zoom = draw(
        st.none()
        | st.builds(
            nf.ZoomIn,
            target_size=st.integers(8, 48),
            skip_clicks=st.integers(0, 2),
            expansion_ratio=st.floats(1.0, 2.0),
            min_crop_size=st.integers(1, 32),
            first_click_crop=st.none() | st.just("auto") | st.integers(8, 64),
            beyond_border=st.booleans(),
        )
    )
    return nf.Predictor(
        NET,
        mode=mode,
        device="cpu",
        with_flip=draw(st.booleans()),
        zoom_in=zoom,
        prob_thresh=draw(st.floats(0.05, 0.95)),
        max_size=draw(st.none() | st.integers(16, 48)),
        lbfgs_maxfun=draw(st.integers(1, 3)),
        net_clicks_limit=draw(st.none() | st.integers(1, 3)),
        trim_overshoot=draw(st.booleans()),
    )


def coordinate(n: int):
    """Mostly inside ``[-0.5, n - 0.5)``, sometimes just outside, rarely not finite."""
    return st.one_of(
        st.floats(-0.5, n - 0.5, exclude_max=True),
        st.floats(-3.0, n + 3.0),
        st.sampled_from([np.nan, np.inf, -np.inf, -0.5, n - 0.5, 1e300]),
    )


def inside(y: float, x: float, shape) -> bool:
    return bool(
        np.isfinite(y)
        and np.isfinite(x)
        and -0.5 <= y < shape[0] - 0.5
        and -0.5 <= x < shape[1] - 0.5
    )


def check_prob(prob, shape):
    assert isinstance(prob, np.ndarray)
    assert prob.shape == shape and prob.dtype == np.float32
    assert np.isfinite(prob).all()
    assert prob.min() >= 0.0 and prob.max() <= 1.0


@FAST
@given(image=images(), predictor=predictors(), data=st.data())
def test_any_image_any_clicks_any_mode_gives_a_probability_map(image, predictor, data):
    with np.errstate(all="ignore"):  # float16/float64 extremes overflow float32: expected
        limits = data.draw(st.none() | st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)))
        predictor.set_image(image, contrast_limits=limits)
    shape = image.shape[:2]
    check_prob(predictor.prob, shape)
    for _ in range(data.draw(st.integers(1, 4))):
        y, x = data.draw(coordinate(shape[0])), data.draw(coordinate(shape[1]))
        positive = data.draw(st.booleans())
        before = (predictor.clicks, predictor.prob.copy())
        if inside(y, x, shape):
            check_prob(predictor.add_click(y, x, positive), shape)
            assert predictor.mask.shape == shape and predictor.mask.dtype == np.bool_
        else:
            with pytest.raises(ValueError, match="outside the image|not a finite"):
                predictor.add_click(y, x, positive)
            assert predictor.clicks == before[0]
            np.testing.assert_array_equal(predictor.prob, before[1])
    check_prob(predictor.undo(), shape)
    check_prob(predictor.redo(), shape)


@settings(max_examples=30, deadline=None, database=None)
@given(
    dtype=st.sampled_from([np.complex64, np.complex128, object, "U2", "S2", "datetime64[s]", "V4"]),
    shape=st.sampled_from([(3, 3), (3, 3, 3)]),
)
def test_non_numeric_images_raise_value_error(dtype, shape):
    p = nf.Predictor(NET, mode="NoBRS", device="cpu")
    with pytest.raises(ValueError, match="complex|non-numeric"):
        p.set_image(np.zeros(shape, dtype=dtype))


@settings(max_examples=30, deadline=None, database=None)
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=5))
def test_any_shape_is_segmented_or_refused_with_value_error(shape):
    shape = tuple(shape)
    ok = (len(shape) == 2 or (len(shape) == 3 and shape[2] in (3, 4))) and min(shape[:2]) > 0
    p = nf.Predictor(NET, mode="NoBRS", device="cpu", zoom_in=None)
    image = np.zeros(shape, np.uint8)
    if ok:
        p.set_image(image)
        check_prob(p.add_click(0, 0), shape[:2])
    else:
        with pytest.raises(ValueError, match="expected a|empty"):
            p.set_image(image)


@settings(max_examples=40, deadline=None, database=None)
@given(mode=st.sampled_from(nf.MODES), data=st.data())
def test_undo_then_the_same_click_gives_the_same_result(mode, data):
    image = np.random.default_rng(0).integers(0, 255, (24, 28), dtype=np.uint8)
    p = nf.Predictor(NET, mode=mode, device="cpu", lbfgs_maxfun=3,
                     zoom_in=nf.ZoomIn(target_size=24, min_crop_size=8))  # fmt: skip
    p.set_image(image)
    clicks = data.draw(
        st.lists(
            st.tuples(st.integers(0, 23), st.integers(0, 27), st.booleans()), min_size=1, max_size=4
        )
    )
    for c in clicks[:-1]:
        p.add_click(*c)
    last = p.add_click(*clicks[-1]).copy()
    p.undo()
    np.testing.assert_array_equal(p.add_click(*clicks[-1]), last)


# ------------------------------------------------------------------------------ session


def _disk_factory():
    from napari_fbrs.core.predictor import Predictor
    from napari_fbrs.core.testing import disk_net

    net = disk_net(4.0)
    return lambda: Predictor(net, mode="NoBRS", device="cpu", zoom_in=None, with_flip=False)


FACTORY = _disk_factory()
SH = (2, 24, 24)


class SessionMachine(RuleBasedStateMachine):
    """Random edits of a stack session; the labels must follow the commits exactly."""

    @initialize(dtype=st.sampled_from([np.uint8, np.int8, np.uint16, np.bool_]),
                start=st.sampled_from([0, "max"]))  # fmt: skip
    def start(self, dtype, start):
        labels = np.zeros(SH, dtype)
        if start == "max":  # an id at the dtype's limit: the next one must not wrap
            labels[0, 0, 0] = 1 if dtype == np.bool_ else np.iinfo(dtype).max
        self.session = SegmentationSession(
            np.zeros(SH, np.uint8), labels=labels, predictor_factory=FACTORY
        )
        self.initial = labels.copy()
        self.history = [labels.copy()]  # labels after each applied commit
        self.kinds: list[str] = []  # applied steps: "click" or "commit"
        self.undone: list[str] = []
        self.expected = labels.copy()

    def _step(self, kind):
        self.kinds.append(kind)
        self.undone.clear()

    @rule(key=st.sampled_from([(0,), (1,)]), y=st.floats(-0.5, 23.4), x=st.floats(-0.5, 23.4),
          positive=st.booleans())  # fmt: skip
    def click(self, key, y, x, positive):
        self.session.add_click(y, x, positive, key=key)
        self._step("click")

    @rule(key=st.sampled_from([(0,), (1,)]), overwrite=st.booleans())
    def commit(self, key, overwrite):
        s = self.session
        s.predict(key)
        try:
            info = s.commit(key, overwrite=overwrite)
        except ValueError:
            np.testing.assert_array_equal(s.labels, self.expected)  # nothing changed
            event("commit refused")
            return
        event("commit" if info.promoted_from is None else "commit with promotion")
        before = self.expected
        after = s.labels.astype(np.int64)
        changed = after != before.astype(np.int64)
        assert info.label >= 1 and not changed[tuple(k for k in range(2) if (k,) != key)].any()
        # a commit writes its id, and clears only its own old pixels (an edited object)
        assert np.isin(after[changed], [0, info.label]).all()
        assert (before[changed & (after == 0)] == info.label).all()
        assert int((changed & (after == 0)).sum()) == info.n_cleared
        assert (after[key] == info.label).sum() >= info.n_pixels
        assert info.n_pixels > 0 or (before[key] == info.label).any()
        if before.dtype != np.bool_ and info.label > np.iinfo(before.dtype).max:
            assert info.promoted_from == before.dtype and s.labels.dtype != before.dtype
        self.expected = s.labels.copy()
        self.history.append(self.expected)
        self._step("commit")

    @rule(key=st.sampled_from([(0,), (1,)]), pick=st.integers(0, 10))
    def edit(self, key, pick):
        present = np.unique(self.expected[key].astype(np.int64))
        present = present[present > 0]
        if not present.size:
            return
        try:
            self.session.edit_object(int(present[pick % present.size]), key)
        except ValueError:  # an unfinished object on the slice
            event("edit refused")
            return
        event("edit")
        self._step("click")

    @rule(key=st.sampled_from([(0,), (1,)]))
    def reset(self, key):
        if self.session.reset_clicks(key):
            self._step("click")

    @precondition(lambda self: self.kinds)
    @rule()
    def undo(self):
        kind = self.kinds.pop()
        change = self.session.undo()
        assert change is not None and change.labels == (kind == "commit")
        if kind == "commit":
            self.undone.append(self.history.pop())
            self.expected = self.history[-1]
        else:
            self.undone.append(None)

    @precondition(lambda self: self.undone)
    @rule()
    def redo(self):
        labels = self.undone.pop()
        change = self.session.redo()
        assert change is not None and change.labels == (labels is not None)
        if labels is not None:
            self.history.append(labels)
            self.expected = labels
        self.kinds.append("commit" if labels is not None else "click")

    @invariant()
    def labels_change_only_by_commits(self):
        if hasattr(self, "session"):
            got = self.session.labels
            np.testing.assert_array_equal(got.astype(np.int64), self.expected.astype(np.int64))
            assert got.min() >= 0  # nothing wrapped into negative ids

    @invariant()
    def reproducible_objects_are_as_their_commits_made_them(self):
        if not hasattr(self, "session"):
            return
        labels = self.session.labels
        seen = set()
        for obj in self.session.reproducible_objects():
            assert obj.clicks
            pixels = sum(int((labels[k] == obj.label).sum()) for k in obj.keys)
            assert pixels == obj.n_object > 0
            for k in obj.keys:
                assert (obj.label, k) not in seen  # one record per object and slice
                seen.add((obj.label, k))

    def teardown(self):
        if hasattr(self, "session"):
            while self.session.can_undo:
                self.session.undo()
            np.testing.assert_array_equal(self.session.labels, self.initial)
            assert self.session.labels.dtype == self.initial.dtype


SessionMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_session_labels_follow_the_commits = SessionMachine.TestCase
