"""The napari layers of the dock widget: the image chosen, and the three layers kept
beside it (clicks, the current object's preview, the finished objects), created or reused
with the image's shape and transform; attaching a session to an image and detaching it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fbrs._widget import notify
from napari_fbrs.core.session import SegmentationSession

if TYPE_CHECKING:  # pragma: no cover
    from napari.layers import Image

__all__ = [
    "CLICKS_LAYER",
    "CURRENT_LAYER",
    "NEGATIVE_COLOR",
    "OBJECTS_LAYER",
    "POSITIVE_COLOR",
    "PREVIEW_COLOR",
    "LayersMixin",
    "layer_data",
    "layer_source_path",
    "preview_colormap",
    "unwrap",
]

CLICKS_LAYER = "fbrs clicks"
CURRENT_LAYER = "fbrs current"
OBJECTS_LAYER = "fbrs objects"
POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "red"
PREVIEW_COLOR = (0.0, 0.85, 1.0, 1.0)  # cyan


def layer_source_path(layer: Any) -> Path | None:
    """The file a napari layer was opened from, if any."""
    source = getattr(layer, "source", None)
    path = getattr(source, "path", None)
    if not path:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return Path(path)
    return None


def unwrap(obj: Any) -> Any:
    """The napari object behind the ``PublicOnlyProxy`` that napari hands to plugins
    (each access makes a new proxy, so identity checks need the object itself)."""
    return getattr(obj, "__wrapped__", obj)


def preview_colormap() -> Any:
    """One colour for the preview (value 1), distinct from the objects' colours."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(
        color_dict={None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), 1: PREVIEW_COLOR}
    )


def layer_data(layer: Any) -> Any:
    """The full-resolution data of an image layer (level 0 of a multiscale one)."""
    return layer.data[0] if layer.multiscale else layer.data


