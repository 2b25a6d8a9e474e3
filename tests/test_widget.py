"""The napari dock widget, driven through a real (offscreen) viewer.

Predictions run synchronously (``FbrsWidget.synchronous``) except in the test of
superseded clicks. The network is ``TinyNet`` ("tiny_test") with hand-set weights that
make it segment a disk around the last positive click, so results are predictable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_fbrs._widget import (  # noqa: E402
    CLICKS_LAYER,
    CURRENT_LAYER,
    OBJECTS_LAYER,
    FbrsWidget,
)
from napari_fbrs._widget import notify as notify_module  # noqa: E402
from napari_fbrs._widget import widget as widget_module  # noqa: E402
from napari_fbrs.core import zoo  # noqa: E402
from napari_fbrs.core.predictor import Predictor  # noqa: E402
from napari_fbrs.core.session import SessionClick  # noqa: E402
from napari_fbrs.core.testing import disk_net as _disk_net  # noqa: E402

pytestmark = pytest.mark.gui

H, W = 48, 64
RADIUS = 6.0


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def _no_opengl_queries(no_opengl_queries):
    """Every test here builds napari layers offscreen (see conftest.py)."""


@pytest.fixture(autouse=True)
def _synchronous(monkeypatch):
    monkeypatch.setattr(FbrsWidget, "synchronous", True)


@pytest.fixture
def errors(monkeypatch):
    """Error notifications shown by the widget."""
    seen: list[str] = []
    monkeypatch.setattr(notify_module, "error", seen.append)
    return seen


@pytest.fixture
def warnings_(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(notify_module, "warning", seen.append)
    return seen


def disk_net(radius: float = RADIUS, neg_gain: float = 20.0):
    return _disk_net(radius, neg_gain)


def expected_disk(y, x, radius=RADIUS, shape=(H, W), slack=3.0):
    """Pixels surely inside and surely outside the disk (the net works at stride 4)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(yy - y, xx - x)
    return d <= radius - slack, d >= radius + slack


def make_image(shape=(H, W)):
    return np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)


def open_widget(viewer, **settings) -> FbrsWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
    widget.set_model(disk_net())
    # min_size 0: the test networks draw disks of a radius in view pixels, so views stay
    # at the image's size
    widget.configure(
        **{
            "mode": "NoBRS",
            "zoom_in": False,
            "device": "cpu",
            "with_flip": False,
            "min_size": 0,
            **settings,
        }
    )
    return widget


