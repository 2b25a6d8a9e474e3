"""The panel's remembered settings: what the user chose last time (the model, the
predictor settings, the threshold, how clicks and objects are taken, the stack options),
kept in a small JSON file in the user's configuration folder, read when the panel opens
and written shortly after each change.

A damaged or foreign file, or a value that no longer fits (a model file that is gone, a
mode from another version), is skipped with a note in the status line: the panel always
opens, with the defaults where a value could not be used.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer

from napari_fbrs.core import zoo

__all__ = [
    "FORMAT",
    "PREFERENCES_ENV",
    "PreferencesMixin",
    "preferences_path",
    "read_preferences",
    "write_preferences",
]

#: environment variable naming the folder of the settings file (tests, several setups)
PREFERENCES_ENV = "NAPARI_FBRS_CONFIG"
FILENAME = "widget-settings.json"
FORMAT = "napari-fbrs-widget-settings"
VERSION = 1
#: a settings file larger than this is not a settings file: not read
MAX_BYTES = 64 * 1024
#: delay before writing after a change (a dragged slider writes once)
SAVE_DELAY_MS = 500


def preferences_path() -> Path:
    """The settings file: ``$NAPARI_FBRS_CONFIG/widget-settings.json``, else in the user's
    configuration folder (``~/.config/napari-fbrs`` on Linux)."""
    env = os.environ.get(PREFERENCES_ENV)
    if env:
        return Path(env).expanduser() / FILENAME
    import platformdirs  # napari's (and pooch's) dependency

    return Path(platformdirs.user_config_dir("napari-fbrs", appauthor=False)) / FILENAME


def read_preferences(path: Path | None = None) -> tuple[dict[str, Any], str | None]:
    """The saved values and, when the file could not be used, why (never raises).

    Returns
    -------
    values : dict
        Name -> JSON value; empty when there is no usable file.
    problem : str or None
        Why the file was not used (``None`` when it was, or when there is none).
    """
    path = preferences_path() if path is None else path
    try:
        if path.stat().st_size > MAX_BYTES:
            return {}, f"{path} is too large for a settings file; it was not read"
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return {}, f"the saved settings {path} could not be read ({type(exc).__name__})"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return {}, f"{path} is not a napari-fbrs settings file; it was not used"
    values = doc.get("values")
    if not isinstance(values, dict):
        return {}, f"the saved settings {path} hold no values; they were not used"
    return values, None


def write_preferences(values: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``values`` (JSON-able) as the settings file, atomically; returns its path.

    Raises
    ------
    OSError
        The folder cannot be made or written; an older file is left as it was.
    """
    from napari_fbrs.core.atomic import atomic_write

    path = preferences_path() if path is None else path
    doc = {"format": FORMAT, "version": VERSION, "values": values}
    data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
    return path


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class PreferencesMixin:
    """Remembering the panel's settings between napari sessions.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def _init_preferences(self) -> None:
        """Read the saved settings into the controls, then save after each change."""
        self._prefs_loading = True
        self._prefs_warned = False
        self._prefs_timer = QTimer(self)
        self._prefs_timer.setSingleShot(True)
        self._prefs_timer.timeout.connect(self.save_preferences)
        self._prefs_defaults = self.preference_values()  # the controls as built
        try:
            values, problem = read_preferences()
            skipped = self._apply_preferences(values)
        finally:
            self._prefs_loading = False
        if problem is None and skipped:
            problem = f"saved settings not used: {', '.join(skipped)}"
        if problem:
            self._set_status(f"Settings: {problem}.")
        for signal in (
            self.model_combo.currentIndexChanged,
            self.thresh_slider.valueChanged,
            self.canvas_check.toggled,
            self.default_positive_check.toggled,
            self.selected_label_check.toggled,
            self.overwrite_check.toggled,
            self.direction_combo.currentIndexChanged,
            self.stop_iou_spin.valueChanged,
            self.convex_check.toggled,
            self.min_contrast_spin.valueChanged,
            *self._setting_signals(),
        ):
            signal.connect(self._preferences_changed)

    def _preferences_changed(self, *_: Any) -> None:
        if not self._prefs_loading and not self._closed:
            self._prefs_timer.start(SAVE_DELAY_MS)

    def _flush_preferences(self) -> None:
        if self._prefs_timer.isActive():
            self._prefs_timer.stop()
            self.save_preferences()

    def preference_values(self) -> dict[str, Any]:
        """The settings the panel remembers, as JSON values (what
        :meth:`save_preferences` writes)."""
        from napari_fbrs._widget.settings import PredictorSettings

        settings = self._read_settings()
        values: dict[str, Any] = {
            f.name: getattr(settings, f.name)
            for f in fields(PredictorSettings)
            if f.name != "model"
        }
        model = settings.model
        if isinstance(model, str):
            values["model"] = model
        elif isinstance(model, Path):
            values["model_file"] = str(model)
        values.update(
            canvas_clicks=self.canvas_check.isChecked(),
            points_positive=self.default_positive_check.isChecked(),
            use_selected_label=self.selected_label_check.isChecked(),
            overwrite=self.overwrite_check.isChecked(),
            direction=int(self.direction_combo.currentData()),
            stop_iou=float(self.stop_iou_spin.value()),
            convex=self.convex_check.isChecked(),
            min_contrast=float(self.min_contrast_spin.value()),
        )
        return values

    def save_preferences(self) -> bool:
        """Write the remembered settings now (the panel does it after each change)."""
        try:
            write_preferences(self.preference_values())
        except OSError as exc:
            if not self._prefs_warned:  # once: settings are a convenience
                self._prefs_warned = True
                from napari_fbrs._widget import notify

                notify.warning(f"f-BRS: the settings could not be saved ({exc}).")
            return False
        return True

    def reset_settings(self) -> None:
        """Put every remembered setting back to its default (and remember that)."""
        self._apply_preferences(self._prefs_defaults)
        self._set_status("Settings back to their defaults.")
        self._preferences_changed()

    def _apply_preferences(self, values: dict[str, Any]) -> list[str]:
        """Set the controls from saved ``values``; returns the names that were skipped
        (unknown, of the wrong type, or no longer valid)."""
        from napari_fbrs._widget.settings import DEVICES, MODES, PredictorSettings

        defaults = PredictorSettings()
        checks = {
            "canvas_clicks": self.canvas_check,
            "points_positive": self.default_positive_check,
            "use_selected_label": self.selected_label_check,
            "overwrite": self.overwrite_check,
            "convex": self.convex_check,
        }
        skipped: list[str] = []
        settings: dict[str, Any] = {}
        for name, value in values.items():
            ok = True
            if name == "model":
                ok = isinstance(value, str) and value in zoo.CHECKPOINTS
                if ok:
                    settings["model"] = value
            elif name == "model_file":
                ok = isinstance(value, str) and Path(value).is_file()
                if ok:
                    settings["model"] = Path(value)
            elif name == "device":
                ok = value in DEVICES
            elif name == "mode":
                ok = value in MODES
            elif name == "zoom_first_click_crop":
                ok = value == "auto" or (_is_number(value) and int(value) == value >= 0)
            elif name in checks:
                ok = isinstance(value, bool)
                if ok:
                    checks[name].setChecked(value)
                    continue
            elif name == "direction":
                ok = value in (-1, 0, 1) and not isinstance(value, bool)
                if ok:
                    self.direction_combo.setCurrentIndex(self.direction_combo.findData(value))
                    continue
            elif name in ("stop_iou", "min_contrast"):
                ok = _is_number(value) and 0.0 <= value <= 1.0
                if ok:
                    spin = self.stop_iou_spin if name == "stop_iou" else self.min_contrast_spin
                    spin.setValue(float(value))
                    continue
            elif hasattr(defaults, name):
                default = getattr(defaults, name)
                if isinstance(default, bool):
                    ok = isinstance(value, bool)
                else:
                    ok = _is_number(value) and value >= 0
                    if ok and isinstance(default, int):
                        ok = int(value) == value
                        value = int(value)
                if ok and name == "prob_thresh":
                    ok = 0.0 < value < 1.0
            else:
                ok = False
            if not ok:
                skipped.append(name)
            elif name not in ("model", "model_file"):
                settings[name] = value
        self.configure(**settings)
        return skipped
