"""A clicks file's objects made again in a blank copy of a session and adopted by the session
(what the panel's *Load objects...* does; ``segment --clicks`` shares the replay)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fbrs.core.clicks_file import ClicksFileError, read_clicks_file
from napari_fbrs.core.clicks_replay import check_objects, object_ids, replay_objects
from napari_fbrs.core.clicks_table import write_clicks_table
from napari_fbrs.core.session import SegmentationSession
from test_clicks_table import _commit, _image, _small_negatives
from test_session import disk


def _saved_objects(tmp_path):
    """A session of a 3-slice stack with a propagated object (id 1, from slice 1) and a
    slice object (id 5 on slice 2); its clicks file and its labels."""
    s = SegmentationSession(_image(3), predictor_factory=_small_negatives)
    s.add_click(20, 25, key=(1,))
    s.add_click(2, 2, False, key=(1,))
    s.predict((1,))
    request = s.propagation_request((1,), direction=1, stop_iou=0.3)
    s.commit_propagation(request, s.compute_propagation(request))
    _commit(s, [(8, 40, True)], key=(2,), label=5)
    path = write_clicks_table(tmp_path / "clicks.csv", s.reproducible_objects())
    return path, s.labels.copy()


def _load(session, path):
    """What the panel does: replay in a blank copy, then adopt each commit."""
    objects = read_clicks_file(path)
    check_objects(objects, session.stack_shape, str(path))
    copy = session.blank_copy()
    outcomes = replay_objects(copy, objects, object_ids(objects))
    infos = [session.commit_object(made, copy.labels) for made in copy.commits()]
    return outcomes, infos


def test_loaded_objects_are_the_saved_ones_and_undo_like_commits(tmp_path):
    path, saved = _saved_objects(tmp_path)
    existing = np.zeros(saved.shape, np.uint16)
    existing[2][disk(8, 40, r=3)] = 9  # the user's own object, under object 5
    s = SegmentationSession(_image(3), labels=existing.copy(), predictor_factory=_small_negatives)
    outcomes, infos = _load(s, path)
    assert [(o.name, o.label, o.n_slices) for o in outcomes] == [("1", 1, 2), ("5", 5, 0)]
    assert [(i.key, i.label) for i in infos] == [((1,), 1), ((2,), 5)]
    # every saved pixel is back, except where the user's object was: that stays 9
    mine = existing > 0
    np.testing.assert_array_equal(s.labels[~mine], saved[~mine])
    np.testing.assert_array_equal(s.labels[mine], 9)
    # adopted objects are first-class: listed with their clicks and settings, undoable
    objects = s.reproducible_objects()
    assert [(o.label, o.key, o.propagated) for o in objects] == [(1, (1,), True), (5, (2,), False)]
    assert objects[0].propagation["direction"] == 1
    assert objects[0].propagation["stop_iou"] == 0.3
    assert len(objects[0].clicks) == 2
    s.undo()
    assert s.clicks((2,))[0].y == 8  # undo brings the clicks back, as for any commit
    s.undo()
    np.testing.assert_array_equal(s.labels, existing)
    s.redo()
    s.redo()
    np.testing.assert_array_equal(s.labels[~mine], saved[~mine])


def test_loaded_ids_can_be_changed(tmp_path):
    path, saved = _saved_objects(tmp_path)
    s = SegmentationSession(_image(3), predictor_factory=_small_negatives)
    copy = s.blank_copy()
    replay_objects(copy, read_clicks_file(path))
    for made in copy.commits():
        s.commit_object(made, copy.labels, label=made.label + 10)
    np.testing.assert_array_equal(s.labels, np.where(saved > 0, saved + 10, 0))


def test_free_ids_keep_wanted_ids_that_no_pixel_holds():
    labels = np.zeros((3, 40, 50), np.uint16)
    labels[1, 5, 5] = 2
    labels[2, 9, 9] = 30
    s = SegmentationSession(_image(3), labels=labels)
    assert s.free_ids([5, 2, 2, 7]) == {5: 5, 2: 31, 7: 7}  # past 30, the largest in use
    assert s.free_ids([40, 30]) == {40: 40, 30: 41}  # past 40, the largest wanted
    assert s.free_ids([]) == {}


def test_a_blank_copy_shares_the_image_and_settings_but_nothing_else():
    labels = np.zeros((3, 40, 50), np.uint8)
    labels[0, :2] = 4
    s = SegmentationSession(
        _image(3), labels=labels, predictor_factory=_small_negatives, prob_thresh=0.7,
        contrast_limits=(10, 200),
    )  # fmt: skip
    s.add_click(5, 5, key=(0,))
    copy = s.blank_copy()
    assert copy.labels.dtype == np.uint32 and not copy.labels.any()
    assert copy.all_clicks() == {} and not copy.can_undo
    assert (copy.prob_thresh, copy.contrast_limits) == (0.7, (10, 200))
    assert copy.predictor_factory is s.predictor_factory
    assert copy.stack_shape == s.stack_shape and copy.image_slice((1,)).shape == (40, 50)


@pytest.mark.parametrize("layout", ["channel_axis", "channel_arrays", "rgb"])
def test_a_blank_copy_gives_the_model_the_same_input(layout):
    rng = np.random.default_rng(1)
    if layout == "rgb":
        s = SegmentationSession(rng.integers(0, 255, (2, 40, 50, 3), dtype=np.uint8), rgb=True)
    elif layout == "channel_axis":
        image = rng.integers(0, 4000, (2, 3, 40, 50), dtype=np.uint16)
        s = SegmentationSession(image, channel_axis=0, channel_map=(1, 0, None))
        s.channel_limits = [(0, 1000), (100, 3000)]
    else:
        arrays = [rng.random((3, 40, 50)) for _ in range(3)]
        s = SegmentationSession(arrays[0], channels=arrays, channel_map=(2, 1))
    copy = s.blank_copy()
    for key in [(0,) * len(s.stack_shape), tuple(n - 1 for n in s.stack_shape)]:
        ours, limits = s.input_slice(key)
        theirs, their_limits = copy.input_slice(key)
        np.testing.assert_array_equal(theirs, ours)
        assert their_limits == limits


def test_an_object_that_cannot_be_adopted_changes_nothing(tmp_path):
    path, _ = _saved_objects(tmp_path)
    s = SegmentationSession(_image(3), predictor_factory=_small_negatives)
    copy = s.blank_copy()
    replay_objects(copy, read_clicks_file(path))
    made = copy.commits()[1]  # object 5 on slice 2
    s.add_click(30, 30, key=(2,))  # an unfinished object there
    cases = [
        (lambda: s.commit_object(made, copy.labels), "slice 2 has an unfinished object"),
        (lambda: s.commit_object(made, copy.labels[:2]), "do not match the image"),
        (lambda: s.commit_object(copy.commits()[0], np.zeros_like(copy.labels)), "no pixels"),
        (lambda: s.commit_object(copy.commits()[0], copy.labels, label=0), "start at 1"),
    ]
    before = s.labels.copy()
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
        np.testing.assert_array_equal(s.labels, before)
    assert len(s.commits()) == 0 and s.clicks((2,))[0].x == 30
    s.labels[...] = 3  # every pixel taken: nothing to write without overwrite
    with pytest.raises(ValueError, match="entirely on existing labels"):
        s.commit_object(copy.commits()[0], copy.labels)
    info = s.commit_object(copy.commits()[0], copy.labels, overwrite=True)
    assert info.n_pixels == int(np.count_nonzero(copy.labels == 1))


def test_a_click_off_the_image_names_its_object(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("object,y,x\ncell,10,10\nbad,10,900\n")
    s = SegmentationSession(_image(), predictor_factory=_small_negatives)
    with pytest.raises(ValueError, match=r"object bad: click \(y=10.0, x=900.0\) lies outside"):
        replay_objects(s, read_clicks_file(path))
    assert set(np.unique(s.labels)) == {0, 1}  # the object before it stays


def test_cancel_stops_between_objects(tmp_path):
    path, _ = _saved_objects(tmp_path)
    s = SegmentationSession(_image(3), predictor_factory=_small_negatives)
    seen = []
    outcomes = replay_objects(
        s,
        read_clicks_file(path),
        progress=lambda outcome, total: seen.append((outcome.name, total)),
        cancel=lambda: len(seen) == 1,
    )
    assert [o.name for o in outcomes] == ["1"] and seen == [("1", 2)]
    assert set(np.unique(s.labels)) == {0, 1}


@pytest.mark.parametrize(
    ("text", "stack", "message"),
    [
        ("z,y,x\n0,1,2\n", (), "the image is 2D"),
        ("y,x,propagate\n1,2,yes\n", (), "the propagate column of F needs a stack"),
        ("y,x\n1,2\n", (3,), "stack of 3 slices: give the slice of each click in a z column"),
        ("z,y,x\n0,1,2\n", (2, 3), "in columns axis-0, axis-1 of F"),
        ("z,y,x\n3,1,2\n", (3,), "the stack has slices 0..2"),
        ("object,z,y,x,propagate\na,0,1,2,yes\na,1,1,2,yes\n", (3,), "clicks on several"),
        ("z,y,x,propagate,propagate_axis\n0,1,2,yes,1\n", (3,), "propagate_axis 1 is not"),
    ],
)
def test_objects_that_do_not_fit_the_image_are_refused(tmp_path, text, stack, message):
    path = tmp_path / "c.csv"
    path.write_text(text)
    with pytest.raises(ClicksFileError, match=message):
        check_objects(read_clicks_file(path), stack, "F")


def test_object_ids_are_the_names_when_they_are_distinct_positive_integers(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("object,y,x\n7,1,2\n3,1,2\n")
    assert object_ids(read_clicks_file(path)) == [7, 3]
    path.write_text("object,y,x\n7,1,2\n07,1,2\n")  # "07" is not how 7 is written
    assert object_ids(read_clicks_file(path)) == [1, 2]
    path.write_text("object,y,x\ncell,1,2\n0,1,2\n")
    assert object_ids(read_clicks_file(path)) == [1, 2]