@pytest.fixture
def viewer2d(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(make_image(), name="img", scale=(0.5, 2.0), translate=(10.0, -3.0))
    return viewer


class _MouseEvent(types.SimpleNamespace):
    pass


def canvas_click(viewer, data_yx, button=1, modifiers=(), drag=False, image="img"):
    """Press and release on the canvas at data coordinates of layer ``image``."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    layer = viewer.layers[image]
    world = layer.data_to_world(list(data_yx))
    position = list(viewer.dims.point)
    position[-len(world) :] = world
    nd = viewer.dims.ndim

    def event(kind, pos):
        return _MouseEvent(
            type=kind,
            pos=np.array(pos, float),
            position=tuple(position),
            button=button,
            buttons=[button],
            modifiers=tuple(modifiers),
            dims_displayed=[nd - 2, nd - 1],
            is_dragging=kind == "mouse_move",
            handled=False,
        )

    mouse_press_callbacks(viewer, ReadOnlyWrapper(event("mouse_press", (100, 100))))
    if drag:
        mouse_move_callbacks(viewer, event("mouse_move", (140, 120)))
    mouse_release_callbacks(viewer, event("mouse_release", (140, 120) if drag else (100, 100)))


# ------------------------------------------------------------------------------ layers


def test_the_manifest_opens_the_widget_with_its_three_layers(viewer2d):
    dock, widget = viewer2d.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
    assert isinstance(widget, FbrsWidget)
    image = viewer2d.layers["img"]
    points = viewer2d.layers[CLICKS_LAYER]
    current = viewer2d.layers[CURRENT_LAYER]
    objects = viewer2d.layers[OBJECTS_LAYER]
    assert (type(points).__name__, type(current).__name__, type(objects).__name__) == (
        "Points",
        "Labels",
        "Labels",
    )
    for layer in (points, current, objects):
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    assert current.data.shape == objects.data.shape == (H, W)
    assert not objects.data.any() and np.issubdtype(objects.data.dtype, np.integer)
    assert "positive" in points.features and len(points.data) == 0
    assert bool(points.feature_defaults["positive"].iloc[0]) is True
    assert viewer2d.layers.selection.active is image
    assert widget.settings.model == "fbrs-lite"  # the default


def test_the_widget_reuses_existing_layers_and_their_clicks(viewer2d):
    objects = viewer2d.add_labels(np.zeros((H, W), np.uint16), name=OBJECTS_LAYER)
    objects.data[0, 0] = 4
    # a clear object under the old click: the taken-over clicks are predicted with the
    # model the widget starts with (the bundled one), before open_widget sets the test's
    yy, xx = np.mgrid[:H, :W]
    viewer2d.layers["img"].data = np.where((yy - 20) ** 2 + (xx - 30) ** 2 < 64, 220, 30).astype(
        np.uint8
    )
    points = viewer2d.add_points(
        np.array([[20.0, 30.0]]), name=CLICKS_LAYER, features={"positive": [True]}
    )
    widget = open_widget(viewer2d)
    assert widget.objects_layer is objects and widget.clicks_layer is points
    assert len([la for la in viewer2d.layers if la.name.startswith("fbrs")]) == 3
    assert widget.session.clicks() == [SessionClick(20.0, 30.0, True)]
    assert not widget.session.can_undo  # taking over old clicks is not an undo step
    widget.session.predict()
    widget._render([()])
    assert widget.finish_object() == 5  # next free id after the existing 4
    assert objects.data[0, 0] == 4


def test_a_missing_bundled_model_is_said_in_the_widget(viewer2d, monkeypatch, errors, tmp_path):
    monkeypatch.setattr(zoo, "bundled_weights_path", lambda filename: tmp_path / filename)
    _, widget = viewer2d.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
    text = widget.model_status.text()
    assert "fbrs-lite" in text and "not installed" in text
    assert "e04040" in widget.model_status.styleSheet()  # shown as an error
    # clicking then fails cleanly: a notification, and every layer as before
    viewer2d.layers[CLICKS_LAYER].add([20.0, 30.0])
    assert len(errors) == 1 and "fbrs-lite" in errors[0]
    assert len(viewer2d.layers[CLICKS_LAYER].data) == 0
    assert not viewer2d.layers[CURRENT_LAYER].data.any()
    assert widget.session.clicks() == [] and not widget.session.can_undo
    # another model works
    widget.set_model(disk_net())
    assert "not installed" not in widget.model_status.text()
    viewer2d.layers[CLICKS_LAYER].add([20.0, 30.0])
    assert viewer2d.layers[CURRENT_LAYER].data[20, 30] == 1


# ------------------------------------------------------------------------------ clicks


def test_points_added_with_napari_tools_produce_a_preview(viewer2d):
    widget = open_widget(viewer2d)
    points = viewer2d.layers[CLICKS_LAYER]
    current = viewer2d.layers[CURRENT_LAYER]
    points.add([20.0, 30.0])
    assert widget.session.clicks() == [SessionClick(20.0, 30.0, True)]
    inside, outside = expected_disk(20, 30)
    assert (current.data[inside] == 1).all() and (current.data[outside] == 0).all()
    np.testing.assert_array_equal(current.data > 0, widget.current_mask)
    assert widget.predictor.clicks[0].positive is True
    # moving the point re-runs the prediction
    points.data = np.array([[30.0, 40.0]])
    inside, outside = expected_disk(30, 40)
    assert (current.data[inside] == 1).all() and (current.data[outside] == 0).all()
    # deleting it clears the preview
    points.selected_data = {0}
    points.remove_selected()
    assert widget.session.clicks() == [] and not current.data.any()


def test_the_default_polarity_of_tool_points_and_their_colours(viewer2d):
    widget = open_widget(viewer2d)
    points = viewer2d.layers[CLICKS_LAYER]
    points.add([20.0, 30.0])
    widget.default_positive_check.setChecked(False)
    points.add([22.0, 33.0])
    assert [c.positive for c in widget.session.clicks()] == [True, False]
    np.testing.assert_allclose(points.face_color[:, :3], [[0, 1, 0], [1, 0, 0]])
    assert not widget.current_mask.any()  # the negative click erased the disk


def test_canvas_clicks_left_right_shift_and_drag(viewer2d):
    widget = open_widget(viewer2d)
    canvas_click(viewer2d, (20, 30))
    canvas_click(viewer2d, (25, 40), button=2)
    canvas_click(viewer2d, (10, 10), modifiers=("Shift",))
    canvas_click(viewer2d, (30, 50), drag=True)  # a pan, not a click
    canvas_click(viewer2d, (30, 50), modifiers=("Control",))  # not ours
    canvas_click(viewer2d, (H + 5, 10))  # outside the image: ignored
    clicks = widget.session.clicks()
    assert [(round(c.y), round(c.x), c.positive) for c in clicks] == [
        (20, 30, True),
        (25, 40, False),
        (10, 10, False),
    ]
    assert len(viewer2d.layers[CLICKS_LAYER].data) == 3
    # a layer tool in use: the canvas is the tool's
    viewer2d.layers.selection.active = viewer2d.layers[OBJECTS_LAYER]
    viewer2d.layers[OBJECTS_LAYER].mode = "paint"
    canvas_click(viewer2d, (5, 5))
    assert len(widget.session.clicks()) == 3
    viewer2d.layers[OBJECTS_LAYER].mode = "pan_zoom"
    widget.canvas_check.setChecked(False)
    canvas_click(viewer2d, (5, 5))
    assert len(widget.session.clicks()) == 3


# ------------------------------------------------------------------------------ commits


def test_finish_commits_id_1_then_2_without_overwriting(viewer2d):
    widget = open_widget(viewer2d)
    objects = viewer2d.layers[OBJECTS_LAYER]
    widget.add_click(20, 20)
    mask1 = widget.current_mask.copy()
    assert widget.finish_object() == 1
    np.testing.assert_array_equal(objects.data, mask1.astype(objects.data.dtype))
    assert len(viewer2d.layers[CLICKS_LAYER].data) == 0
    assert not viewer2d.layers[CURRENT_LAYER].data.any()
    widget.add_click(22, 26)  # overlaps object 1
    mask2 = widget.current_mask.copy()
    assert widget.finish_object() == 2
    np.testing.assert_array_equal(objects.data == 1, mask1)
    np.testing.assert_array_equal(objects.data == 2, mask2 & ~mask1)
    assert widget.finish_object() is None  # nothing to finish


def test_overwrite_selected_label_and_dtype_promotion(viewer2d, warnings_):
    objects = viewer2d.add_labels(np.zeros((H, W), np.uint8), name=OBJECTS_LAYER)
    objects.data[0, 0] = 255
    widget = open_widget(viewer2d)
    widget.add_click(20, 20)
    assert widget.finish_object() == 256
    assert objects.data.dtype == np.uint16 and objects.data[20, 20] == 256
    assert objects.data[0, 0] == 255
    widget.add_click(20, 20)
    assert widget.finish_object() is None and "overwrite" in warnings_[-1]
    widget.overwrite_check.setChecked(True)
    widget.selected_label_check.setChecked(True)
    objects.selected_label = 9
    mask = widget.current_mask.copy()
    assert widget.finish_object() == 9
    np.testing.assert_array_equal(objects.data == 9, mask)
    widget.undo()  # the commit of 9
    assert objects.data[20, 20] == 256
    widget.undo()  # the click of object 9
    widget.undo()  # the commit of 256: the layer's dtype comes back too
    assert objects.data.dtype == np.uint8 and objects.data[20, 20] == 0
    assert objects.data[0, 0] == 255


def test_edit_object_under_the_mouse_and_finish_replaces_it(viewer2d, warnings_):
    widget = open_widget(viewer2d)
    objects = viewer2d.layers[OBJECTS_LAYER]
    widget.add_click(20, 20)
    widget.finish_object()
    widget.add_click(30, 50)
    widget.finish_object()
    before = objects.data.copy()
    # E with the mouse over object 1 (world = data * scale + translate)
    viewer2d.cursor.position = (20 * 0.5 + 10.0, 22 * 2.0 - 3.0)
    widget._edit_key(viewer2d)
    assert [tuple(c) for c in widget.session.clicks()] == [(20.0, 20.0, True)]
    np.testing.assert_array_equal(viewer2d.layers[CLICKS_LAYER].data, [[20.0, 20.0]])
    np.testing.assert_array_equal(widget.current_mask, before == 1)
    assert objects.selected_label == 1 and "Editing object 1" in widget.status_label.text()
    assert not widget.edit_button.isEnabled()  # the slice has an unfinished object
    assert widget.finish_button.text() == "Finish object 1 (Space)"
    np.testing.assert_array_equal(objects.data, before)  # nothing written yet
    # a correction that shrinks it, then Finish replaces object 1 (object 2 is kept)
    widget.add_click(20, 31, positive=False)
    mask = widget.current_mask.copy()
    assert widget.finish_object() == 1, warnings_
    np.testing.assert_array_equal(objects.data == 1, mask & (before != 2))
    np.testing.assert_array_equal(objects.data == 2, before == 2)
    assert "old version cleared" in widget.status_label.text()
    assert widget.finish_button.text() == "Finish object (Space)"  # the next one is new
    for _ in range(3):  # the commit, the click, the reopening
        widget.undo()
    np.testing.assert_array_equal(objects.data, before)
    assert widget.finish_button.text() == "Finish object (Space)"
    assert widget.session.clicks() == [] and widget.session.object_label() is None
    # the button edits the objects layer's selected label; a missing one is refused
    objects.selected_label = 2
    widget.edit_button.click()
    assert widget.session.object_label() == 2 and len(widget.session.clicks()) == 1
    widget.reset_clicks()
    widget.reset_clicks()  # a second Escape unpins
    assert widget.edit_object(5) is False and "no object 5" in warnings_[-1]
    viewer2d.cursor.position = (0.0, 0.0)  # off the objects: the selected label (2)
    objects.selected_label = 7
    widget._edit_key(viewer2d)
    assert "no object 7" in warnings_[-1] and widget.session.clicks() == []
    np.testing.assert_array_equal(objects.data, before)


def test_another_labels_layer_can_receive_the_objects(viewer2d):
    widget = open_widget(viewer2d)
    mine = viewer2d.add_labels(np.zeros((H, W), np.int32), name="mine")
    viewer2d.add_labels(np.zeros((5, 5), np.int32), name="wrong shape")
    names = [widget.objects_combo.itemText(i) for i in range(widget.objects_combo.count())]
    assert names == [OBJECTS_LAYER, "mine"]
    widget.objects_combo.setCurrentText("mine")
    widget.add_click(20, 30)
    assert widget.finish_object() == 1
    assert mine.data[20, 30] == 1 and not viewer2d.layers[OBJECTS_LAYER].data.any()


# ------------------------------------------------------------------------------ history


def test_undo_and_redo_walk_clicks_and_commits(viewer2d):
    widget = open_widget(viewer2d)
    objects = viewer2d.layers[OBJECTS_LAYER]
    points = viewer2d.layers[CLICKS_LAYER]
    current = viewer2d.layers[CURRENT_LAYER]
    widget.add_click(20, 20)
    widget.add_click(21, 27, positive=False)
    preview = current.data.copy()
    widget.finish_object()
    committed = objects.data.copy()
    widget.add_click(35, 50)

    assert widget.undo()  # the click after the commit
    assert len(points.data) == 0 and not current.data.any()
    assert widget.undo()  # the commit
    assert not objects.data.any()
    np.testing.assert_array_equal(current.data, preview)
    np.testing.assert_allclose(points.data, [[20, 20], [21, 27]])
    assert list(points.features["positive"]) == [True, False]
    assert widget.undo()
    assert len(points.data) == 1
    assert widget.redo() and widget.redo()
    np.testing.assert_array_equal(objects.data, committed)
    assert widget.redo()
    np.testing.assert_allclose(points.data, [[35, 50]])
    assert not widget.redo()


def test_keyboard_shortcuts_on_the_canvas(viewer2d):
    widget = open_widget(viewer2d)
    handler = viewer2d.window._qt_viewer._key_map_handler
    objects = viewer2d.layers[OBJECTS_LAYER]

    def tap(key):
        handler.press_key(key)
        handler.release_key(key)

    widget.add_click(20, 20)
    tap("Space")  # a tap finishes the object
    assert objects.data[20, 20] == 1
    tap("Control-Z")
    assert objects.data[20, 20] == 0 and len(widget.session.clicks()) == 1
    tap("Control-Shift-Z")
    assert objects.data[20, 20] == 1
    widget.add_click(40, 50)
    tap("Escape")
    assert widget.session.clicks() == []
    # a Labels layer keeps its own Ctrl+Z (painting undo)
    viewer2d.layers.selection.active = objects
    widget.add_click(40, 50)
    tap("Control-Z")
    assert len(widget.session.clicks()) == 1
    # closing the panel gives napari its keys and canvas back
    viewer2d.window.remove_dock_widget(widget)
    assert widget._on_mouse not in viewer2d.mouse_drag_callbacks
    viewer2d.layers.selection.active = viewer2d.layers["img"]
    tap("Space")
    tap("Control-Z")
    assert len(widget.session.clicks()) == 1 and objects.data[20, 20] == 1


def test_reset_clicks_is_undoable(viewer2d):
    widget = open_widget(viewer2d)
    widget.add_click(20, 20)
    assert widget.reset_clicks()
    assert widget.session.clicks() == [] and not viewer2d.layers[CURRENT_LAYER].data.any()
    widget.undo()
    assert viewer2d.layers[CURRENT_LAYER].data[20, 20] == 1


def test_the_threshold_slider_rethresholds_without_recomputing(viewer2d, monkeypatch):
    widget = open_widget(viewer2d)
    calls = []
    original = Predictor.add_click
    monkeypatch.setattr(
        Predictor, "add_click", lambda self, *a, **k: calls.append(a) or original(self, *a, **k)
    )
    widget.add_click(20, 30)
    area = int(viewer2d.layers[CURRENT_LAYER].data.sum())
    widget.thresh_slider.setValue(99)
    smaller = int(viewer2d.layers[CURRENT_LAYER].data.sum())
    widget.thresh_slider.setValue(1)
    larger = int(viewer2d.layers[CURRENT_LAYER].data.sum())
    assert smaller < area < larger and len(calls) == 1
    assert widget.session.prob_thresh == 0.01 and widget.thresh_label.text() == "0.01"


def test_the_smallest_side_default_is_the_predictors(viewer2d):
    from napari_fbrs._widget.widget import PredictorSettings
    from napari_fbrs.core.transforms import MIN_VIEW_SIZE

    assert PredictorSettings().min_size == MIN_VIEW_SIZE  # kept apart to avoid torch at import
    _, widget = viewer2d.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
    assert widget.min_size_spin.value() == MIN_VIEW_SIZE


def test_the_min_crop_default_is_segments(viewer2d):
    """`napari-fbrs segment` replays a clicks file with the panel's default min crop."""
    from napari_fbrs._widget.widget import PredictorSettings
    from napari_fbrs.cli.segment import DEFAULT_MIN_CROP

    assert PredictorSettings().zoom_min_crop == DEFAULT_MIN_CROP
    _, widget = viewer2d.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
    assert widget.zoom_min_crop_spin.value() == DEFAULT_MIN_CROP


def test_first_click_crop_box_defaults_to_auto_and_takes_typed_sizes(viewer2d):
    _, widget = viewer2d.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
    box = widget.zoom_first_crop_box
    assert box.currentText() == "auto" and widget.settings.zoom_first_click_crop == "auto"
    assert [box.itemText(i) for i in range(box.count())] == ["off", "auto", "64", "128", "256"]
    seen = []
    box.valueChanged.connect(seen.append)
    box.setCurrentIndex(0)
    assert box.value() == 0 and widget.settings.zoom_first_click_crop == 0
    box.lineEdit().setText("96")  # typed
    assert box.value() == 96 and widget.settings.zoom_first_click_crop == 96
    validator = box.validator()
    state = validator.validate("5000", 4)[0]
    assert state == validator.Invalid  # above 4096: not even typed
    assert validator.validate("1", 1)[0] == validator.Intermediate  # on the way to 128
    box.lineEdit().setText("1")  # not a setting (yet): the value stays, the text comes back
    assert box.value() == 96
    box.lineEdit().editingFinished.emit()
    assert box.currentText() == "96" and seen == [0, 96]
    widget.configure(zoom_first_click_crop="auto")
    assert box.currentText() == "auto" and widget.settings.zoom_first_click_crop == "auto"
    for bad in (4, "big", 5000, True):
        with pytest.raises(ValueError, match="first-click crop must be 'off', 'auto' or 8 to"):
            widget.configure(zoom_first_click_crop=bad)
    assert widget.settings.zoom_first_click_crop == "auto"


def test_crops_past_the_border_setting(viewer2d):
    widget = open_widget(viewer2d)
    assert widget.zoom_border_check.isChecked() and widget.settings.zoom_beyond_border
    widget.configure(zoom_beyond_border=False)
    assert not widget.zoom_border_check.isChecked()
    widget.configure(
        zoom_in=True, zoom_target_size=64, zoom_first_click_crop=32, zoom_beyond_border=True
    )
    assert widget.zoom_border_check.isChecked()
    widget.add_click(8, 10)
    p = widget.predictor
    assert p.zoom_in.beyond_border and p.state.roi == (-8, 23, -6, 25)  # centred on the click
    assert p.prob.shape == (48, 64) and not p.prob[24:].any() and not p.prob[:, 26:].any()
    widget.zoom_border_check.setChecked(False)
    assert not widget.settings.zoom_beyond_border


def test_settings_apply_from_the_next_object(viewer2d):
    widget = open_widget(viewer2d)
    widget.add_click(20, 30)
    widget.configure(
        mode="f-BRS-B",
        lbfgs_maxfun=7,
        zoom_in=True,
        zoom_target_size=64,
        zoom_min_crop=24,
        zoom_first_click_crop=32,
        zoom_beyond_border=False,
        max_size=256,
        net_clicks=3,
        trim_overshoot=True,
    )
    assert widget.trim_check.isChecked() and widget.settings.trim_overshoot
    widget.add_click(25, 35)
    assert widget.predictor.mode == "NoBRS" and not widget.predictor.trim_overshoot
    widget.finish_object()
    widget.add_click(40, 50)
    p = widget.predictor
    assert (p.mode, p.lbfgs.maxfun, p.zoom_in.target_size, p.max_size, p.net_clicks_limit) == (
        "f-BRS-B",
        7,
        64,
        256,
        3,
    )
    assert (p.zoom_in.min_crop_size, p.zoom_in.first_click_crop) == (24, 32)
    assert p.trim_overshoot
    assert p.state.roi == (16, 47, 32, 63)  # the first click's crop, moved inside 48 x 64
    assert widget.zoom_first_crop_box.currentText() == "32"
    widget.configure(zoom_first_click_crop=0)
    assert widget.zoom_first_crop_box.currentText() == "off"
    assert p.min_size is None and widget.min_size_spin.text() == "off"  # open_widget's 0
    widget.configure(min_size=128)
    widget.finish_object()
    widget.add_click(40, 50)
    assert widget.predictor.min_size == 128
    widget.finish_object()
    widget.add_click(40, 50)
    assert widget.predictor.zoom_in.first_click_crop is None
    with pytest.raises(TypeError, match="unknown settings"):
        widget.configure(colour="blue")


# ------------------------------------------------------------------------------ stacks


def test_slices_keep_their_clicks_and_commit_where_they_lie(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([make_image()] * 3), name="img")
    widget = open_widget(viewer)
    current = viewer.layers[CURRENT_LAYER]
    objects = viewer.layers[OBJECTS_LAYER]
    assert current.data.shape == objects.data.shape == (3, H, W)
    viewer.dims.set_current_step(0, 0)
    canvas_click(viewer, (0, 20, 20))
    viewer.dims.set_current_step(0, 2)
    assert widget.current_key == (2,) and widget.session.clicks((2,)) == []
    canvas_click(viewer, (2, 30, 40))
    viewer.layers[CLICKS_LAYER].add([2.0, 10.0, 10.0])  # napari's tool, on slice 2
    assert [len(widget.session.clicks((k,))) for k in range(3)] == [1, 0, 2]
    assert current.data[0, 20, 20] == 1 and current.data[2, 30, 40] == 1
    viewer.dims.set_current_step(0, 0)
    assert widget.current_key == (0,)
    assert widget.session.clicks((0,)) == [SessionClick(20.0, 20.0, True)]
    assert widget.finish_object() == 1
    assert objects.data[0, 20, 20] == 1 and not objects.data[1:].any()
    assert current.data[2, 30, 40] == 1 and not current.data[0].any()
    # undoing a step made on another slice shows that slice
    viewer.dims.set_current_step(0, 1)
    widget.undo()  # the commit on slice 0
    assert widget.current_key == (0,) and not objects.data.any()


def test_propagation_through_the_stack(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([make_image()] * 4), name="img")
    widget = open_widget(viewer)
    widget.set_model(disk_net(neg_gain=2.0))
    objects = viewer.layers[OBJECTS_LAYER]
    objects.data[3, 20, 25] = 7  # an existing label is never overwritten
    viewer.dims.set_current_step(0, 1)
    assert not widget.propagate_button.isEnabled()
    widget.add_click(20, 25)
    assert widget.propagate_button.isEnabled()
    mask = widget.current_mask.copy()
    assert widget.propagate_object() == 8
    np.testing.assert_array_equal(objects.data[1] == 8, mask)
    for z in (0, 2):  # the same image: about the same object (derived clicks)
        got = objects.data[z] == 8
        assert got[20, 25] and (got & mask).sum() / (got | mask).sum() > 0.5
    assert objects.data[3, 20, 25] == 7 and (objects.data[3] == 8).sum() > 10
    assert widget.session.clicks((1,)) == [] and len(viewer.layers[CLICKS_LAYER].data) == 0
    widget.undo()  # one step for all slices
    assert set(np.unique(objects.data)) == {0, 7}
    assert len(widget.session.clicks((1,))) == 1
    # asynchronously too
    widget.synchronous = False
    assert widget.propagate_object() is None
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert (objects.data == 8).any(axis=(1, 2)).all()
    assert "written on 4 slices" in widget.status_label.text()


def test_switching_images_starts_over(viewer2d):
    widget = open_widget(viewer2d)
    widget.add_click(20, 30)
    viewer2d.add_image(make_image((H, W)), name="other")
    widget.image_combo.setCurrentText("other")
    assert widget.image_layer is viewer2d.layers["other"]
    assert widget.session.clicks() == [] and len(viewer2d.layers[CLICKS_LAYER].data) == 0
    assert not viewer2d.layers[CURRENT_LAYER].data.any()
    widget.add_click(20, 30)
    assert widget.finish_object() == 1
    # new data in the image layer: the session follows it
    viewer2d.layers["other"].data = make_image((H + 4, W))
    assert widget.session.labels_shape == (H + 4, W)
    assert widget.objects_layer.data.shape == (H + 4, W)
    assert viewer2d.layers[OBJECTS_LAYER].data[20, 30] == 1  # the old objects stay


def test_rgb_images(make_napari_viewer):
    viewer = make_napari_viewer()
    rgb = np.random.default_rng(2).integers(0, 255, (H, W, 3), dtype=np.uint8)
    viewer.add_image(rgb, name="img", rgb=True)
    widget = open_widget(viewer)
    assert viewer.layers[OBJECTS_LAYER].data.shape == (H, W)
    canvas_click(viewer, (20, 30))
    assert viewer.layers[CURRENT_LAYER].data[20, 30] == 1
    assert widget.finish_object() == 1


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("synchronous", [True, False], ids=["sync", "worker"])
def test_a_prediction_error_leaves_every_layer_as_it_was(
    viewer2d, monkeypatch, errors, qtbot, synchronous
):
    widget = open_widget(viewer2d)
    widget.add_click(20, 20)
    widget.finish_object()
    widget.add_click(30, 45)
    before = {
        name: np.array(viewer2d.layers[name].data, copy=True)
        for name in (CLICKS_LAYER, CURRENT_LAYER, OBJECTS_LAYER)
    }

    def boom(self, y, x, positive=True):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(Predictor, "add_click", boom)
    widget.synchronous = synchronous
    widget.add_click(10, 50, positive=False)
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert len(errors) == 1
    assert errors[0].startswith("f-BRS prediction failed: CUDA out of memory (simulated)")
    assert "longest side" in errors[0]
    for name, data in before.items():
        np.testing.assert_array_equal(viewer2d.layers[name].data, data, err_msg=name)
    assert len(widget.session.clicks()) == 1 and not widget.busy
    # the history is as before the failing click: undo removes the click at (30, 45)
    widget.undo()
    assert widget.session.clicks() == []


def test_superseded_clicks_are_dropped(viewer2d, qtbot, monkeypatch):
    widget = open_widget(viewer2d, mode="f-BRS-B")
    widget.synchronous = False
    gate = threading.Event()
    started = threading.Event()
    polled = []
    original = Predictor.add_click

    def gated(self, y, x, positive=True):
        if not gate.is_set():  # the first prediction waits until the user clicked again
            started.set()
            gate.wait(20)
            polled.append(self._cancel())  # what the L-BFGS loop would see now
        return original(self, y, x, positive)

    monkeypatch.setattr(Predictor, "add_click", gated)
    widget.add_click(20, 20)
    assert widget.busy and widget.progress.isVisibleTo(widget)
    assert started.wait(20)  # the worker is predicting the first click
    widget.add_click(30, 45)  # supersedes the running prediction
    gate.set()
    qtbot.waitUntil(lambda: not widget.busy and widget.session.is_up_to_date(), timeout=30000)
    assert polled == [True]
    assert [(key, n) for key, n, *_ in widget.applied_log] == [((), 2)]
    assert [(c.y, c.x) for c in widget.predictor.clicks] == [(20, 20), (30, 45)]
    assert viewer2d.layers[CURRENT_LAYER].data[30, 45] == 1
    assert not widget.progress.isVisibleTo(widget)


def test_finish_waits_for_a_running_prediction(viewer2d, qtbot):
    widget = open_widget(viewer2d)
    widget.synchronous = False
    widget.add_click(20, 20)
    assert widget.finish_object() is None  # still predicting: commits on arrival
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert viewer2d.layers[OBJECTS_LAYER].data[20, 20] == 1
    assert widget.session.clicks() == []


# ------------------------------------------------------------------------------ hygiene


def test_the_widget_modes_are_the_predictors():
    from napari_fbrs.core.predictor import MODES

    assert widget_module.MODES == MODES


def test_importing_the_widget_does_not_import_torch():
    code = "import json, sys\nimport napari_fbrs._widget\nprint(json.dumps('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_console_scripting(viewer2d):
    widget = open_widget(viewer2d)
    assert widget.add_click(20, 30)
    assert not widget.add_click(-5, 30)
    assert widget.predictor.clicks[0].y == 20
    assert widget.current_prob.shape == (H, W) and widget.current_mask[20, 30]
    label = widget.finish_object()
    assert viewer2d.layers[OBJECTS_LAYER].data[20, 30] == label == 1


# ------------------------------------------------------------------------------ channels


@pytest.fixture
def set_images(monkeypatch):
    """What every predictor was given: (image, contrast_limits), in order."""
    seen: list[tuple[np.ndarray, tuple | None]] = []
    original = Predictor.set_image

    def spy(self, image, contrast_limits=None):
        seen.append((np.array(image, copy=True), contrast_limits))
        return original(self, image, contrast_limits)

    monkeypatch.setattr(Predictor, "set_image", spy)
    return seen


def _unit(plane, lo, hi):
    return np.clip((plane.astype(np.float32) - lo) / (hi - lo), 0, 1)


def test_channel_layers_map_to_rgb_each_with_its_contrast_limits(make_napari_viewer, set_images):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(5)
    data = rng.integers(0, 1000, (3, H, W)).astype(np.uint16)
    viewer.add_image(
        data,
        channel_axis=0,
        name=["c0", "c1", "c2"],
        contrast_limits=[(0, 1000), (0, 100), (50, 200)],
    )
    widget = open_widget(viewer)
    widget.set_image_layer(viewer.layers["c0"])
    items = [widget.channel_combos[0].itemText(i) for i in range(widget.channel_combos[0].count())]
    assert items == ["—", "c0", "c1", "c2"]
    assert [c.currentText() for c in widget.channel_combos] == ["c0", "—", "—"]  # grey c0
    assert viewer.layers[OBJECTS_LAYER].data.shape == (H, W)
    widget.add_click(20, 30)
    image, limits = set_images[-1]
    np.testing.assert_array_equal(image, data[0])
    assert limits == (0.0, 1000.0)
    # red = c1, blue = c2: the open object is predicted again on the new input
    widget.set_channels("c1", None, "c2")
    image, limits = set_images[-1]
    assert image.shape == (H, W, 3) and limits == (0.0, 1.0)
    np.testing.assert_allclose(image[..., 0], _unit(data[1], 0, 100), atol=1e-6)
    assert not image[..., 1].any()
    np.testing.assert_allclose(image[..., 2], _unit(data[2], 50, 200), atol=1e-6)
    assert widget.current_mask[20, 30] and widget.session.is_up_to_date()
    # the layers' contrast limits are followed (from the next object on)
    viewer.layers["c2"].contrast_limits = (10, 20)
    assert widget.session.channel_limits == ((0.0, 100.0), (10.0, 20.0))
    widget.finish_object()
    widget.add_click(30, 40)
    np.testing.assert_allclose(set_images[-1][0][..., 2], _unit(data[2], 10, 20), atol=1e-6)
    # the boxes of the panel do the same; one channel alone is grey
    widget.channel_combos[2].setCurrentIndex(0)
    widget.channel_combos[0].setCurrentText("c2")
    image, limits = set_images[-1]
    np.testing.assert_array_equal(image, data[2])
    assert limits == (10.0, 20.0)
    # a channel layer that goes away falls back to what is left
    del viewer.layers["c2"]
    assert [c.currentText() for c in widget.channel_combos] == ["c0", "—", "—"]
    np.testing.assert_array_equal(widget.session.input_slice()[0], data[0])


def test_an_image_with_a_channel_axis(make_napari_viewer, set_images):
    viewer = make_napari_viewer()
    data = np.random.default_rng(6).integers(0, 255, (3, 2, H, W), dtype=np.uint8)  # z, c
    viewer.add_image(data, name="img")
    widget = open_widget(viewer)
    axes = [widget.channel_axis_combo.itemText(i) for i in range(widget.channel_axis_combo.count())]
    assert axes[0] == "none" and len(axes) == 3
    widget.set_channel_axis(1)
    session = widget.session
    assert session.channel_axis == 1 and session.stack_shape == (3, 1)
    objects, current = viewer.layers[OBJECTS_LAYER], viewer.layers[CURRENT_LAYER]
    assert objects.data.shape == current.data.shape == (3, 1, H, W)
    np.testing.assert_allclose(objects.scale[1], 2.0)  # one plane spans both channels
    assert [widget.channel_combos[0].itemText(i) for i in range(3)] == [
        "—",
        "channel 0",
        "channel 1",
    ]
    assert [widget.axis_combo.itemData(i) for i in range(widget.axis_combo.count())] == [0]
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 1)  # showing channel 1: still slice (1, 0)
    assert widget.current_key == (1, 0)
    canvas_click(viewer, (1, 1, 20, 30))
    viewer.dims.set_current_step(1, 0)
    assert widget.current_key == (1, 0)
    canvas_click(viewer, (1, 0, 22, 33), button=2)
    assert len(session.clicks((1, 0))) == 2
    np.testing.assert_array_equal(set_images[-1][0], data[1, 0])
    widget.set_channels(1, 0)  # red = channel 1, green = channel 0
    image = set_images[-1][0]
    np.testing.assert_allclose(image[..., 0], data[1, 1] / 255.0, atol=1e-6)
    np.testing.assert_allclose(image[..., 1], data[1, 0] / 255.0, atol=1e-6)
    widget.add_click(35, 50)
    assert widget.finish_object() == 1
    assert objects.data[1, 0, 35, 50] == 1 and not objects.data[[0, 2]].any()
    # points added with napari's tool at either channel step land on the same slice
    points = viewer.layers[CLICKS_LAYER]
    points.add(points.world_to_data(viewer.layers["img"].data_to_world([2, 1, 10, 12])))
    assert widget.session.clicks((2, 0)) == [SessionClick(10.0, 12.0, True)]
    widget.set_channel_axis(None)  # back to a plain stack of (z, c) slices
    assert widget.session.stack_shape == (3, 2) and widget.session.channel_axis is None


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


