"""Predictor settings of the dock widget: :class:`PredictorSettings`, the choices the
panel offers for them, and reading and setting them through the panel's controls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from napari_fbrs.core import zoo

__all__ = ["DEVICES", "MODES", "PredictorSettings", "SettingsMixin"]

DEVICES = ("auto", "cpu", "cuda", "mps")
# the predictor's modes (napari_fbrs.core.predictor.MODES; repeated here because that
# module imports torch, and a test checks the two agree)
MODES = ("NoBRS", "RGB-BRS", "DistMap-BRS", "f-BRS-A", "f-BRS-B", "f-BRS-C")


@dataclass(frozen=True)
class PredictorSettings:
    """Settings of the predictors the widget makes (one per object, so a change applies
    from the next object on).

    Attributes
    ----------
    model : str, pathlib.Path or InteractiveNet
        A model-zoo name (``napari_fbrs.core.zoo.CHECKPOINTS``), a checkpoint file, or a
        network object (``napari_fbrs.build_model(...)``/``load_model(...)``).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    mode : str
        BRS mode, one of ``NoBRS``, ``RGB-BRS``, ``DistMap-BRS``, ``f-BRS-A/B/C``.
    net_clicks : int
        Clicks given to the network; 0: the mode's default.
    lbfgs_maxfun : int
        Maximum objective evaluations of L-BFGS-B per click.
    zoom_in : bool
        Use ZoomIn.
    zoom_skip_clicks, zoom_target_size, zoom_expansion_ratio, zoom_min_crop
        ZoomIn's ``skip_clicks``, ``target_size``, ``expansion_ratio`` and
        ``min_crop_size``.
    zoom_first_click_crop : int or "auto"
        ZoomIn's ``first_click_crop``: ``"auto"`` (zoom in again on a small first-click
        object), a side in pixels, or 0 (off: the first click sees the whole image).
    zoom_beyond_border : bool
        ZoomIn's ``beyond_border``: crops may reach past the image border (mirrored).
    max_size : int
        Longest side (pixels) of what the network sees; 0: no limit.
    min_size : int
        Smaller images are enlarged to this longest side for the network; 0: never.
    with_flip : bool
        Average with the horizontally flipped prediction.
    trim_overshoot : bool
        The predictor's ``trim_overshoot``: BRS corrections only as large as the clicks
        need (worth trying on small objects such as nuclei; off, as in the paper).
    prob_thresh : float
        Probability threshold of the predictor (BRS click consistency); the preview's
        threshold is the session's, changed live by the slider.
    """

    model: Any = zoo.DEFAULT_MODEL
    device: str = "auto"
    mode: str = "f-BRS-B"
    net_clicks: int = 0
    lbfgs_maxfun: int = 20
    zoom_in: bool = True
    zoom_skip_clicks: int = 1
    zoom_target_size: int = 400
    zoom_expansion_ratio: float = 1.4
    zoom_min_crop: int = 200
    zoom_first_click_crop: int | str = "auto"
    zoom_beyond_border: bool = True
    max_size: int = 0
    min_size: int = 256  # the predictor's MIN_VIEW_SIZE (its module imports torch)
    with_flip: bool = True
    trim_overshoot: bool = False
    prob_thresh: float = 0.49


class SettingsMixin:
    """The predictor settings, read from and written to the panel's controls.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def configure(self, **settings: Any) -> None:
        """Set predictor settings by name (see :class:`PredictorSettings`); the controls
        follow. They apply from the next object on.

        Raises
        ------
        TypeError
            Unknown setting name.
        """
        names = {f.name for f in fields(PredictorSettings)}
        unknown = set(settings) - names
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(names)}")
        if "model" in settings:
            self.set_model(settings["model"])
        setters: dict[str, Callable[[Any], None]] = {
            "device": self.device_combo.setCurrentText,
            "mode": self.mode_combo.setCurrentText,
            "net_clicks": self.net_clicks_spin.setValue,
            "lbfgs_maxfun": self.lbfgs_spin.setValue,
            "zoom_in": self.zoom_group.setChecked,
            "zoom_skip_clicks": self.zoom_skip_spin.setValue,
            "zoom_target_size": self.zoom_target_spin.setValue,
            "zoom_expansion_ratio": self.zoom_expand_spin.setValue,
            "zoom_min_crop": self.zoom_min_crop_spin.setValue,
            "zoom_first_click_crop": self.zoom_first_crop_box.setValue,
            "zoom_beyond_border": self.zoom_border_check.setChecked,
            "max_size": self.max_size_spin.setValue,
            "min_size": self.min_size_spin.setValue,
            "with_flip": self.flip_check.setChecked,
            "trim_overshoot": self.trim_check.setChecked,
            "prob_thresh": lambda v: self.thresh_slider.setValue(int(round(v * 100))),
        }
        for name, value in settings.items():
            if name != "model":
                setters[name](value)
        self._settings = self._read_settings()

    def _read_settings(self) -> PredictorSettings:
        return PredictorSettings(
            model=self.model_combo.currentData(),
            device=self.device_combo.currentText(),
            mode=self.mode_combo.currentText(),
            net_clicks=self.net_clicks_spin.value(),
            lbfgs_maxfun=self.lbfgs_spin.value(),
            zoom_in=self.zoom_group.isChecked(),
            zoom_skip_clicks=self.zoom_skip_spin.value(),
            zoom_target_size=self.zoom_target_spin.value(),
            zoom_expansion_ratio=self.zoom_expand_spin.value(),
            zoom_min_crop=self.zoom_min_crop_spin.value(),
            zoom_first_click_crop=self.zoom_first_crop_box.value(),
            zoom_beyond_border=self.zoom_border_check.isChecked(),
            max_size=self.max_size_spin.value(),
            min_size=self.min_size_spin.value(),
            with_flip=self.flip_check.isChecked(),
            trim_overshoot=self.trim_check.isChecked(),
            prob_thresh=self.thresh_slider.value() / 100.0,
        )

    def _on_settings_changed(self, *_: Any) -> None:
        self._settings = self._read_settings()
