"""Small Qt input controls of the dock widget: number boxes, check boxes and the
first-click crop box."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtGui import QValidator
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

__all__ = ["FirstClickCropBox", "check_box", "spin_box"]


def check_box(text: str, checked: bool = False, tooltip: str | None = None) -> QCheckBox:
    """A check box with its label, initial state and tooltip."""
    box = QCheckBox(text)
    box.setChecked(checked)
    if tooltip:
        box.setToolTip(tooltip)
    return box


def spin_box(
    low: float,
    high: float,
    value: float,
    step: float | None = None,
    special: str | None = None,
    tooltip: str | None = None,
) -> QSpinBox | QDoubleSpinBox:
    """A spin box (a double one when any bound or the step is a float); ``special`` is the
    text shown at ``low``."""
    box = QDoubleSpinBox() if any(isinstance(v, float) for v in (low, high, step)) else QSpinBox()
    box.setRange(low, high)
    if step is not None:
        box.setSingleStep(step)
    if special is not None:
        box.setSpecialValueText(special)
    box.setValue(value)
    if tooltip:
        box.setToolTip(tooltip)
    return box


class _CropValidator(QValidator):
    """Accepts what :meth:`FirstClickCropBox._parse` takes; the beginnings of ``off``,
    ``auto`` and of numbers below the smallest size while they are typed."""

    def validate(self, text: str, pos: int):  # noqa: D102 (Qt API)
        word = text.strip().lower()
        if word and FirstClickCropBox._parse(word) is not None:
            return QValidator.Acceptable, text, pos
        if "off".startswith(word) or "auto".startswith(word):
            return QValidator.Intermediate, text, pos
        if word.isdigit() and int(word) < FirstClickCropBox.LOW:  # "1" on the way to "128"
            return QValidator.Intermediate, text, pos
        return QValidator.Invalid, text, pos


class FirstClickCropBox(QComboBox):
    """ZoomIn's first-click crop: ``off``, ``auto`` or a side in pixels (typed or picked).

    :meth:`value` is ``0`` for off, ``"auto"``, or the side; text that is not (yet) a valid
    setting leaves the value as it was and is put back when editing ends.
    """

    #: emitted with the new value (0, "auto" or pixels) when it changes
    valueChanged = Signal(object)  # noqa: N815 (Qt naming)

    CHOICES = ("off", "auto", "64", "128", "256")
    LOW, HIGH = 8, 4096

    def __init__(self, value: int | str = "auto", tooltip: str | None = None):
        super().__init__()
        self.setEditable(True)
        self.addItems(self.CHOICES)
        self.setInsertPolicy(QComboBox.NoInsert)
        self.setValidator(_CropValidator(self))
        self._value: int | str = 0
        self.setValue(value)
        if tooltip:
            self.setToolTip(tooltip)
        self.currentTextChanged.connect(self._on_text)
        self.lineEdit().editingFinished.connect(self._restore_text)

    def value(self) -> int | str:
        """``0`` (off), ``"auto"`` or the crop side in pixels."""
        return self._value

    def setValue(self, value: int | str | None) -> None:  # noqa: N802 (Qt naming)
        """Set ``0``/``None``/``"off"``, ``"auto"`` or a side of 8 to 4096 pixels.

        Raises
        ------
        ValueError
            Anything else.
        """
        parsed = self._parse(value)
        if parsed is None:
            raise ValueError(
                f"first-click crop must be 'off', 'auto' or {self.LOW} to {self.HIGH} pixels, "
                f"not {value!r}"
            )
        self.setCurrentText(self._text(parsed))
        self._set(parsed)

    @classmethod
    def _parse(cls, value: int | str | None) -> int | str | None:
        if value is None or value == 0:
            return 0
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("off", "auto"):
                return 0 if word == "off" else "auto"
            if not word.isdigit():
                return None
            value = int(word)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if cls.LOW <= value <= cls.HIGH else None

    @staticmethod
    def _text(value: int | str) -> str:
        return "off" if value == 0 else str(value)

    def _set(self, value: int | str) -> None:
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def _on_text(self, text: str) -> None:
        parsed = self._parse(text)
        if parsed is not None:
            self._set(parsed)

    def _restore_text(self) -> None:
        if self._parse(self.currentText()) != self._value:
            self.setCurrentText(self._text(self._value))