def test_a_lazy_layer_is_read_one_slice_at_a_time(make_napari_viewer):
    da = pytest.importorskip("dask.array")
    stack = np.stack([make_image()] * 4)
    rec = _Recorder(stack)
    lazy = da.from_array(rec, chunks=(1, H, W), meta=np.empty((0, 0, 0), stack.dtype))
    viewer = make_napari_viewer()
    viewer.add_image(lazy, name="img", contrast_limits=(0, 255))
    widget = open_widget(viewer)
    widget.set_model(disk_net(neg_gain=2.0))
    viewer.dims.set_current_step(0, 2)
    rec.reads.clear()
    widget.add_click(20, 25)
    assert widget.current_mask[20, 25]
    assert set(rec.reads) == {(2,)}  # napari's display and the predictor: slice 2 only
    rec.reads.clear()
    widget.direction_combo.setCurrentIndex(widget.direction_combo.findData(1))
    assert widget.propagate_object() == 1
    assert rec.reads == [(3,)]  # the one slice propagated to, read once
    assert (viewer.layers[OBJECTS_LAYER].data[2:] == 1).any(axis=(1, 2)).all()


# ------------------------------------------------------------------------------ slice steps


def test_next_and_previous_slice_keep_the_object_id(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([make_image()] * 4), name="img")
    widget = open_widget(viewer)
    objects = viewer.layers[OBJECTS_LAYER]
    handler = viewer.window._qt_viewer._key_map_handler

    def tap(key):
        handler.press_key(key)
        handler.release_key(key)

    viewer.dims.set_current_step(0, 1)
    assert widget.object_id_spin.specialValueText() == "new"
    assert widget.object_id_spin.value() == 0
    widget.add_click(20, 25)
    assert widget.next_slice()  # finishes the object on slice 1, then moves
    assert viewer.dims.current_step[0] == 2 and widget.current_key == (2,)
    assert objects.data[1, 20, 25] == 1
    assert widget.object_id_spin.value() == 1  # the same object, on slice 2
    widget.add_click(21, 26)
    tap(".")  # the shortcut: finish and go on
    assert widget.current_key == (3,) and objects.data[2, 21, 26] == 1
    widget.add_click(22, 27)
    assert widget.finish_object() == 1  # finished into the same id
    assert objects.data[3, 22, 27] == 1
    assert not widget.next_slice()  # the last slice
    assert "last slice" in widget.status_label.text()
    widget.prev_button.click()
    assert widget.current_key == (2,) and widget.object_id_spin.value() == 1
    tap(",")
    assert widget.current_key == (1,) and widget.object_id_spin.value() == 1
    # a new object on this slice: Escape forgets the kept id
    tap("Escape")
    assert widget.object_id_spin.value() == 0
    widget.add_click(35, 50)
    assert widget.finish_object() == 2
    # the id box pins an id by hand
    viewer.dims.set_current_step(0, 0)
    widget.object_id_spin.setValue(2)
    assert widget.session.object_label((0,)) == 2
    widget.add_click(35, 50)
    widget.next_slice()
    assert objects.data[0, 35, 50] == 2 and widget.current_key == (1,)
    # a stop mark (negative clicks only) is not finished by a step
    viewer.dims.set_current_step(0, 3)
    widget.add_click(5, 5, positive=False)
    assert widget.previous_slice() and widget.current_key == (2,)
    assert widget.session.is_stop((3,))


