"""The napari dock widget, driven through a real (offscreen) viewer.

Predictions run synchronously (``FbrsWidget.synchronous``) except in the test of
superseded clicks. The network is ``TinyNet`` ("tiny_test") with hand-set weights that
make it segment a disk around the last positive click, so results are predictable.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import torch

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_fbrs._widget import (  # noqa: E402
    CLICKS_LAYER,
    CURRENT_LAYER,
    OBJECTS_LAYER,
    FbrsWidget,
)
from napari_fbrs._widget import widget as widget_module  # noqa: E402
from napari_fbrs.core import zoo  # noqa: E402
from napari_fbrs.core.predictor import Predictor  # noqa: E402
from napari_fbrs.core.session import SessionClick  # noqa: E402

pytestmark = pytest.mark.gui

H, W = 48, 64
RADIUS = 6.0


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def _no_opengl_queries(monkeypatch):
    """Let napari build its layers on a canvas without an OpenGL context (Qt offscreen).

    Nothing is drawn in these tests; only napari's queries of GL limits would fail.
    """
    for name in (
        "napari._vispy.utils.gl",
        "napari._vispy.layers.image",
        "napari._vispy.layers.base",
        "napari._vispy.layers.labels",
        "napari._vispy.canvas",
    ):
        module = importlib.import_module(name)
        if hasattr(module, "get_gl_extensions"):
            monkeypatch.setattr(module, "get_gl_extensions", lambda: "")
        if hasattr(module, "get_max_texture_sizes"):
            monkeypatch.setattr(module, "get_max_texture_sizes", lambda: (16384, 2048))


@pytest.fixture(autouse=True)
def _synchronous(monkeypatch):
    monkeypatch.setattr(FbrsWidget, "synchronous", True)


@pytest.fixture
def errors(monkeypatch):
    """Error notifications shown by the widget."""
    seen: list[str] = []
    monkeypatch.setattr(widget_module, "_notify_error", seen.append)
    return seen


@pytest.fixture
def warnings_(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(widget_module, "_notify_warning", seen.append)
    return seen


def disk_net(radius: float = RADIUS, neg_gain: float = 20.0):
    """TinyNet whose logits are ``k * (t - pos_map) + g * (neg_map - 1)``: a disk of
    ``radius`` around positive clicks, cut around negative clicks (less for a small
    ``g = neg_gain``)."""
    from napari_fbrs.core.models.registry import build_model

    net = build_model("tiny_test", norm_radius=20.0)
    k = 20.0
    t = float(np.tanh(2.0 * radius / 20.0))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.rgb_conv.weight[0, 3, 0, 0] = 1.0  # positive map
        net.rgb_conv.weight[1, 4, 0, 0] = 1.0  # negative map
        for conv in (net.enc[0], net.enc[2], net.mid[0], net.dec[0]):
            conv.weight[0, 0, 1, 1] = 1.0
            conv.weight[1, 1, 1, 1] = 1.0
        net.out.weight[0, 0, 0, 0] = -k
        net.out.weight[0, 1, 0, 0] = neg_gain
        net.out.bias[0] = k * t - neg_gain
    return net.eval()


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
    widget.configure(
        **{"mode": "NoBRS", "zoom_in": False, "device": "cpu", "with_flip": False, **settings}
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


def test_settings_apply_from_the_next_object(viewer2d):
    widget = open_widget(viewer2d)
    widget.add_click(20, 30)
    widget.configure(
        mode="f-BRS-B",
        lbfgs_maxfun=7,
        zoom_in=True,
        zoom_target_size=64,
        max_size=256,
        net_clicks=3,
    )
    widget.add_click(25, 35)
    assert widget.predictor.mode == "NoBRS"
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
    assert errors == ["f-BRS prediction failed: CUDA out of memory (simulated)"]
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
