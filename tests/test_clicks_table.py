"""The clicks that made a session's objects: which objects qualify
(``SegmentationSession.reproducible_objects``), the CSV file written for them, and that
``segment --clicks`` reads it back (propagate column included)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_fbrs.core.clicks_file import ClicksFileError, PropagationSettings, read_clicks_file
from napari_fbrs.core.clicks_table import clicks_table_rows, write_clicks_table
from napari_fbrs.core.session import CommittedObject, SegmentationSession, SessionClick
from test_session import DiskPredictor, H, W, disk


def _image(n: int | None = None) -> np.ndarray:
    plane = np.random.default_rng(0).integers(0, 255, (H, W), dtype=np.uint8)
    return plane if n is None else np.stack([plane] * n)


def _commit(s: SegmentationSession, clicks, key=(), **kwargs):
    for y, x, positive in clicks:
        s.add_click(y, x, positive, key=key)
    s.predict(key)
    return s.commit(key, **kwargs)


def _small_negatives():
    return DiskPredictor(neg_radius=1.0)


def test_objects_made_by_clicks_qualify_until_changed():
    s = SegmentationSession(_image(), predictor_factory=DiskPredictor)
    _commit(s, [(10, 10, True)])
    _commit(s, [(30, 35, True), (5, 5, False)])
    objects = s.reproducible_objects()
    assert [(o.label, o.key, o.clicks) for o in objects] == [
        (1, (), (SessionClick(10, 10, True),)),
        (2, (), (SessionClick(30, 35, True), SessionClick(5, 5, False))),
    ]
    # painting one pixel more onto object 1: its clicks no longer make it
    s.labels[0, 0] = 1
    assert [o.label for o in s.reproducible_objects()] == [2]
    s.labels[0, 0] = 0
    # a second commit with the same id beside it: the union is no click set's mask
    _commit(s, [(30, 10, True)], label=1)
    assert [o.label for o in s.reproducible_objects()] == [2]
    s.undo()
    assert [o.label for o in s.reproducible_objects()] == [1, 2]


def test_an_edited_object_is_reproduced_by_its_latest_clicks():
    s = SegmentationSession(_image(), predictor_factory=_small_negatives)
    _commit(s, [(20, 20, True)])
    assert s.edit_object(1) == 1
    s.add_click(25, 30, True)  # the disk moves to the last positive click
    s.predict()
    s.commit()
    (obj,) = s.reproducible_objects()
    assert obj.label == 1 and obj.clicks == (SessionClick(20, 20, True), SessionClick(25, 30, True))
    assert obj.replaced and obj.n_pixels == int(disk(25, 30).sum())
    # a later object, then object 1 corrected again: 1 keeps its place before 2 (it had its
    # pixels first), with its latest clicks
    _commit(s, [(8, 40, True)])
    assert s.edit_object(1) == 2
    s.add_click(26, 30, True)
    s.predict()
    s.commit()
    assert [(o.label, len(o.clicks)) for o in s.reproducible_objects()] == [(1, 3), (2, 1)]


def test_propagated_objects_and_remembered_ones_of_a_stack():
    s = SegmentationSession(_image(4), predictor_factory=_small_negatives)
    s.add_click(20, 25, key=(1,))
    s.predict((1,))
    request = s.propagation_request((1,))
    s.commit_propagation(request, s.compute_propagation(request))
    s.labels[3][disk(5, 40, r=3)] = 7  # an object from earlier, remembered with its clicks
    s.remember_objects([(7, (3,), [(5, 40, True)], int(disk(5, 40, r=3).sum()))])
    s.remember_objects([(8, (2,), [(1, 1, True)], 99)])  # not in the labels: left out
    objects = s.reproducible_objects()
    assert [(o.label, o.key, o.propagated) for o in objects] == [(7, (3,), False), (1, (1,), True)]
    assert objects[1].keys == ((0,), (1,), (2,), (3,))
    rows = clicks_table_rows(objects)
    assert rows == [
        ["object", "z", "y", "x", "positive", "propagate"]
        + ["direction", "stop_iou", "regrowth", "min_contrast", "stop_slices"],
        ["7", "3", "5", "40", "true", "false", "", "", "", "", ""],
        ["1", "1", "20", "25", "true", "true", "both", "0.5", "", "", ""],
    ]


def test_the_written_file_reads_back_as_the_same_objects(tmp_path):
    s = SegmentationSession(_image(3), predictor_factory=_small_negatives)
    _commit(s, [(10.5, 12, True), (35, 40, False)], key=(0,))
    _commit(s, [(30, 30, True)], key=(2,), label=5)
    path = write_clicks_table(tmp_path / "sub" / "objects_clicks.csv", s.reproducible_objects())
    assert path.read_text().splitlines()[0] == "object,z,y,x,positive"
    objects = read_clicks_file(path)
    assert [(o.name, o.clicks, o.propagate) for o in objects] == [
        ("1", (((0,), 10.5, 12.0, True), ((0,), 35.0, 40.0, False)), False),
        ("5", (((2,), 30.0, 30.0, True),), False),
    ]


def test_a_2d_image_has_no_slice_column_and_several_slice_axes_have_one_each(tmp_path):
    s = SegmentationSession(_image(), predictor_factory=DiskPredictor)
    _commit(s, [(10, 10, True)])
    assert clicks_table_rows(s.reproducible_objects()) == [
        ["object", "y", "x", "positive"],
        ["1", "10", "10", "true"],
    ]
    s4 = SegmentationSession(np.stack([_image(3)] * 2), predictor_factory=DiskPredictor)
    _commit(s4, [(10, 10, True), (30, 30, False)], key=(1, 2))
    _commit(s4, [(35, 20, True)], key=(0, 1))
    path = write_clicks_table(tmp_path / "clicks.csv", s4.reproducible_objects())
    assert path.read_text().splitlines() == [
        "object,axis-0,axis-1,y,x,positive",
        "1,1,2,10,10,true",
        "1,1,2,30,30,false",
        "2,0,1,35,20,true",
    ]
    assert [(o.name, o.clicks) for o in read_clicks_file(path)] == [
        ("1", (((1, 2), 10.0, 10.0, True), ((1, 2), 30.0, 30.0, False))),
        ("2", (((0, 1), 35.0, 20.0, True),)),
    ]
    with pytest.raises(ValueError, match="a 2D image and of a stack"):
        clicks_table_rows(s.reproducible_objects() + s4.reproducible_objects())


def test_a_propagation_is_written_with_its_axis_and_settings_and_read_back(tmp_path):
    # (t, z, y, x): the object is walked along t (axis 0), forward only, not into t = 3
    s = SegmentationSession(np.stack([_image(2)] * 5), predictor_factory=_small_negatives)
    s.add_click(20, 25, key=(1, 1))
    s.add_click(5, 5, False, key=(1, 1))
    s.predict((1, 1))
    request = s.propagation_request(
        (1, 1), axis=0, direction=1, stop_iou=0.4, stop_slices=[3], min_contrast=0.75
    )
    s.commit_propagation(request, s.compute_propagation(request))
    (obj,) = s.reproducible_objects()
    assert obj.keys == ((1, 1), (2, 1))
    path = write_clicks_table(tmp_path / "clicks.csv", [obj])
    assert path.read_text().splitlines() == [
        "object,axis-0,axis-1,y,x,positive,propagate,propagate_axis,direction,stop_iou,"
        "regrowth,min_contrast,stop_slices",
        "1,1,1,20,25,true,true,0,forward,0.4,,0.75,3",
        "1,1,1,5,5,false,true,0,forward,0.4,,0.75,3",
    ]
    (back,) = read_clicks_file(path)
    assert back.propagate and back.clicks[0] == ((1, 1), 20.0, 25.0, True)
    assert back.settings == PropagationSettings(
        axis=0, direction=1, stop_iou=0.4, regrowth=None, min_contrast=0.75, stop_slices=(3,)
    )


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["1,0,1,2,yes,sideways"], "line 2: direction must be both, forward or backward"),
        (["1,0,1,2,yes,both,1.5"], "line 2: stop_iou must lie in [0, 1]"),
        (["1,0,1,2,yes,both,0.5,-1"], "line 2: regrowth must be positive"),
        (["1,0,1,2,yes,both,0.5,,2"], "line 2: min_contrast must lie in (0, 1]"),
        (["1,0,1,2,yes,both,0.5,,,x"], "line 2: stop_slices must be a slice index"),
        (["1,0,1,2,yes,both,0.5", "1,0,3,4,yes,both,0.6"], "line 3: object '1' has stop_iou"),
    ],
)
def test_bad_propagation_settings_are_reported_by_line(tmp_path, rows, message):
    path = tmp_path / "clicks.csv"
    header = "object,z,y,x,propagate,direction,stop_iou,regrowth,min_contrast,stop_slices"
    path.write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(ClicksFileError, match=re.escape(message)):
        read_clicks_file(path)


@st.composite
def _objects(draw):
    """Objects of one image with 0-3 slice axes, unique ids, any click coordinates, some
    propagated with any settings."""
    depth = draw(st.integers(0, 3))
    labels = draw(st.lists(st.integers(1, 2**31), min_size=1, max_size=5, unique=True))
    coordinate = st.floats(0, 1e5, allow_nan=False, allow_infinity=False)
    objects = []
    for label in labels:
        key = tuple(draw(st.lists(st.integers(0, 999), min_size=depth, max_size=depth)))
        clicks = [SessionClick(draw(coordinate), draw(coordinate), True)]
        clicks += [
            SessionClick(draw(coordinate), draw(coordinate), draw(st.booleans()))
            for _ in range(draw(st.integers(0, 3)))
        ]
        propagated = depth > 0 and draw(st.booleans())
        settings = None
        if propagated and draw(st.booleans()):  # else: a restored one, settings unknown
            settings = {
                "axis": draw(st.integers(0, depth - 1)),
                "direction": draw(st.sampled_from([-1, 0, 1])),
                "stop_iou": draw(st.sampled_from([0.0, 1.0]) | st.floats(0, 1)),
                "stop_slices": tuple(sorted(draw(st.sets(st.integers(0, 999), max_size=3)))),
                "regrowth": draw(st.none() | st.floats(0.001, 10)),
                "min_contrast": draw(st.none() | st.floats(0.001, 1)),
            }
        draw_clicks = tuple(draw(st.permutations(clicks)))
        objects.append(CommittedObject(key, label, draw_clicks, propagated, propagation=settings))
    return depth, objects


@settings(max_examples=150, deadline=None, database=None)
@given(_objects())
def test_any_objects_read_back_exactly_as_written(tmp_path_factory, drawn):
    depth, objects = drawn
    path = write_clicks_table(tmp_path_factory.mktemp("clicks") / "c.csv", objects)
    back = read_clicks_file(path)
    assert [o.name for o in back] == [str(o.label) for o in objects]
    for obj, read in zip(objects, back, strict=True):
        assert read.clicks == tuple((obj.key, c.y, c.x, c.positive) for c in obj.clicks)
        assert read.propagate == obj.propagated
        given_settings = obj.propagation or {}
        assert read.settings == PropagationSettings(
            axis=given_settings.get("axis") if depth > 1 else None,
            direction=given_settings.get("direction"),
            stop_iou=given_settings.get("stop_iou"),
            regrowth=given_settings.get("regrowth"),
            min_contrast=given_settings.get("min_contrast"),
            stop_slices=given_settings.get("stop_slices") or None,
        )


_HEADER_NAMES = ["object", "z", "y", "x", "axis-0", "axis-1", "axis-2", "axis-3", "positive",
                 "propagate", "propagate_axis", "direction", "stop_iou", "regrowth",
                 "min_contrast", "stop_slices", "index", ""]  # fmt: skip
_CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "-1",
            "2.5",
            "1e9",
            "1e400",
            "nan",
            "-inf",
            "true",
            "no",
            "both",
            "forward",
            "3 4",
            "x",
            "\ufeff",
            '"',
            "1;2",
        ]
    ),  # fmt: skip
    st.text(max_size=6),
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    header=st.lists(st.sampled_from(_HEADER_NAMES), min_size=1, max_size=8),
    rows=st.lists(st.lists(_CELLS, max_size=9), max_size=5),
    sep=st.sampled_from([",", ";", "\t"]),
)
def test_any_text_gives_objects_or_a_clicks_file_error(tmp_path_factory, header, rows, sep):
    path = tmp_path_factory.mktemp("clicks") / "c.csv"
    lines = [sep.join(header)] + [sep.join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        objects = read_clicks_file(path)
    except ClicksFileError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    for obj in objects:  # what is read is well formed
        assert obj.clicks and any(c[3] for c in obj.clicks)
        for where, y, x, _ in obj.clicks:
            assert all(isinstance(i, int) and i >= 0 for i in where)
            assert np.isfinite(y) and np.isfinite(x)