def test_slice_steps_along_the_chosen_axis_and_after_a_running_prediction(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([np.stack([make_image()] * 3)] * 2), name="img")  # (t, z)
    widget = open_widget(viewer)
    objects = viewer.layers[OBJECTS_LAYER]
    assert [widget.axis_combo.itemData(i) for i in range(widget.axis_combo.count())] == [0, 1]
    assert widget.stack_axis == 1  # z by default
    widget.stack_axis = 0  # walk t
    viewer.dims.set_current_step(1, 2)
    assert widget.current_key == (0, 2)
    widget.synchronous = False
    widget.add_click(20, 25)
    assert not widget.next_slice()  # still predicting: it moves when the object is done
    qtbot.waitUntil(lambda: not widget.busy and widget.current_key == (1, 2), timeout=30000)
    assert objects.data[0, 2, 20, 25] == 1 and widget.session.object_label((1, 2)) == 1
    assert not widget.next_slice()  # t has two steps


# ------------------------------------------------------------------ propagation controls


def test_propagation_direction_stop_marks_and_axis(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([make_image()] * 6), name="img")
    widget = open_widget(viewer)
    widget.set_model(disk_net(neg_gain=2.0))
    objects = viewer.layers[OBJECTS_LAYER]
    viewer.dims.set_current_step(0, 2)
    widget.add_click(20, 25)
    widget.add_click(5, 5, positive=False, key=(4,))  # a stop mark on slice 4
    reached = lambda: [int(z) for z in np.flatnonzero(objects.data.any(axis=(1, 2)))]  # noqa: E731
    widget.direction_combo.setCurrentIndex(widget.direction_combo.findData(1))
    assert widget.propagate_object() == 1
    assert reached() == [2, 3]  # forward, stopped before slice 4
    assert "written on 2 slices (2-3 along axis 0" in widget.status_label.text()
    widget.undo()
    widget.direction_combo.setCurrentIndex(widget.direction_combo.findData(-1))
    widget.stop_iou_spin.setValue(0.95)  # nothing is that stable: no slice beyond
    assert widget.propagate_object() == 1 and reached() == [2]
    widget.undo()
    assert widget.propagate_object(direction=0, stop_iou=0.5) == 1
    assert reached() == [0, 1, 2, 3]
    assert widget.session.clicks((4,)) == [SessionClick(5.0, 5.0, False)]  # the mark stays


