"""Reading a file of clicks for many objects (``napari-fbrs segment --clicks FILE``).

The file is CSV with a header row; column names are matched without regard to case:

* ``y`` and ``x`` (or napari's ``axis-0`` and ``axis-1``, as *File > Save Selected Layers*
  writes a Points layer): the click in pixels, row and column;
* ``z`` (for a stack; napari's 3D points: ``axis-0``, ``axis-1``, ``axis-2`` are z, y, x):
  the slice, an integer index;
* ``object`` (optional): the object each click belongs to; the clicks of an object are
  applied in file order, and the objects are segmented in the order they first appear.
  Without it, every row is an object of its own (one positive click per object, as seed
  points from a detector are);
* ``positive`` (optional): ``true``/``false``, ``1``/``0``, ``yes``/``no``; default true;
* ``propagate`` (optional, yes/no like ``positive``): carry the object through the stack
  from its clicks' slice, as ``--propagate`` does for every object (the widget's *Save
  objects* writes it for the objects it propagated).

Other columns (napari's ``index``, features) are ignored. Values may be separated by commas,
semicolons or tabs (the header row tells which).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from napari_fbrs.cli import UserError

__all__ = ["ObjectClicks", "read_clicks_file"]

_TRUE = {"true", "1", "yes", "y", "t", "positive", "+"}
_FALSE = {"false", "0", "no", "n", "f", "negative", "-"}
#: a clicks file larger than this is not a clicks file
MAX_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ObjectClicks:
    """The clicks of one object.

    Attributes
    ----------
    name : str
        The ``object`` value of its rows (its row number without that column).
    clicks : tuple of (int or None, float, float, bool)
        ``(z, y, x, positive)``: the slice (``None`` without a ``z`` column) and the click
        in pixels, in file order.
    propagate : bool
        A row of the object says ``propagate`` yes.
    """

    name: str
    clicks: tuple[tuple[int | None, float, float, bool], ...]
    propagate: bool = False


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
    UserError
        A missing, unreadable or empty file, no ``y``/``x`` columns, a value that is not a
        number or a yes/no, an object without a positive click; the message names the line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"clicks file not found: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise UserError(f"{path} is too large for a clicks file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            text = f.read()
        rows = list(csv.reader(text.splitlines(), delimiter=_delimiter(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read clicks file {path}: {exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise UserError(f"{path} holds no clicks: a header row (y,x[,object][,positive]) "
                        "and one row per click")  # fmt: skip
    header = rows[0]
    if _column(header, "axis-2") is not None:  # napari's 3D points: z, y, x
        z_col, y_col, x_col = (_column(header, f"axis-{i}") for i in range(3))
    else:
        z_col = _column(header, "z")
        y_col = _column(header, "y", "axis-0")
        x_col = _column(header, "x", "axis-1")
    if y_col is None or x_col is None:
        raise UserError(
            f"{path}: the header {','.join(header)!r} has no y and x columns (or axis-0 and "
            "axis-1, as napari saves points)"
        )
    object_col = _column(header, "object")
    positive_col = _column(header, "positive")
    propagate_col = _column(header, "propagate")
    objects: dict[str, list[tuple[int | None, float, float, bool]]] = {}
    propagated: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):

        def cell(col: int, line: int = line, row: list[str] = row) -> str:
            if col >= len(row):
                raise UserError(f"{path}, line {line}: the row has only {len(row)} values")
            return row[col].strip()

        try:
            y, x = float(cell(y_col)), float(cell(x_col))
        except ValueError:
            raise UserError(
                f"{path}, line {line}: y and x must be numbers, got {cell(y_col)!r}, "
                f"{cell(x_col)!r}"
            ) from None
        if not (math.isfinite(y) and math.isfinite(x)):
            raise UserError(f"{path}, line {line}: y and x must be finite numbers")
        z = None
        if z_col is not None:
            try:
                z_value = float(cell(z_col))
            except ValueError:
                z_value = -1.0
            if not (math.isfinite(z_value) and z_value >= 0 and z_value == int(z_value)):
                raise UserError(
                    f"{path}, line {line}: z must be a slice index (0, 1, ...), got {cell(z_col)!r}"
                )
            z = int(z_value)
        positive = positive_col is None or _yes(cell(positive_col), "positive", path, line)
        name = cell(object_col) if object_col is not None else f"line {line}"
        if not name:
            raise UserError(f"{path}, line {line}: the object is empty")
        objects.setdefault(name, []).append((z, y, x, positive))
        if propagate_col is not None and _yes(cell(propagate_col), "propagate", path, line):
            propagated.add(name)
    out = []
    for name, clicks in objects.items():
        if not any(c[3] for c in clicks):
            where = f"object {name!r}" if object_col is not None else name
            raise UserError(
                f"{path}: {where} has no positive click; give each object at least one click on it"
            )
        out.append(ObjectClicks(name, tuple(clicks), name in propagated))
    return out


def _yes(value: str, column: str, path: Path, line: int) -> bool:
    value = value.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UserError(f"{path}, line {line}: {column} must be true or false, got {value!r}")
