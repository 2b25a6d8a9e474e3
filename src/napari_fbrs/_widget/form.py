"""The dock widget's panel: building its controls and connecting their signals to the
widget, and showing the widget's state in them (status line, progress bar, buttons)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QShortcut,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_fbrs._widget.controls import FirstClickCropBox, check_box, spin_box
from napari_fbrs._widget.settings import DEVICES, MODES, PredictorSettings
from napari_fbrs._widget.stack import CONVEX_REGROWTH, DIRECTIONS
from napari_fbrs.core import zoo

__all__ = ["FormMixin"]


class FormMixin:
    """The panel's controls: built once (the widget's attributes ``image_combo``,
    ``finish_button``, ``zoom_first_crop_box``, ...), wired to the widget's methods, and
    kept in step with its state.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self._build_layers_box())
        layout.addWidget(self._build_model_box())
        layout.addWidget(self._build_predictor_box())
        layout.addWidget(self._build_clicks_box())
        layout.addLayout(self._build_action_buttons())
        layout.addWidget(self._build_stack_box())
        for widget in self._build_status_area():
            layout.addWidget(widget)
        layout.addStretch(1)
        self._connect_controls()

    def _build_layers_box(self) -> QGroupBox:
        """Image, channel axis, the model's input channels and the objects layer."""
        layers_box = QGroupBox("Layers")
        form = QFormLayout(layers_box)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image to segment (2D, RGB or nD: last two axes spatial).")
        self.objects_combo = QComboBox()
        self.objects_combo.setToolTip("Labels layer that finished objects are written into.")
        self.channel_axis_combo = QComboBox()
        self.channel_axis_combo.setToolTip(
            "An axis of the image's data that holds channels (not z or t). Layers split "
            "with napari's channel_axis need none: pick them below."
        )
        channel_row = QHBoxLayout()
        self.channel_combos: list[QComboBox] = []
        for colour in ("red (or grey)", "green", "blue"):
            combo = QComboBox()
            combo.setToolTip(
                f"Channel the model sees as {colour}: a layer of the image's shape, or a "
                "channel of its channel axis. One channel alone is seen as grey; each is "
                "scaled by its own layer's contrast limits."
            )
            channel_row.addWidget(combo)
            self.channel_combos.append(combo)
        form.addRow("Image", self.image_combo)
        form.addRow("Channel axis", self.channel_axis_combo)
        form.addRow("Model input (R, G, B)", channel_row)
        form.addRow("Objects", self.objects_combo)
        return layers_box

    def _build_model_box(self) -> QGroupBox:
        """The model: zoo choice, a checkpoint file, and its status line."""
        model_box = QGroupBox("Model")
        grid = QGridLayout(model_box)
        self.model_combo = QComboBox()
        for name, info in zoo.CHECKPOINTS.items():
            suffix = "bundled" if info.bundled else f"download ~{info.size_mb:.0f} MB"
            self.model_combo.addItem(f"{name} ({suffix})", name)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, info.description, Qt.ToolTipRole
            )
        self.model_combo.setCurrentIndex(self.model_combo.findData(zoo.DEFAULT_MODEL))
        self.open_button = QPushButton("Open...")
        self.open_button.setToolTip(
            "Use a checkpoint file (.pth/.pt, official f-BRS/RITM or napari-fbrs layout)."
        )
        self.model_status = QLabel()
        self.model_status.setWordWrap(True)
        self.model_status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        grid.addWidget(self.model_combo, 0, 0)
        grid.addWidget(self.open_button, 0, 1)
        grid.addWidget(self.model_status, 1, 0, 1, 2)
        return model_box

    def _build_predictor_box(self) -> QGroupBox:
        """Predictor settings: device, BRS mode, sizes, flip and ZoomIn."""
        pred_box = QGroupBox("Predictor (applies from the next object)")
        form = QFormLayout(pred_box)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(MODES)
        self.mode_combo.setCurrentText("f-BRS-B")
        self.net_clicks_spin = spin_box(
            0, 100, 0, special="mode default",
            tooltip="Clicks given to the network; later clicks act through the BRS "
            "optimisation only.",
        )  # fmt: skip
        self.lbfgs_spin = spin_box(1, 500, 20)
        self.flip_check = check_box("average with the flipped image", True)
        self.max_size_spin = spin_box(
            0, 8192, 0, 64, "no limit", "Longest side, in pixels, of what the network sees."
        )
        form.addRow("Device", self.device_combo)
        form.addRow("BRS mode", self.mode_combo)
        form.addRow("Network clicks", self.net_clicks_spin)
        form.addRow("L-BFGS evaluations", self.lbfgs_spin)
        self.min_size_spin = spin_box(
            0, 2048, PredictorSettings.min_size, 32, "off",
            "Smaller images are enlarged to this longest side for the network (it sees "
            "too little in tiny images).",
        )  # fmt: skip
        form.addRow("Longest side", self.max_size_spin)
        form.addRow("Smallest side", self.min_size_spin)
        form.addRow(self.flip_check)
        self.trim_check = check_box(
            "corrections only as large as the clicks need",
            PredictorSettings.trim_overshoot,
            "BRS modes: step back from the optimiser's last step to the smallest that still "
            "satisfies the clicks, so that a click at an object's edge moves the edge "
            "instead of carving a notch or flooding the surroundings. Worth trying on small "
            "objects such as nuclei; on photos of large objects the larger step corrects more. "
            "Off: as in the paper.",
        )
        form.addRow(self.trim_check)
        self.zoom_group = QGroupBox("ZoomIn")
        self.zoom_group.setCheckable(True)
        self.zoom_group.setChecked(True)
        zform = QFormLayout(self.zoom_group)
        self.zoom_skip_spin = spin_box(0, 100, 1)
        self.zoom_target_spin = spin_box(8, 4096, 400, 32)
        self.zoom_expand_spin = spin_box(1.0, 5.0, 1.4, 0.1)
        self.zoom_min_crop_spin = spin_box(8, 4096, 200, 16)
        self.zoom_first_crop_box = FirstClickCropBox(
            PredictorSettings.zoom_first_click_crop,
            "How the first click is predicted. auto: on the whole image, then once more "
            "zoomed in when the object found is small (e.g. a nucleus in a large field). "
            "A number: in a square crop of that many pixels around the click (a few object "
            "diameters, e.g. 128, with a min crop of 128). off: on the whole image, as in "
            "the paper.",
        )
        zform.addRow("Skip clicks", self.zoom_skip_spin)
        zform.addRow("Target size", self.zoom_target_spin)
        zform.addRow("Expand ratio", self.zoom_expand_spin)
        zform.addRow("Min crop", self.zoom_min_crop_spin)
        zform.addRow("First-click crop", self.zoom_first_crop_box)
        self.zoom_border_check = check_box(
            "crops may reach past the border",
            PredictorSettings.zoom_beyond_border,
            "An object cut by the image border stays at the centre of its crop; the network "
            "sees the image mirrored past the border. Off: crops stay inside the image, as "
            "in the paper.",
        )
        zform.addRow(self.zoom_border_check)
        form.addRow(self.zoom_group)
        self.defaults_button = QPushButton("Default settings")
        self.defaults_button.setToolTip(
            "Put the model, the predictor settings, the threshold and the click and stack "
            "options back to their defaults. The panel remembers your settings between "
            "napari sessions."
        )
        form.addRow(self.defaults_button)
        return pred_box

    def _build_clicks_box(self) -> QGroupBox:
        """Threshold and how clicks and finished objects are taken."""
        click_box = QGroupBox("Clicks and objects")
        form = QFormLayout(click_box)
        thresh_row = QHBoxLayout()
        self.thresh_slider = QSlider(Qt.Horizontal)
        self.thresh_slider.setRange(1, 99)
        self.thresh_slider.setValue(49)
        self.thresh_label = QLabel("0.49")
        thresh_row.addWidget(self.thresh_slider)
        thresh_row.addWidget(self.thresh_label)
        form.addRow("Threshold", thresh_row)
        self.canvas_check = check_box(
            "click on the canvas to segment",
            True,
            "Left click: object; right click or Shift+click: "
            "background. Works while the selected layer is in "
            "pan/zoom mode.",
        )
        self.default_positive_check = check_box(
            "points added with napari's tools are object clicks", True
        )
        self.selected_label_check = check_box("use the objects layer's selected label")
        self.overwrite_check = check_box("overwrite existing labels")
        for check in (
            self.canvas_check,
            self.default_positive_check,
            self.selected_label_check,
            self.overwrite_check,
        ):
            form.addRow(check)
        return click_box

    def _build_action_buttons(self) -> QGridLayout:
        """Finish, undo, redo, reset, save and load."""
        buttons = QGridLayout()
        self.finish_button = QPushButton("Finish object (Space)")
        self.undo_button = QPushButton("Undo (Ctrl+Z)")
        self.redo_button = QPushButton("Redo (Ctrl+Shift+Z)")
        self.reset_button = QPushButton("Reset clicks (Esc)")
        buttons.addWidget(self.finish_button, 0, 0, 1, 2)
        buttons.addWidget(self.undo_button, 1, 0)
        buttons.addWidget(self.redo_button, 1, 1)
        self.edit_button = QPushButton("Edit object (E)")
        self.edit_button.setToolTip(
            "Reopen a finished object to correct it: press E with the mouse over it, or "
            "pick it as the objects layer's selected label and press this. Its clicks come "
            "back (if this session made it); Finish then replaces it on this slice. (With "
            "the objects layer selected, E is napari's eraser: use the button.)"
        )
        buttons.addWidget(self.reset_button, 2, 0)
        buttons.addWidget(self.edit_button, 2, 1)
        self.save_button = QPushButton("Save objects...")
        self.save_button.setToolTip(
            "Write the objects layer to a TIFF file (all slices). Once saved, the autosave "
            "of this image is removed unless unfinished objects still have clicks."
        )
        buttons.addWidget(self.save_button, 3, 0)
        self.load_button = QPushButton("Load objects...")
        self.load_button.setToolTip(
            "Make the objects of a clicks file again (the _clicks.csv that Save objects "
            "writes beside the TIFF) with the current model and settings, and add them to "
            "the objects layer, each an undo step. Press again to cancel."
        )
        buttons.addWidget(self.load_button, 3, 1)
        return buttons

    def _build_stack_box(self) -> QGroupBox:
        """Slice steps and propagation (enabled for nD images)."""
        self.stack_box = QGroupBox("Stack")
        form = QFormLayout(self.stack_box)
        self.axis_combo = QComboBox()
        self.axis_combo.setToolTip(
            "The axis (z, t, ...) that the slice steps and propagation walk."
        )
        self.prev_button = QPushButton("< Previous slice (,)")
        self.next_button = QPushButton("Next slice (.) >")
        for button in (self.prev_button, self.next_button):
            button.setToolTip(
                "Finish the object on this slice (if it has one) and go on to the "
                "neighbouring slice, keeping its id: the object you segment there is the "
                "same object."
            )
        step_row = QHBoxLayout()
        step_row.addWidget(self.prev_button)
        step_row.addWidget(self.next_button)
        self.object_id_spin = spin_box(
            0, 2**31 - 1, 0, special="new",
            tooltip="Id of the object on this slice when it is finished or propagated "
            "('new': the next free id). A set id replaces that object's old pixels on the "
            "slices written, so a corrected slice can be finished or propagated again.",
        )  # fmt: skip
        self.direction_combo = QComboBox()
        for text, direction in DIRECTIONS:
            self.direction_combo.addItem(text, direction)
        self.stop_iou_spin = spin_box(
            0.0, 1.0, 0.5, 0.05,
            tooltip="Propagation stops where the object's overlap (IoU) with the previous "
            "slice drops below this.",
        )  # fmt: skip
        self.convex_check = check_box(
            "convex objects: stop where the area grows again",
            tooltip="For nuclei and cells: once the object has shrunk along the walk, stop "
            f"where its area grows again by more than {CONVEX_REGROWTH:.0%} (the walk "
            "entering a touching neighbour).",
        )
        self.min_contrast_spin = spin_box(
            0.0, 1.0, 0.0, 0.05, special="off",
            tooltip="Stop where the object's brightness above the background falls below "
            "this fraction of the start slice's (for bright objects on a dark background).",
        )  # fmt: skip
        self.propagate_button = QPushButton("Propagate")
        self.propagate_button.setToolTip(
            "Segment the current object on the neighbouring slices too (along the slice "
            "axis, in the chosen direction) and write it on every slice reached. A slice "
            "with only negative clicks is a stop."
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the propagation; nothing is written.")
        self.cancel_button.setEnabled(False)
        propagate_row = QHBoxLayout()
        propagate_row.addWidget(self.propagate_button)
        propagate_row.addWidget(self.cancel_button)
        form.addRow("Slice axis", self.axis_combo)
        form.addRow(step_row)
        form.addRow("Object id", self.object_id_spin)
        form.addRow("Direction", self.direction_combo)
        form.addRow("Stop IoU", self.stop_iou_spin)
        form.addRow(self.convex_check)
        form.addRow("Min contrast", self.min_contrast_spin)
        form.addRow(propagate_row)
        return self.stack_box

    def _build_status_area(self) -> list[QWidget]:
        """The restore offer, the progress bar and the status line."""
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # indeterminate: a busy indicator
        self.progress.setMaximumHeight(10)
        self.progress.setTextVisible(False)
        self.progress.setVisible(False)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.restore_button = QPushButton("Restore previous session")
        self.restore_button.setToolTip(
            "An autosave of an earlier session on this image was found (the program may "
            "have stopped before the labels were saved): bring back its objects and clicks."
        )
        self.restore_button.setVisible(False)
        self.restore_button.clicked.connect(lambda *_: self.restore_autosave())
        self.dismiss_button = QPushButton("Dismiss")
        self.dismiss_button.setToolTip(
            "Do not restore it: the earlier session is kept aside as "
            "<name>.previous.fbrs-autosave.json and not offered again."
        )
        self.dismiss_button.setVisible(False)
        self.dismiss_button.clicked.connect(lambda *_: self.dismiss_autosave())
        offer = QWidget()
        row = QHBoxLayout(offer)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.restore_button, 1)
        row.addWidget(self.dismiss_button)
        return [offer, self.progress, self.status_label]

    def _setting_signals(self) -> tuple[Any, ...]:
        """The change signals of the predictor settings' controls."""
        return (
            self.device_combo.currentIndexChanged,
            self.mode_combo.currentIndexChanged,
            self.net_clicks_spin.valueChanged,
            self.lbfgs_spin.valueChanged,
            self.flip_check.toggled,
            self.trim_check.toggled,
            self.max_size_spin.valueChanged,
            self.min_size_spin.valueChanged,
            self.zoom_group.toggled,
            self.zoom_skip_spin.valueChanged,
            self.zoom_target_spin.valueChanged,
            self.zoom_expand_spin.valueChanged,
            self.zoom_min_crop_spin.valueChanged,
            self.zoom_first_crop_box.valueChanged,
            self.zoom_border_check.toggled,
        )

    def _connect_controls(self) -> None:
        """Connect the controls' signals to the widget's methods."""
        self.image_combo.currentIndexChanged.connect(self._on_image_choice)
        self.channel_axis_combo.currentIndexChanged.connect(self._on_channel_axis_choice)
        for combo in self.channel_combos:
            combo.currentIndexChanged.connect(self._apply_channels)
        self.axis_combo.currentIndexChanged.connect(self._update_buttons)
        self.object_id_spin.valueChanged.connect(self._on_object_id)
        self.objects_combo.currentIndexChanged.connect(self._on_objects_choice)
        self.model_combo.currentIndexChanged.connect(self._on_model_choice)
        self.open_button.clicked.connect(self._open_checkpoint)
        for signal in self._setting_signals():
            signal.connect(self._on_settings_changed)
        self.device_combo.currentIndexChanged.connect(self._update_model_status)
        self.thresh_slider.valueChanged.connect(self._on_threshold)
        self.default_positive_check.toggled.connect(self._apply_default_polarity)
        self.finish_button.clicked.connect(self.finish_object)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.reset_button.clicked.connect(self.reset_clicks)
        self.edit_button.clicked.connect(lambda *_: self.edit_object())
        self.defaults_button.clicked.connect(lambda *_: self.reset_settings())
        self.save_button.clicked.connect(lambda *_: self.save_objects())
        self.load_button.clicked.connect(lambda *_: self._on_load_button())
        self.propagate_button.clicked.connect(lambda *_: self.propagate_object())
        self.cancel_button.clicked.connect(self.cancel_propagation)
        self.next_button.clicked.connect(self.next_slice)
        self.prev_button.clicked.connect(self.previous_slice)
        # while the widget has focus (on the canvas, viewer key bindings do the same)
        for seq, slot in (("Ctrl+Z", self.undo), ("Ctrl+Shift+Z", self.redo)):
            shortcut = QShortcut(QKeySequence(seq), self)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        if busy:
            self._set_status("Predicting...")
        else:
            self.progress.setRange(0, 0)  # back to a busy indicator

    def _show_progress(self, done: int, total: int) -> None:
        if not (self._propagating or self._loading):
            return
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))
        if self._loading:
            self._set_status(f"Loading objects: {done}/{total}...")
        else:
            self._set_status(f"Propagating: {done}/{total} slices...")

    def _update_buttons(self, *_: Any) -> None:
        session = self._session
        has = session is not None
        clicks = has and bool(session.clicks(self._key))
        self.finish_button.setEnabled(clicks)
        self.reset_button.setEnabled(clicks)
        self.edit_button.setEnabled(has and not clicks)
        # a kept id (an object being edited, or carried to this slice) shows on the button
        pinned = session.object_label(self._key) if has else None
        self.finish_button.setText(
            "Finish object (Space)" if pinned is None else f"Finish object {pinned} (Space)"
        )
        stack = has and self.stack_axis is not None
        self.stack_box.setEnabled(stack)
        self.propagate_button.setEnabled(stack and clicks and not self._propagating)
        self.cancel_button.setEnabled(self._propagating)
        self.undo_button.setEnabled(has and session.can_undo)
        self.redo_button.setEnabled(has and session.can_redo)
        self.save_button.setEnabled(has and not self._loading)
        self.load_button.setEnabled(has)
        self._show_object_id()

    def _show_object_id(self) -> None:
        label = None if self._session is None else self._session.object_label(self._key)
        self.object_id_spin.blockSignals(True)
        self.object_id_spin.setValue(0 if label is None else int(label))
        self.object_id_spin.blockSignals(False)

    def _on_object_id(self, value: int) -> None:
        if self._session is not None:
            self._session.set_object_label(self._key, int(value) or None)