def test_propagation_stop_rules_come_from_the_panel(make_napari_viewer):
    from napari_fbrs._widget.widget import CONVEX_REGROWTH

    viewer = make_napari_viewer()
    viewer.add_image(np.stack([make_image()] * 6), name="img")
    widget = open_widget(viewer)
    widget.set_model(disk_net(neg_gain=2.0))
    viewer.dims.set_current_step(0, 2)
    widget.add_click(20, 25)
    assert widget.min_contrast_spin.text() == "off" and not widget.convex_check.isChecked()
    widget.convex_check.setChecked(True)
    widget.min_contrast_spin.setValue(0.3)
    assert widget.propagate_object() == 1
    record = widget.session.commits()[-1].propagation
    assert record["regrowth"] == CONVEX_REGROWTH
    assert record["min_contrast"] == pytest.approx(0.3)
    objects = viewer.layers[OBJECTS_LAYER]
    assert objects.data.any(axis=(1, 2)).all()  # identical slices: no rule stops early


def test_propagation_along_t(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([np.stack([make_image()] * 3)] * 3), name="img")  # (t, z)
    widget = open_widget(viewer)
    widget.set_model(disk_net(neg_gain=2.0))
    widget.stack_axis = 0
    viewer.dims.set_current_step(1, 1)
    widget.add_click(20, 25)
    assert widget.propagate_object() == 1
    data = viewer.layers[OBJECTS_LAYER].data
    assert data[:, 1].any(axis=(1, 2)).all()  # every t at z = 1
    assert not data[:, [0, 2]].any()  # no other z
    # its clicks file: one column per slice axis (napari starts t in the middle: t = 1),
    # and the walk's axis and settings
    widget.save_objects(tmp_path / "objects.tif")
    assert "the clicks of 1 of them to objects_clicks.csv" in widget.status_label.text()
    assert (tmp_path / "objects_clicks.csv").read_text().splitlines() == [
        "object,axis-0,axis-1,y,x,positive,propagate,propagate_axis,direction,stop_iou,"
        "regrowth,min_contrast,stop_slices",
        "1,1,1,20,25,true,true,0,both,0.5,,,",
    ]


def test_cancelling_a_propagation_writes_nothing(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([make_image()] * 5), name="img")
    widget = open_widget(viewer)
    widget.set_model(disk_net(neg_gain=2.0))
    widget.add_click(20, 25)
    # synchronously: Cancel pressed from the progress report of the first slice
    widget._bridge.progress.connect(lambda done, total: widget.cancel_button.click())
    assert not widget.cancel_button.isEnabled()
    assert widget.propagate_object() is None
    assert not viewer.layers[OBJECTS_LAYER].data.any()
    assert "cancelled" in widget.status_label.text()
    assert len(widget.session.clicks(widget.current_key)) == 1
    assert not widget.cancel_button.isEnabled()
    widget._bridge.progress.disconnect()
    widget._bridge.progress.connect(widget._show_progress)
    # on the worker: the second slice waits until Cancel was pressed
    gate = threading.Event()
    calls = []
    original = Predictor.set_image

    def gated(self, image, contrast_limits=None):
        calls.append(1)
        if len(calls) == 2:
            gate.wait(20)
        return original(self, image, contrast_limits)

    monkeypatch.setattr(Predictor, "set_image", gated)
    widget.synchronous = False
    widget.propagate_object()
    qtbot.waitUntil(lambda: widget.progress.value() == 1, timeout=30000)
    assert widget.progress.maximum() == 4 and widget.busy
    assert widget.cancel_button.isEnabled() and not widget.propagate_button.isEnabled()
    assert "Propagating: 1/4" in widget.status_label.text()
    widget.cancel_button.click()
    gate.set()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert not viewer.layers[OBJECTS_LAYER].data.any()
    assert "cancelled" in widget.status_label.text()


def test_correct_a_slice_and_propagate_again(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([make_image()] * 5), name="img")
    widget = open_widget(viewer)
    widget.set_model(disk_net(neg_gain=2.0))
    objects = viewer.layers[OBJECTS_LAYER]
    widget.add_click(20, 25)
    assert widget.propagate_object() == 1
    first = objects.data.copy()
    assert first.any(axis=(1, 2)).all()
    # slice 3 is wrong: go there with the slice steps, which keep the object's id
    viewer.dims.set_current_step(0, 2)
    widget.next_slice()
    assert widget.current_key == (3,) and widget.object_id_spin.value() == 1
    widget.add_click(30, 40)
    widget.direction_combo.setCurrentIndex(widget.direction_combo.findData(1))
    assert widget.propagate_object() == 1
    np.testing.assert_array_equal(objects.data[:3], first[:3])
    for z in (3, 4):  # replaced, not added to (the tiny net drifts a little per slice)
        rows, cols = np.nonzero(objects.data[z] == 1)
        assert rows.size > 20 and objects.data[z, 20, 25] == 0
        assert np.hypot(rows.mean() - 30, cols.mean() - 40) < 6
    assert "old version cleared" in widget.status_label.text()
    widget.undo()
    np.testing.assert_array_equal(objects.data, first)