class LayersMixin:
    """The image layer segmented and the widget's own layers.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def set_image_layer(self, layer: Image) -> None:
        """Segment ``layer`` (an Image layer of the viewer) from now on."""
        index = self.image_combo.findText(layer.name)
        if index < 0:
            raise ValueError(f"{layer.name!r} is not an image layer of this viewer")
        self.image_combo.setCurrentIndex(index)
        if self._image_layer is not layer:
            self._on_image_choice()

    def _image_layers(self) -> list[Image]:
        from napari.layers import Image

        return [unwrap(layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_image_choices(self) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        else:
            active = self.viewer.layers.selection.active
            if active is not None and active.name in names:
                self.image_combo.setCurrentText(active.name)
        self.image_combo.blockSignals(False)

    def _refresh_objects_choices(self) -> None:
        from napari.layers import Labels

        self.objects_combo.blockSignals(True)
        self.objects_combo.clear()
        if self._session is not None:
            shape = self._session.labels_shape
            for layer in self.viewer.layers:
                if (
                    isinstance(layer, Labels)
                    and layer is not self._current
                    and not layer.multiscale
                    and tuple(layer.data.shape) == shape
                ):
                    self.objects_combo.addItem(layer.name)
            if self._objects is not None:
                self.objects_combo.setCurrentText(self._objects.name)
        self.objects_combo.blockSignals(False)

    def _on_layers_changed(self, event: Any = None) -> None:
        if self._guard:
            return
        if self._image_layer is not None and self._image_layer not in self.viewer.layers:
            self._detach()
        self._refresh_image_choices()
        if self._image_layer is None and self.image_combo.count():
            self._on_image_choice()
        self._refresh_objects_choices()
        if self._session is not None:
            with self._guarding():
                changed = self._fill_channel_choices()
            if changed:
                self._apply_channels()

    def _on_image_choice(self, *_: Any) -> None:
        name = self.image_combo.currentText()
        layer = next((lay for lay in self._image_layers() if lay.name == name), None)
        if layer is self._image_layer:
            return
        self._detach()
        self._fill_channel_axis_choices(layer)
        if layer is not None:
            self._attach_safely(layer)
        self._update_buttons()

    def _on_channel_axis_choice(self, *_: Any) -> None:
        """Another channel axis: a new geometry, so start over on the image."""
        layer = self._image_layer
        if layer is None or self._guard:
            return
        self._detach()
        self._attach_safely(layer)
        self._update_buttons()

    def _attach_safely(self, layer: Image) -> None:
        try:
            self._attach(layer)
        except Exception as exc:  # unsupported layout: say so, change nothing
            self._detach()
            notify.error(f"f-BRS cannot segment {layer.name!r}: {exc}")

    def _on_image_data(self, event: Any = None) -> None:
        """The image layer got new data: start over on it (clicks are dropped)."""
        layer = self._image_layer
        if layer is None or self._session is None:
            return
        data = layer_data(layer)
        if data is self._session.image:
            return
        self._detach()
        self._fill_channel_axis_choices(layer)
        self._attach_safely(layer)
        self._update_buttons()

    def _detach(self) -> None:
        self._flush_autosave()
        self._saver = None
        self._restorable = None
        self._unclaimed = False
        self._image_info = None
        self._show_restore_offer(False)
        self._detach_layer_events()
        self._session = None
        self._image_layer = None
        self._finish_pending = False
        self._key = ()
        self._set_status("Select an image layer to segment." if not self._image_layers() else "")

    def _detach_layer_events(self) -> None:
        for lay in self._limit_layers:
            with contextlib.suppress(Exception):
                lay.events.contrast_limits.disconnect(self._on_contrast)
        self._limit_layers = []
        if self._points is not None:
            with contextlib.suppress(Exception):
                self._points.events.data.disconnect(self._on_points_data)
            with contextlib.suppress(Exception):
                self._points.events.features.disconnect(self._on_points_data)
        if self._image_layer is not None:
            with contextlib.suppress(Exception):
                self._image_layer.events.data.disconnect(self._on_image_data)

    def _attach(self, layer: Image) -> None:
        data = layer_data(layer)
        channel_axis = self.channel_axis_combo.currentData()
        if channel_axis is None or channel_axis < 0 or layer.rgb or channel_axis >= data.ndim - 2:
            channel_axis = None
        session = SegmentationSession(
            data,
            rgb=bool(layer.rgb),
            channel_axis=channel_axis,
            predictor_factory=self._make_predictor,
            contrast_limits=tuple(layer.contrast_limits),
            prob_thresh=self.thresh_slider.value() / 100.0,
        )
        self._image_layer = layer
        self._session = session
        self._objects_path = None  # the save dialog starts beside the new image
        with self._guarding():
            self._ensure_layers()
            self._fill_channel_choices(reset=True)
            self._fill_axis_choices()
        session.set_labels(self._objects.data)
        self._apply_channels(render=False)
        layer.events.data.connect(self._on_image_data)
        self._key = self._compute_key()
        if self._attached_once:
            self._write_points()  # clicks in the layer belonged to the previous image
        else:
            self._import_points()  # reopening the panel: take the clicks over
        self._attached_once = True
        self._refresh_objects_choices()
        with self._guarding():
            self.viewer.layers.selection.active = layer
        self._update_buttons()
        self._schedule()
        self._open_autosave(layer)

    def _layer_kwargs(self) -> dict[str, Any]:
        """Scale and translate of the widget's layers: the image's; along a channel axis
        (length 1 in the layers) one plane spans every channel, so it shows at each."""
        layer = self._image_layer
        scale = [float(v) for v in layer.scale]
        translate = [float(v) for v in layer.translate]
        axis = self._session.channel_axis if self._session is not None else None
        if axis is not None:
            n = self._session.n_channels
            translate[axis] += 0.5 * (n - 1) * scale[axis]
            scale[axis] *= n
        return {"scale": tuple(scale), "translate": tuple(translate)}

    def _ensure_layers(self) -> None:
        """Create or reuse the three layers, matching the image's shape and transform."""
        from napari.layers import Labels, Points

        session = self._session
        shape = session.labels_shape
        ndim = len(shape)
        layers = self.viewer.layers
        kwargs = self._layer_kwargs()

        points = unwrap(layers[CLICKS_LAYER]) if CLICKS_LAYER in layers else None
        if not (isinstance(points, Points) and points.ndim == ndim):
            size = max(2.0, max(session.spatial_shape) / 80.0)
            points = Points(
                np.zeros((0, ndim)),
                ndim=ndim,
                name=CLICKS_LAYER,
                features={"positive": np.zeros(0, dtype=bool)},
                face_color="positive",
                face_color_cycle={True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
                border_color="white",
                size=size,
                **kwargs,
            )
            layers.append(points)
        else:
            points.scale, points.translate = kwargs["scale"], kwargs["translate"]
            if "positive" not in points.features:
                points.features = {"positive": np.ones(len(points.data), dtype=bool)}
            points.face_color_cycle = {True: POSITIVE_COLOR, False: NEGATIVE_COLOR}
            points.face_color = "positive"
        self._points = points

        current = unwrap(layers[CURRENT_LAYER]) if CURRENT_LAYER in layers else None
        if isinstance(current, Labels) and tuple(current.data.shape) == shape:
            current.data[...] = 0
            self._shown.clear()
            current.scale, current.translate = kwargs["scale"], kwargs["translate"]
            current.refresh()
        else:
            if isinstance(current, Labels):  # the preview of another image's geometry
                layers.remove(current)
            current = Labels(
                np.zeros(shape, dtype=np.uint8), name=CURRENT_LAYER, opacity=0.55, **kwargs
            )
            layers.append(current)
            self._shown.clear()
        current.colormap = preview_colormap()
        self._current = current

        objects = self._objects if self._objects in layers else None
        if objects is None or tuple(objects.data.shape) != shape:
            objects = unwrap(layers[OBJECTS_LAYER]) if OBJECTS_LAYER in layers else None
        if not (
            isinstance(objects, Labels)
            and tuple(objects.data.shape) == shape
            and isinstance(objects.data, np.ndarray)
        ):
            old = unwrap(layers[OBJECTS_LAYER]) if OBJECTS_LAYER in layers else None
            if (
                isinstance(old, Labels)
                and isinstance(old.data, np.ndarray)
                and tuple(old.data.shape) != shape
                and not old.data.any()
            ):
                layers.remove(old)  # ours, empty, for another geometry (labels are kept)
            objects = Labels(np.zeros(shape, dtype=np.uint32), name=OBJECTS_LAYER, **kwargs)
            layers.append(objects)
        self._objects = objects

        # the preview above the objects, the clicks on top
        for lay in (objects, current, points):
            index = layers.index(lay)
            if index != len(layers) - 1:
                layers.move(index, len(layers))
        points.events.data.connect(self._on_points_data)
        points.events.features.connect(self._on_points_data)
        self._apply_default_polarity()

    def _layers_alive(self) -> bool:
        layers = self.viewer.layers
        return all(
            lay is not None and lay in layers
            for lay in (self._points, self._current, self._objects)
        )

    def _require_session(self) -> SegmentationSession | None:
        if self._session is None:
            notify.warning("f-BRS: add or select an image layer first.")
            return None
        if not self._layers_alive():
            with self._guarding():
                self._detach_layer_events()
                self._ensure_layers()
            self._image_layer.events.data.connect(self._on_image_data)
            self._apply_channels(render=False)  # follows the contrast limits again
            self._refresh_objects_choices()
            self._write_points()
            self._render(self._session.preview_keys(), clear=True)
            self._adopt_objects_layer()
        return self._session

    def _adopt_objects_layer(self) -> None:
        """Follow the objects layer if its data was replaced outside the widget."""
        data = self._objects.data
        if data is not self._session.labels:
            self._session.set_labels(data)  # clears the history: it was about the old array

    @contextlib.contextmanager
    def _guarding(self) -> Iterator[None]:
        self._guard += 1
        try:
            yield
        finally:
            self._guard -= 1

    def _on_objects_choice(self, *_: Any) -> None:
        name = self.objects_combo.currentText()
        if self._session is None or not name or name not in self.viewer.layers:
            return
        layer = unwrap(self.viewer.layers[name])
        if layer is self._objects:
            return
        try:
            self._session.set_labels(layer.data)
        except (TypeError, ValueError) as exc:
            notify.error(f"f-BRS cannot commit into {name!r}: {exc}")
            self._refresh_objects_choices()
            return
        self._objects = layer
        self._update_buttons()

    def _apply_default_polarity(self, *_: Any) -> None:
        if self._points is not None:
            self._points.feature_defaults = {
                "positive": bool(self.default_positive_check.isChecked())
            }
