"""What the model sees: one channel, or up to three mapped to red, green and blue, from
the image's own channel axis or from other image layers of its shape, each scaled by its
layer's contrast limits (followed as they change)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from napari_fbrs._widget.layers import layer_data, unwrap

if TYPE_CHECKING:  # pragma: no cover
    from napari.layers import Image

__all__ = ["NO_CHANNEL", "ChannelsMixin"]

#: the text of "no channel" in the R, G, B boxes
NO_CHANNEL = "—"


class ChannelsMixin:
    """The channel axis and the R, G, B channel choices of the panel.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def set_channel_axis(self, axis: int | None) -> None:
        """Read channels along ``axis`` of the image layer's data (a leading axis), or
        ``None`` for none. This starts over on the image (clicks are dropped): the
        objects then have the image's axes with length 1 along the channel axis."""
        index = self.channel_axis_combo.findData(-1 if axis is None else int(axis))
        if index < 0:
            raise ValueError(f"axis {axis} cannot hold channels of this image")
        self.channel_axis_combo.setCurrentIndex(index)

    def set_channels(self, red: Any, green: Any = None, blue: Any = None) -> None:
        """Choose what the model sees.

        Parameters
        ----------
        red, green, blue : str, int or None
            Channels: image layer names (layers of the image's shape), or channel indices
            when the image has a channel axis (:meth:`set_channel_axis`); ``None`` for
            black. One channel given alone is seen as grey.

        Notes
        -----
        Each channel is scaled by its own layer's contrast limits. The previews of
        unfinished objects are predicted again with the new input.
        """
        for combo, value in zip(self.channel_combos, (red, green, blue), strict=True):
            index = combo.findData(value) if value is not None else 0
            if index < 0:
                raise ValueError(f"{value!r} is not a channel of this image")
            combo.blockSignals(True)
            combo.setCurrentIndex(index)
            combo.blockSignals(False)
        self._apply_channels()

    def _fill_channel_axis_choices(self, layer: Image | None) -> None:
        """The leading axes of ``layer``'s data that may hold channels ("none" first)."""
        combo = self.channel_axis_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("none", -1)
        if layer is not None and not layer.rgb:
            data = layer_data(layer)
            labels = list(self.viewer.dims.axis_labels)[-data.ndim :]
            for i in range(data.ndim - 2):
                name = labels[i] if i < len(labels) else str(i)
                combo.addItem(f"axis {i} ({name}, {data.shape[i]})", i)
        combo.setCurrentIndex(0)
        combo.setEnabled(combo.count() > 1)
        combo.blockSignals(False)

    def _channel_layer_names(self) -> list[str]:
        """Image layers that can be channels of the selected image (same data shape, not
        RGB), the selected one first."""
        image = self._image_layer
        shape = tuple(layer_data(image).shape)
        names = [image.name]
        for lay in self._image_layers():
            if lay is not image and not lay.rgb and tuple(layer_data(lay).shape) == shape:
                names.append(lay.name)
        return names

    def _fill_channel_choices(self, reset: bool = False) -> bool:
        """Fill the R, G, B boxes for the current session (keeping the choices that still
        exist unless ``reset``); returns whether a choice had to change."""
        session = self._session
        combos = self.channel_combos
        before = [c.currentData() for c in combos]
        if session is None or session.rgb:
            items: list[tuple[str, Any]] = []
        elif session.channel_axis is not None:
            items = [(f"channel {i}", i) for i in range(session.n_channels)]
        else:
            items = [(name, name) for name in self._channel_layer_names()]
        for i, combo in enumerate(combos):
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(NO_CHANNEL, None)
            for text, data in items:
                combo.addItem(text, data)
            keep = None if reset else before[i]
            index = combo.findData(keep) if keep is not None else -1
            if index < 0:
                index = 1 if (i == 0 and items) else 0
            combo.setCurrentIndex(index)
            combo.setEnabled(bool(items))
            combo.blockSignals(False)
        return [c.currentData() for c in combos] != before

    def _apply_channels(self, *_: Any, render: bool = True) -> None:
        """Give the session the channels chosen in the R, G, B boxes."""
        session = self._session
        if session is None or session.rgb:
            self._follow_limits([self._image_layer] if self._image_layer is not None else [])
            return
        chosen = [c.currentData() for c in self.channel_combos]
        if all(c is None for c in chosen):
            self.channel_combos[0].setCurrentIndex(1)  # re-enters with the default
            return
        picked = [c for c in chosen if c is not None]
        if session.channel_axis is not None:
            cmap = tuple(picked) if len(picked) == 1 else tuple(chosen)
            dropped = session.set_channels(cmap)
            limit_layers = [self._image_layer]
        else:
            names = list(dict.fromkeys(picked))
            layers = [unwrap(self.viewer.layers[name]) for name in names]
            position = {name: i for i, name in enumerate(names)}
            if len(picked) == 1:
                cmap = (0,)
            else:
                cmap = tuple(None if c is None else position[c] for c in chosen)
            dropped = session.set_channels(cmap, channels=[layer_data(lay) for lay in layers])
            limit_layers = layers
        self._follow_limits(limit_layers)
        if render and dropped:
            self._render(dropped)
            self._schedule()
            self._set_status("Model input changed: the previews are predicted again.")

    def _follow_limits(self, layers: list[Image]) -> None:
        """Follow the contrast limits of ``layers`` (the channels) and the image's."""
        for lay in self._limit_layers:
            with contextlib.suppress(Exception):
                lay.events.contrast_limits.disconnect(self._on_contrast)
        wanted = list(dict.fromkeys([*layers, self._image_layer]))
        self._limit_layers = [lay for lay in wanted if lay is not None]
        for lay in self._limit_layers:
            lay.events.contrast_limits.connect(self._on_contrast)
        self._on_contrast()

    def _on_contrast(self, event: Any = None) -> None:
        """Contrast limits of the image or a channel layer changed: the model sees what
        is shown, from the next object on (so a dragged slider does not re-predict)."""
        session = self._session
        if session is None or self._image_layer is None:
            return
        session.contrast_limits = tuple(self._image_layer.contrast_limits)
        if session.rgb or session.channel_axis is not None:
            return
        names = list(dict.fromkeys(c.currentData() for c in self.channel_combos))
        layers = [
            unwrap(self.viewer.layers[n])
            for n in names
            if n is not None and n in self.viewer.layers
        ]
        if len(layers) == session.n_channels:
            session.channel_limits = [tuple(lay.contrast_limits) for lay in layers]