# ------------------------------------------------------------------------------ autosave


@pytest.fixture(autouse=True)
def autosave_dir(monkeypatch, tmp_path):
    """Sidecars of layers without a file go to a temporary folder, not the user's cache."""
    # sidecar_path looks autosave_dir up in the paths module
    from napari_fbrs.core.autosave import paths as autosave_paths

    folder = tmp_path / "autosave"
    monkeypatch.setattr(autosave_paths, "autosave_dir", lambda: folder)
    return folder


def test_restore_after_new_commits_is_undone_with_ctrl_z(make_napari_viewer, autosave_dir):
    """Objects committed before pressing "Restore previous session" are not lost: undo
    (the widget's, as Ctrl+Z) brings them back, and redo restores again."""
    viewer = make_napari_viewer()
    viewer.add_image(make_image(), name="img")
    widget = open_widget(viewer)
    widget.add_click(20, 20)
    widget.finish_object()
    saved = viewer.layers[OBJECTS_LAYER].data.copy()

    viewer2 = make_napari_viewer()
    viewer2.add_image(make_image(), name="img")
    widget2 = open_widget(viewer2)
    widget2.add_click(40, 8)
    assert widget2.finish_object() == 1  # a new object, before restoring
    before = viewer2.layers[OBJECTS_LAYER].data.copy()
    assert before.any() and not np.array_equal(before, saved)
    assert widget2.restore_autosave()
    np.testing.assert_array_equal(viewer2.layers[OBJECTS_LAYER].data, saved)
    assert widget2.undo()  # one step: the autosave has no unfinished clicks
    np.testing.assert_array_equal(viewer2.layers[OBJECTS_LAYER].data, before)
    assert widget2.redo()
    np.testing.assert_array_equal(viewer2.layers[OBJECTS_LAYER].data, saved)
    assert widget2.undo() and widget2.undo()  # and the earlier commit undoes as before
    assert not viewer2.layers[OBJECTS_LAYER].data.any()


def test_a_commit_is_autosaved_and_a_fresh_widget_restores_it(
    make_napari_viewer, autosave_dir, monkeypatch
):
    from napari_fbrs.core.autosave import Autosave

    notes: list[str] = []
    monkeypatch.setattr(notify_module, "info", notes.append)
    viewer = make_napari_viewer()
    viewer.add_image(make_image(), name="img")
    widget = open_widget(viewer)
    assert widget.autosave_path is not None and not widget.autosave_path.exists()
    widget.add_click(20, 20)
    assert widget.finish_object() == 1
    assert widget.autosave_path.is_file()  # a commit is saved at once
    labels = viewer.layers[OBJECTS_LAYER].data.copy()
    widget.add_click(10, 40)
    widget.add_click(40, 8, positive=False)
    assert widget.save_autosave()  # what the debounce timer does after click edits
    state = Autosave(widget.autosave_path).load()
    assert [o.label for o in state.objects] == [1]
    assert state.objects[0].clicks == (SessionClick(20.0, 20.0, True),)

    # the program "crashed": a fresh viewer and widget on the same image
    viewer2 = make_napari_viewer()
    viewer2.add_image(make_image(), name="img")
    widget2 = open_widget(viewer2)
    assert widget2.autosave_path == widget.autosave_path
    assert widget2.restore_button.isVisibleTo(widget2)
    assert "(1 object)" in widget2.restore_button.text()
    assert any("(1 object, 2 clicks)" in n and "Restore previous session" in n for n in notes)
    assert not viewer2.layers[OBJECTS_LAYER].data.any()  # nothing changes unasked
    assert widget2.restore_autosave()
    np.testing.assert_array_equal(viewer2.layers[OBJECTS_LAYER].data, labels)
    assert widget2.session.clicks() == [
        SessionClick(10.0, 40.0, True),
        SessionClick(40.0, 8.0, False),
    ]
    assert len(viewer2.layers[CLICKS_LAYER].data) == 2
    assert widget2.current_mask is not None and widget2.current_mask[10, 40]
    assert not widget2.restore_button.isVisibleTo(widget2)
    assert not widget2.restore_autosave()  # once
    # the restored object goes on with its provenance, and can be finished
    assert widget2.finish_object() == 2
    labels_now = [o.label for o in Autosave(widget2.autosave_path).load().objects]
    assert labels_now == [1, 2]


def test_undo_and_redo_are_autosaved(viewer2d, autosave_dir):
    from napari_fbrs.core.autosave import Autosave

    widget = open_widget(viewer2d)
    widget.add_click(20, 20)
    widget.finish_object()
    assert len(Autosave(widget.autosave_path).load().objects) == 1
    assert widget.undo()
    state = Autosave(widget.autosave_path).load()
    assert state.objects == [] and not state.labels.any()
    assert state.clicks == {(): (SessionClick(20.0, 20.0, True),)}
    assert widget.undo()  # a click edit: saved at once too
    assert Autosave(widget.autosave_path).load().clicks == {}
    assert widget.redo() and widget.redo()
    assert [o.label for o in Autosave(widget.autosave_path).load().objects] == [1]


def test_the_sidecar_lies_beside_an_image_file(make_napari_viewer, tmp_path, autosave_dir):
    path = tmp_path / "cells.npy"
    np.save(path, make_image())
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari")
    widget = open_widget(viewer)
    assert widget.autosave_path == path.with_name("cells.npy.fbrs-autosave.json")
    widget.add_click(20, 20)
    widget.finish_object()
    assert widget.autosave_path.is_file() and not autosave_dir.exists()


def test_autosave_errors_never_break_segmentation(viewer2d, autosave_dir, monkeypatch):
    from napari_fbrs.core.autosave import Autosave

    warned: list[str] = []
    monkeypatch.setattr(notify_module, "warning", warned.append)

    def full(self, state, labels_changed=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Autosave, "write", full)
    widget = open_widget(viewer2d)
    widget.add_click(20, 20)
    assert widget.finish_object() == 1
    widget.add_click(10, 40)
    assert widget.finish_object() == 2
    assert viewer2d.layers[OBJECTS_LAYER].data[20, 20] == 1
    assert len([w for w in warned if "autosave" in w]) == 1  # said once
    assert "No space left" in warned[0]


def test_an_old_sidecar_is_kept_aside_not_overwritten(make_napari_viewer, autosave_dir):
    from napari_fbrs.core.autosave import Autosave

    viewer = make_napari_viewer()
    viewer.add_image(make_image(), name="img")
    widget = open_widget(viewer)
    widget.add_click(20, 20)
    widget.finish_object()
    old = widget.autosave_path
    viewer2 = make_napari_viewer()
    viewer2.add_image(make_image(), name="img")
    widget2 = open_widget(viewer2)
    widget2.add_click(10, 40)
    widget2.finish_object()  # not restored: the new session writes its own sidecar
    backup = old.with_name(old.name.replace(".fbrs-autosave", ".previous.fbrs-autosave"))
    assert [o.label for o in Autosave(backup).load().objects] == [1]
    assert Autosave(backup).load().labels[20, 20] == 1
    current = Autosave(old).load()
    assert current.labels[10, 40] == 1 and current.labels[20, 20] == 0


def test_a_sidecar_of_another_image_is_not_offered(make_napari_viewer, autosave_dir, warnings_):
    viewer = make_napari_viewer()
    viewer.add_image(make_image((H, W + 2)), name="img")
    widget = open_widget(viewer)
    widget.add_click(20, 20)
    widget.finish_object()
    viewer2 = make_napari_viewer()
    viewer2.add_image(make_image(), name="img")  # same name, another shape
    widget2 = open_widget(viewer2)
    assert not widget2.restore_button.isVisibleTo(widget2) and not widget2.restore_autosave()
    assert any("shape" in w for w in warnings_)
    widget2.add_click(20, 20)
    assert widget2.finish_object() == 1


# ------------------------------------------------------------------------- saving objects


def _opened_from_file(make_napari_viewer, tmp_path, shape=(H, W)):
    path = tmp_path / "cells.npy"
    if not path.exists():
        np.save(path, make_image(shape))
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari")
    return viewer, open_widget(viewer), path


def _second_session(make_napari_viewer, tmp_path):
    """An object committed (and autosaved) in a first viewer, then the same file opened in a
    second one, as after a crash: returns the second widget and the first one's sidecar."""
    _, first, image_path = _opened_from_file(make_napari_viewer, tmp_path)
    first.add_click(20, 20)
    first.finish_object()
    viewer = make_napari_viewer()
    viewer.open(str(image_path), plugin="napari")
    return open_widget(viewer), first.autosave_path


def _previous_sidecar(sidecar):
    """Where an earlier session's sidecar is set aside."""
    return sidecar.with_name(sidecar.name.replace(".fbrs-autosave", ".previous.fbrs-autosave"))


