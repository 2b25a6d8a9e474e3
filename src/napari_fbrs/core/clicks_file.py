"""Reading a file of clicks for many objects (``napari-fbrs segment --clicks FILE``, the
panel's *Load objects...*; :mod:`napari_fbrs.core.clicks_table` writes it).

The file is CSV with a header row; column names are matched without regard to case:

* ``y`` and ``x`` (or napari's ``axis-0`` and ``axis-1``, as *File > Save Selected Layers*
  writes a Points layer): the click in pixels, row and column;
* the slice, for a stack, integer indices: ``z`` along one axis, or ``axis-0``, ``axis-1``,
  ... along several (``(t, z, y, x)``: ``axis-0`` is t, ``axis-1`` is z). A file of napari
  points has only ``axis-<i>`` columns: the last two are y and x, the ones before them the
  slice (3D points: ``axis-0`` is z);
* ``object`` (optional): the object each click belongs to; the clicks of an object are
  applied in file order, and the objects are segmented in the order they first appear.
  Without it, every row is an object of its own (one positive click per object, as seed
  points from a detector are);
* ``positive`` (optional): ``true``/``false``, ``1``/``0``, ``yes``/``no``; default true;
* ``propagate`` (optional, yes/no like ``positive``): carry the object through the stack
  from its clicks' slice, as ``--propagate`` does for every object (the widget's *Save
  objects* writes it for the objects it propagated), with that object's settings where
  the file gives them (the same on each of its rows; an empty cell takes the command
  line's option, whose defaults are the panel's): ``propagate_axis`` (the leading axis to
  walk; default the last, z of ``(t, z, y, x)``), ``direction`` (``both``, ``forward``,
  ``backward``), ``stop_iou``, ``regrowth``, ``min_contrast`` and ``stop_slices``
  (indices along the axis not to enter, separated by spaces).

Other columns (napari's ``index``, features) are ignored. Values may be separated by commas,
semicolons or tabs (the header row tells which).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from napari_fbrs.core.clicks_table import DIRECTION_NAMES
from napari_fbrs.core.propagation_settings import setting_problem

__all__ = ["ClicksFileError", "ObjectClicks", "PropagationSettings", "read_clicks_file"]


class ClicksFileError(ValueError):
    """A clicks file that cannot be read, or whose objects do not fit the image; the
    message names the file and, where it can, the line."""


_TRUE = {"true", "1", "yes", "y", "t", "positive", "+"}
_FALSE = {"false", "0", "no", "n", "f", "negative", "-"}
#: a clicks file larger than this is not a clicks file
MAX_BYTES = 64 * 2**20


@dataclass(frozen=True)
class PropagationSettings:
    """How one object of a clicks file propagates; ``None``: not given (the command line's
    option applies).

    Attributes
    ----------
    axis : int or None
        The leading axis to walk (an index among the slice columns).
    direction : int or None
        ``0`` both ways, ``+1`` forward, ``-1`` backward.
    stop_iou, regrowth, min_contrast : float or None
        The stop rules of :func:`napari_fbrs.propagate`.
    stop_slices : tuple of int or None
        Indices along the axis not to enter.
    """

    axis: int | None = None
    direction: int | None = None
    stop_iou: float | None = None
    regrowth: float | None = None
    min_contrast: float | None = None
    stop_slices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ObjectClicks:
    """The clicks of one object.

    Attributes
    ----------
    name : str
        The ``object`` value of its rows (its row number without that column).
    clicks : tuple of (tuple of int, float, float, bool)
        ``(slice, y, x, positive)``: the slice's indices along the leading axes (``()``
        without slice columns) and the click in pixels, in file order.
    propagate : bool
        A row of the object says ``propagate`` yes.
    settings : PropagationSettings
        The object's propagation settings given in the file.
    """

    name: str
    clicks: tuple[tuple[tuple[int, ...], float, float, bool], ...]
    propagate: bool = False
    settings: PropagationSettings = PropagationSettings()


#: a direction cell -> its value: the words the writer uses, and the numbers
_DIRECTIONS = {name: value for value, name in DIRECTION_NAMES.items()} | {
    "0": 0, "+1": 1, "1": 1, "-1": -1,
}  # fmt: skip
#: column of a propagation setting -> its field of PropagationSettings
_SETTING_FIELDS = {"propagate_axis": "axis", "direction": "direction", "stop_iou": "stop_iou",
                   "regrowth": "regrowth", "min_contrast": "min_contrast",
                   "stop_slices": "stop_slices"}  # fmt: skip


def _column(header: list[str], *names: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _delimiter(text: str) -> str:
    """The header's separator: comma, or semicolon or tab (spreadsheets in many locales)."""
    header = text.lstrip().split("\n", 1)[0]
    counts = {sep: header.count(sep) for sep in ",;\t"}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def read_clicks_file(path: Path) -> list[ObjectClicks]:
    """The objects of a clicks file (see the module docstring), in file order.

    Raises
    ------
    ClicksFileError
        A missing, unreadable or empty file, no ``y``/``x`` columns, a value that is not a
        number or a yes/no, a slice that is not an index, a propagation setting out of range
        or different on two rows of one object, an object without a positive click; the
        message names the line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClicksFileError(f"clicks file not found: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise ClicksFileError(f"{path} is too large for a clicks file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            text = f.read()
        rows = list(csv.reader(text.splitlines(), delimiter=_delimiter(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClicksFileError(f"cannot read clicks file {path}: {exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise ClicksFileError(
            f"{path} holds no clicks: a header row (y,x[,object][,positive]) and one row per click"
        )
    header = rows[0]
    slice_cols, y_col, x_col = _coordinate_columns(header, path)
    object_col = _column(header, "object")
    positive_col = _column(header, "positive")
    propagate_col = _column(header, "propagate")
    setting_cols = {name: _column(header, name) for name in _SETTING_FIELDS}
    objects: dict[str, list[tuple[tuple[int, ...], float, float, bool]]] = {}
    settings: dict[str, dict[str, object]] = {}
    propagated: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):

        def cell(col: int, line: int = line, row: list[str] = row) -> str:
            if col >= len(row):
                raise ClicksFileError(f"{path}, line {line}: the row has only {len(row)} values")
            return row[col].strip()

        try:
            y, x = float(cell(y_col)), float(cell(x_col))
        except ValueError:
            raise ClicksFileError(
                f"{path}, line {line}: y and x must be numbers, got {cell(y_col)!r}, "
                f"{cell(x_col)!r}"
            ) from None
        if not (math.isfinite(y) and math.isfinite(x)):
            raise ClicksFileError(f"{path}, line {line}: y and x must be finite numbers")
        where = tuple(_index(cell(col), header[col], path, line) for col in slice_cols)
        positive = positive_col is None or _yes(cell(positive_col), "positive", path, line)
        name = cell(object_col) if object_col is not None else f"line {line}"
        if not name:
            raise ClicksFileError(f"{path}, line {line}: the object is empty")
        objects.setdefault(name, []).append((where, y, x, positive))
        if propagate_col is not None and _yes(cell(propagate_col), "propagate", path, line):
            propagated.add(name)
        known = settings.setdefault(name, {})
        for column, col in setting_cols.items():
            if col is None or col >= len(row) or not cell(col):
                continue  # not given (a short row leaves its trailing settings empty)
            value = _setting(column, cell(col), path, line)
            if known.setdefault(_SETTING_FIELDS[column], value) != value:
                raise ClicksFileError(
                    f"{path}, line {line}: object {name!r} has {column} "
                    f"{known[_SETTING_FIELDS[column]]!r} on an earlier row and {cell(col)!r} here"
                )
    out = []
    for name, clicks in objects.items():
        if not any(c[3] for c in clicks):
            where = f"object {name!r}" if object_col is not None else name
            raise ClicksFileError(
                f"{path}: {where} has no positive click; give each object at least one click on it"
            )
        settings_given = PropagationSettings(**settings[name])  # type: ignore[arg-type]
        out.append(ObjectClicks(name, tuple(clicks), name in propagated, settings_given))
    return out


def _yes(value: str, column: str, path: Path, line: int) -> bool:
    value = value.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ClicksFileError(f"{path}, line {line}: {column} must be true or false, got {value!r}")


def _coordinate_columns(header: list[str], path: Path) -> tuple[list[int], int, int]:
    """``(slice columns, y column, x column)`` of ``header`` (see the module docstring)."""
    axes = []
    while _column(header, f"axis-{len(axes)}") is not None:
        axes.append(_column(header, f"axis-{len(axes)}"))
    y_col, x_col = _column(header, "y"), _column(header, "x")
    if y_col is not None and x_col is not None:
        z_col = _column(header, "z")
        return ([z_col] if z_col is not None else axes), y_col, x_col
    if len(axes) >= 2:  # napari's points: the last two axes are y and x
        return axes[:-2], axes[-2], axes[-1]
    raise ClicksFileError(
        f"{path}: the header {','.join(header)!r} has no y and x columns (or axis-0 and "
        "axis-1, as napari saves points)"
    )


def _index(value: str, column: str, path: Path, line: int) -> int:
    """A slice index (0, 1, ...) from a cell of ``column``."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (math.isfinite(number) and number >= 0 and number == int(number)):
        raise ClicksFileError(
            f"{path}, line {line}: {column.strip()} must be a slice index (0, 1, ...), "
            f"got {value!r}"
        )
    return int(number)


def _setting(column: str, value: str, path: Path, line: int) -> object:
    """The value of a propagation setting's cell (non-empty), checked."""
    where = f"{path}, line {line}: {column}"
    if column == "propagate_axis":
        return _index(value, column, path, line)
    if column == "direction":
        if value.lower() not in _DIRECTIONS:
            raise ClicksFileError(f"{where} must be both, forward or backward, got {value!r}")
        return _DIRECTIONS[value.lower()]
    if column == "stop_slices":
        return tuple(
            sorted({_index(v, column, path, line) for v in value.replace(";", " ").split()})
        )
    try:
        number = float(value)
    except ValueError:
        raise ClicksFileError(f"{where} must be a number, got {value!r}") from None
    problem = setting_problem(column, number)
    if problem is not None:
        raise ClicksFileError(f"{where} {problem}, got {value!r}")
    return number