def test_save_objects_writes_the_labels_and_retires_the_autosave(make_napari_viewer, tmp_path):
    import tifffile

    viewer, widget, image_path = _opened_from_file(make_napari_viewer, tmp_path)
    widget.add_click(20, 20)
    assert widget.finish_object() == 1
    widget.add_click(10, 40)
    assert widget.finish_object() == 2
    assert widget.autosave_path.is_file() and widget.save_button.isEnabled()
    out = widget.save_objects(tmp_path / "out" / "objects.tif")
    assert out == tmp_path / "out" / "objects.tif"
    saved = tifffile.imread(out)
    labels = viewer.layers[OBJECTS_LAYER].data
    assert saved.dtype == labels.dtype and saved.shape == (H, W)
    np.testing.assert_array_equal(saved, labels)
    assert sorted(np.unique(saved).tolist()) == [0, 1, 2]
    assert not widget.autosave_path.exists()  # the work is saved: nothing to restore
    assert widget.status_label.text().startswith(
        f"Saved 2 object(s) to {out}, the clicks of 2 of them to objects_clicks.csv"
    )
    # beside it, the clicks that made them, for `napari-fbrs segment --clicks`
    clicks = (tmp_path / "out" / "objects_clicks.csv").read_text().splitlines()
    assert clicks == ["object,y,x,positive", "1,20,20,true", "2,10,40,true"]
    # a painted object is left out of the clicks file (the TIFF has it)
    viewer.layers[OBJECTS_LAYER].data[0, 0] = 1
    viewer.layers[OBJECTS_LAYER].refresh()
    widget.save_objects(tmp_path / "out" / "objects.tif")
    clicks = (tmp_path / "out" / "objects_clicks.csv").read_text().splitlines()
    assert clicks == ["object,y,x,positive", "2,10,40,true"]
    viewer.layers[OBJECTS_LAYER].data[0, 0] = 0

    # opening the image again offers nothing to restore
    viewer2 = make_napari_viewer()
    viewer2.open(str(image_path), plugin="napari")
    widget2 = open_widget(viewer2)
    assert not widget2.restore_button.isVisibleTo(widget2) and not widget2.restore_autosave()
    # later work is autosaved again
    widget.add_click(40, 8)
    assert widget.finish_object() == 3
    assert widget.autosave_path.is_file()


def test_save_objects_keeps_the_autosave_of_unfinished_clicks(make_napari_viewer, tmp_path):
    from napari_fbrs.core.autosave import Autosave

    viewer, widget, _ = _opened_from_file(make_napari_viewer, tmp_path)
    widget.add_click(20, 20)
    widget.finish_object()
    widget.add_click(10, 40)  # an object not finished
    out = widget.save_objects(tmp_path / "objects.tif")
    assert out is not None and out.is_file()
    assert widget.autosave_path.is_file()
    assert "1 slice(s) have clicks of unfinished objects" in widget.status_label.text()
    widget.save_autosave()
    assert Autosave(widget.autosave_path).load().clicks == {(): (SessionClick(10.0, 40.0, True),)}


def test_save_objects_asks_for_a_file_beside_the_image(make_napari_viewer, tmp_path, monkeypatch):
    import tifffile

    from napari_fbrs._widget import saving

    viewer, widget, image_path = _opened_from_file(make_napari_viewer, tmp_path)
    widget.add_click(20, 20)
    widget.finish_object()
    proposed: list[str] = []

    def dialog(parent, caption, directory, filters):
        proposed.append(directory)
        assert "*.tif" in filters
        return answers.pop(0), filters

    monkeypatch.setattr(saving.QFileDialog, "getSaveFileName", staticmethod(dialog))
    answers = ["", str(tmp_path / "chosen")]
    assert widget.save_objects() is None  # cancelled: nothing written, autosave kept
    assert proposed == [str(tmp_path / "cells_objects.tif")]
    assert widget.autosave_path.is_file() and not list(tmp_path.glob("*.tif"))
    widget.save_button.click()  # the button asks too; a typed name gets ".tif"
    assert (tmp_path / "chosen.tif").is_file()
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "chosen.tif"), viewer.layers[OBJECTS_LAYER].data
    )
    answers.append("")
    assert widget.save_objects() is None
    assert proposed[-1] == str(tmp_path / "chosen.tif")  # the last file saved


def test_a_failed_save_loses_nothing(make_napari_viewer, tmp_path, warnings_):
    viewer, widget, _ = _opened_from_file(make_napari_viewer, tmp_path)
    widget.add_click(20, 20)
    widget.finish_object()
    labels = viewer.layers[OBJECTS_LAYER].data.copy()
    (tmp_path / "a_file").write_text("not a folder")
    assert widget.save_objects(tmp_path / "a_file" / "objects.tif") is None
    assert widget.save_objects(tmp_path / "objects.png") is None
    assert len(warnings_) == 2
    assert "could not save the objects" in warnings_[0]
    assert "saved as TIFF files (.tif or .tiff)" in warnings_[1]
    np.testing.assert_array_equal(viewer.layers[OBJECTS_LAYER].data, labels)
    assert widget.autosave_path.is_file()
    assert widget.undo() and not viewer.layers[OBJECTS_LAYER].data.any()  # history intact


def test_a_failed_clicks_file_is_a_warning_and_the_objects_stay_saved(
    make_napari_viewer, tmp_path, warnings_
):
    import tifffile

    viewer, widget, _ = _opened_from_file(make_napari_viewer, tmp_path)
    widget.add_click(20, 20)
    widget.finish_object()
    (tmp_path / "objects_clicks.csv").mkdir()  # a folder where the clicks file would go
    out = widget.save_objects(tmp_path / "objects.tif")
    assert out == tmp_path / "objects.tif"
    np.testing.assert_array_equal(tifffile.imread(out), viewer.layers[OBJECTS_LAYER].data)
    assert (
        len(warnings_) == 1
        and "saved the objects but could not save their clicks" in (warnings_[0])
    )
    assert widget.status_label.text().startswith(f"Saved 1 object(s) to {out}.")
    assert not widget.autosave_path.exists()  # the objects are saved


def test_save_objects_of_a_stack_keeps_every_slice(make_napari_viewer, tmp_path):
    import tifffile

    viewer, widget, _ = _opened_from_file(make_napari_viewer, tmp_path, shape=(3, H, W))
    (first,) = widget.current_key
    widget.add_click(20, 20)
    widget.finish_object()
    assert widget.next_slice()
    (second,) = widget.current_key
    widget.add_click(10, 40)
    widget.finish_object()
    saved = tifffile.imread(widget.save_objects(tmp_path / "stack.tiff"))
    assert saved.shape == (3, H, W)  # not read back as colour: the stack has 3 slices
    np.testing.assert_array_equal(saved, viewer.layers[OBJECTS_LAYER].data)
    (untouched,) = {0, 1, 2} - {first, second}
    assert saved[first, 20, 20] and saved[second, 10, 40] and not saved[untouched].any()


def test_save_objects_keeps_an_earlier_sessions_autosave(make_napari_viewer, tmp_path):
    # a second session on the same file saves at once, before restoring or committing
    widget2, _ = _second_session(make_napari_viewer, tmp_path)
    assert widget2.restore_button.isVisibleTo(widget2)
    assert widget2.save_objects(tmp_path / "empty.tif") is not None
    assert widget2.autosave_path.is_file()  # the earlier session's work is not dropped
    assert "autosave of an earlier session is kept" in widget2.status_label.text()
    assert widget2.restore_autosave()


def test_dismissing_the_restore_offer_keeps_the_earlier_session_aside(make_napari_viewer, tmp_path):
    from napari_fbrs.core.autosave import Autosave

    widget2, sidecar = _second_session(make_napari_viewer, tmp_path)
    assert widget2.dismiss_button.isVisibleTo(widget2)
    assert widget2.dismiss_autosave()
    assert "kept aside" in widget2.status_label.text()
    assert not widget2.restore_button.isVisibleTo(widget2)
    assert not widget2.dismiss_button.isVisibleTo(widget2)
    assert not widget2.dismiss_autosave() and not widget2.restore_autosave()  # once
    assert not sidecar.exists()
    kept = Autosave(_previous_sidecar(sidecar)).load()
    assert [o.label for o in kept.objects] == [1] and kept.labels[20, 20] == 1

    # the next time the image is opened nothing is offered
    viewer3 = make_napari_viewer()
    viewer3.open(str(tmp_path / "cells.npy"), plugin="napari")
    widget3 = open_widget(viewer3)
    assert not widget3.restore_button.isVisibleTo(widget3)


def test_dismissing_after_new_work_keeps_both_sessions(make_napari_viewer, tmp_path):
    from napari_fbrs.core.autosave import Autosave

    widget2, _ = _second_session(make_napari_viewer, tmp_path)
    widget2.add_click(10, 40)
    assert widget2.finish_object() == 1  # this session's sidecar replaces the offered one
    assert widget2.dismiss_autosave()
    ours = Autosave(widget2.autosave_path).load()
    assert ours.labels[10, 40] == 1 and ours.labels[20, 20] == 0
    earlier = Autosave(_previous_sidecar(widget2.autosave_path)).load()
    assert earlier.labels[20, 20] == 1


# ------------------------------------------------------------------------ loading objects


def _saved_stack_objects(make_napari_viewer, tmp_path):
    """Object 1 propagated forward from slice 1 and object 2 on slice 0 of a 4-slice stack,
    saved; returns the viewer, the widget, the saved labels and the clicks file."""
    viewer, widget, _ = _opened_from_file(make_napari_viewer, tmp_path, shape=(4, H, W))
    widget.set_model(disk_net(neg_gain=2.0))
    viewer.dims.set_current_step(0, 1)
    widget.add_click(20, 25)
    widget.direction_combo.setCurrentIndex(widget.direction_combo.findData(1))
    assert widget.propagate_object() == 1
    viewer.dims.set_current_step(0, 0)
    widget.add_click(10, 45)
    assert widget.finish_object() == 2
    widget.save_objects(tmp_path / "objects.tif")
    saved = viewer.layers[OBJECTS_LAYER].data.copy()
    assert set(np.unique(saved)) == {0, 1, 2} and saved[1:].any(axis=(1, 2)).all()
    return viewer, widget, saved, tmp_path / "objects_clicks.csv"


def test_load_objects_makes_the_saved_objects_again(make_napari_viewer, tmp_path):
    viewer, widget, saved, clicks = _saved_stack_objects(make_napari_viewer, tmp_path)
    objects = viewer.layers[OBJECTS_LAYER]
    while widget.undo():  # back to an empty layer
        pass
    widget.reset_clicks()
    assert not objects.data.any() and not widget.session.all_clicks()
    objects.data[0, 40:44, 2:6] = 1  # the user's own object 1, away from the saved ones
    objects.refresh()
    assert widget.load_objects(clicks) == [3, 2]
    # id 1 was taken: the propagated object came back as 3, with every pixel
    np.testing.assert_array_equal(objects.data[saved == 1], 3)
    np.testing.assert_array_equal(objects.data[saved == 2], 2)
    assert (objects.data[0, 40:44, 2:6] == 1).all()
    assert widget.status_label.text() == (
        "Loaded 2 of 2 object(s) from objects_clicks.csv; 1 with a new id (the file's was in use)."
    )
    # ... autosaved at once, with their clicks and settings (a crash loses nothing)
    from napari_fbrs.core.autosave import Autosave

    records = Autosave(widget.autosave_path).load().objects
    assert [(r.label, r.key, r.propagated) for r in records][-2:] == [
        (3, (1,), True),
        (2, (0,), False),
    ]
    assert records[-2].propagation["direction"] == 1
    assert records[-1].clicks == (SessionClick(10.0, 45.0, True),)
    # loaded objects are finished objects: saved again with their clicks and settings
    widget.save_objects(tmp_path / "again.tif")
    rows = (tmp_path / "again_clicks.csv").read_text().splitlines()
    assert rows[1:] == [
        "3,1,20,25,true,true,forward,0.5,,,",
        "2,0,10,45,true,false,,,,,",
    ]
    # each is an undo step; undo brings its clicks back on its slice
    assert widget.undo() and not (objects.data == 2).any()
    assert widget.session.clicks((0,)) == [SessionClick(10.0, 45.0, True)]
    assert widget.undo() and not (objects.data == 3).any()
    assert (objects.data[0, 40:44, 2:6] == 1).all()


def test_load_objects_refuses_what_it_cannot_do_and_changes_nothing(
    make_napari_viewer, tmp_path, warnings_, monkeypatch
):
    from napari_fbrs._widget import loading

    viewer, widget, saved, clicks = _saved_stack_objects(make_napari_viewer, tmp_path)
    objects = viewer.layers[OBJECTS_LAYER]
    before = objects.data.copy()
    widget.add_click(30, 30)  # an unfinished object
    assert widget.load_objects(clicks) is None
    assert "finish or reset the unfinished object first (clicks on (0,))" in warnings_[-1]
    widget.reset_clicks()
    bad = tmp_path / "flat.csv"
    bad.write_text("y,x\n1,2\n")  # no slice column for a stack
    assert widget.load_objects(bad) is None
    assert (
        "could not load objects from flat.csv: the image is a stack of 4 slices" in (warnings_[-1])
    )
    assert widget.status_label.text().startswith("Nothing loaded: the image is a stack")
    assert widget.load_objects(tmp_path / "missing.csv") is None
    assert "clicks file not found" in warnings_[-1]
    np.testing.assert_array_equal(objects.data, before)
    # the button asks for the file; cancelling the dialog does nothing
    proposed = []

    def dialog(parent, caption, directory, filters):
        proposed.append(directory)
        return answers.pop(0), filters

    monkeypatch.setattr(loading.QFileDialog, "getOpenFileName", staticmethod(dialog))
    answers = ["", str(clicks)]
    widget.load_button.click()
    assert proposed == [str(tmp_path / "objects_clicks.csv")]
    np.testing.assert_array_equal(objects.data, before)
    widget.load_button.click()  # every pixel is taken: each object is reported, none written
    assert "Loaded 0 of 2 object(s)" in widget.status_label.text()
    assert "entirely on existing labels" in warnings_[-1]
    np.testing.assert_array_equal(objects.data, before)


def test_a_failed_load_is_an_error_and_writes_nothing(make_napari_viewer, tmp_path, errors):
    viewer, widget, saved, clicks = _saved_stack_objects(make_napari_viewer, tmp_path)
    objects = viewer.layers[OBJECTS_LAYER]
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    widget.set_model(broken)  # read when the first object is made, on the worker
    objects.data[...] = 0
    objects.refresh()
    assert widget.load_objects(clicks) is None
    assert len(errors) == 1 and errors[0].startswith("f-BRS could not load the objects:")
    assert widget.status_label.text().startswith("Loading failed:")
    assert widget.status_label.text().endswith("nothing was written.")
    assert not objects.data.any() and not widget.busy
    assert widget.load_button.text() == "Load objects..."


def test_load_objects_runs_on_a_worker_and_can_be_cancelled(make_napari_viewer, tmp_path, qtbot):
    viewer, widget, saved, clicks = _saved_stack_objects(make_napari_viewer, tmp_path)
    objects = viewer.layers[OBJECTS_LAYER]
    while widget.undo():
        pass
    widget.reset_clicks()
    widget.synchronous = False
    assert widget.load_objects(clicks) is None  # the result arrives later
    assert widget.busy and widget.load_button.text() == "Cancel loading"
    assert not widget.save_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    np.testing.assert_array_equal(objects.data, saved)
    assert widget.load_button.text() == "Load objects..."
    assert widget.load_objects(clicks) is None  # again (the file's ids are in use now)
    widget.load_button.click()  # cancel
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert widget.status_label.text() == "Loading cancelled: nothing was written."
    np.testing.assert_array_equal(objects.data, saved)
    assert len(widget.session.commits()) == 2


# ------------------------------------------------------------------ remembered settings


def _dock(viewer) -> FbrsWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
    return widget


def test_settings_are_remembered_between_sessions(make_napari_viewer, tmp_path):
    from napari_fbrs._widget.preferences import preferences_path
    from napari_fbrs._widget.settings import PredictorSettings

    viewer = make_napari_viewer()
    widget = _dock(viewer)
    assert widget.settings.mode == "f-BRS-B" and not preferences_path().exists()
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(b"not read until the first click")
    widget.set_model(checkpoint)
    widget.configure(mode="f-BRS-A", prob_thresh=0.3, zoom_first_click_crop=128, lbfgs_maxfun=7)
    widget.overwrite_check.setChecked(True)
    widget.stop_iou_spin.setValue(0.3)
    widget.convex_check.setChecked(True)
    widget.direction_combo.setCurrentIndex(widget.direction_combo.findData(-1))
    widget.cleanup()  # closing the panel writes what is pending
    saved = json.loads(preferences_path().read_text())
    assert saved["values"]["mode"] == "f-BRS-A" and saved["values"]["model_file"] == str(checkpoint)

    again = _dock(make_napari_viewer())
    s = again.settings
    assert (s.mode, s.prob_thresh, s.zoom_first_click_crop, s.lbfgs_maxfun) == (
        "f-BRS-A",
        0.3,
        128,
        7,
    )
    assert s.model == checkpoint and again.thresh_label.text() == "0.30"
    assert again.overwrite_check.isChecked() and again.convex_check.isChecked()
    assert again.stop_iou_spin.value() == 0.3 and again.direction_combo.currentData() == -1
    # back to the defaults, which are remembered too
    again.reset_settings()
    again.cleanup()
    third = _dock(make_napari_viewer())
    assert third.settings == PredictorSettings()
    assert not third.overwrite_check.isChecked() and third.direction_combo.currentData() == 0


def test_damaged_or_outdated_settings_are_skipped_and_the_panel_opens(
    make_napari_viewer, warnings_
):
    from napari_fbrs._widget.preferences import FORMAT, preferences_path

    path = preferences_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00{ not json")
    widget = _dock(make_napari_viewer())
    assert widget.settings.mode == "f-BRS-B"
    assert "could not be read" in widget.status_label.text()
    widget.cleanup()
    # values from elsewhere: each unusable one is skipped, the others are used
    values = {
        "mode": "f-BRS-Z",
        "model_file": "/nowhere/gone.pt",
        "stop_iou": 7,
        "lbfgs_maxfun": "many",
        "zoom_first_click_crop": 96,
        "with_flip": False,
        "from_the_future": 1,
    }
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "values": values}))
    widget = _dock(make_napari_viewer())
    s = widget.settings
    assert s.mode == "f-BRS-B" and s.model == "fbrs-lite" and s.lbfgs_maxfun == 20
    assert s.zoom_first_click_crop == 96 and s.with_flip is False
    text = widget.status_label.text()
    for name in ("mode", "model_file", "stop_iou", "lbfgs_maxfun", "from_the_future"):
        assert name in text
    assert widget.stop_iou_spin.value() == 0.5
    # an unwritable settings folder: one warning, the panel goes on
    widget.cleanup()
    path.unlink()
    path.parent.rmdir()
    path.parent.write_text("a file where the folder should be")
    widget = _dock(make_napari_viewer())
    widget.configure(mode="NoBRS")
    assert widget.save_preferences() is False and widget.save_preferences() is False
    assert sum("settings could not be saved" in w for w in warnings_) == 1
    assert widget.settings.mode == "NoBRS"
