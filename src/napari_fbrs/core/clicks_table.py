"""Writing the clicks that made a session's objects as a CSV file, the format that
``napari-fbrs segment --clicks`` and the panel's *Load objects...* read
(:mod:`napari_fbrs.core.clicks_file`), so that the objects can be made again, headlessly,
on other images or with another model."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from napari_fbrs.core.atomic import atomic_write
from napari_fbrs.core.session.types import CommittedObject

__all__ = [
    "DIRECTION_NAMES",
    "PROPAGATION_COLUMNS",
    "clicks_table_rows",
    "slice_columns",
    "write_clicks_table",
]


#: the per-object propagation settings written for a propagated object (empty cells for
#: one whose settings are not known, e.g. brought back by a restored autosave)
PROPAGATION_COLUMNS = ("direction", "stop_iou", "regrowth", "min_contrast", "stop_slices")
DIRECTION_NAMES = {0: "both", 1: "forward", -1: "backward"}


def slice_columns(depth: int) -> list[str]:
    """The names of the slice columns of a stack with ``depth`` leading axes: none for a
    2D image, ``z`` for one axis, ``axis-0`` ... ``axis-<depth-1>`` for more (napari's
    names of a Points layer's leading axes)."""
    if depth <= 1:
        return ["z"] * depth
    return [f"axis-{i}" for i in range(depth)]


def _decimal(value: float) -> str:
    """``value`` written so that reading it back gives the same float (Python's shortest
    round-trip form), without a trailing ``.0``: ``215.3374``, ``20``, ``0.5``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _number(value: object) -> str:
    return "" if value is None else _decimal(float(value))  # type: ignore[arg-type]


def _propagation_cells(obj: CommittedObject, depth: int) -> list[str]:
    """``propagate``, then (when ``depth > 1``) ``propagate_axis``, then
    :data:`PROPAGATION_COLUMNS`; settings empty when unknown or not propagated."""
    settings = obj.propagation if obj.propagated else None
    cells = ["true" if obj.propagated else "false"]
    if settings is None:
        return cells + [""] * ((depth > 1) + len(PROPAGATION_COLUMNS))
    if depth > 1:
        cells.append(str(int(settings["axis"])))
    stops = settings.get("stop_slices") or ()
    return cells + [
        DIRECTION_NAMES[int(settings.get("direction", 0))],
        _number(settings.get("stop_iou")),
        _number(settings.get("regrowth")),
        _number(settings.get("min_contrast")),
        " ".join(str(int(i)) for i in stops),
    ]


def clicks_table_rows(objects: Sequence[CommittedObject]) -> list[list[str]]:
    """The rows of the clicks file of ``objects``, header first.

    Columns: ``object`` (the id); the slice, for a stack: ``z`` along one axis, or
    ``axis-0``, ``axis-1``, ... along several (``(t, z, y, x)``: ``axis-0`` is t); ``y``,
    ``x`` (pixels, row and column); ``positive`` (``true``/``false``). When some object
    was carried through the stack, also ``propagate`` (``true`` for those objects; their
    rows are the clicks on the slice they started from), ``propagate_axis`` (the leading
    axis walked; only with several slice axes) and the settings of each propagation:
    ``direction`` (``both``, ``forward`` or ``backward``), ``stop_iou``, ``regrowth`` and
    ``min_contrast`` (empty: off), ``stop_slices`` (indices along the axis not entered,
    separated by spaces). These are empty for objects whose settings are not known.

    Parameters
    ----------
    objects : sequence of CommittedObject
        Typically :meth:`SegmentationSession.reproducible_objects`; all with slice keys of
        one length (0 for a 2D image).

    Raises
    ------
    ValueError
        Objects of a 2D image and of a stack together (their keys differ in length).
    """
    depths = {len(obj.key) for obj in objects}
    if len(depths) > 1:
        raise ValueError("objects of a 2D image and of a stack cannot share a clicks file")
    depth = depths.pop() if depths else 0
    propagate = any(obj.propagated for obj in objects)
    header = ["object", *slice_columns(depth), "y", "x", "positive"]
    if propagate:
        header += ["propagate"] + (["propagate_axis"] if depth > 1 else [])
        header += list(PROPAGATION_COLUMNS)
    rows = [header]
    for obj in objects:
        where = [str(int(i)) for i in obj.key]
        extra = _propagation_cells(obj, depth) if propagate else []
        for click in obj.clicks:
            positive = "true" if click.positive else "false"
            rows.append(
                [
                    str(int(obj.label)),
                    *where,
                    _decimal(click.y),
                    _decimal(click.x),
                    positive,
                    *extra,
                ]
            )
    return rows


def write_clicks_table(path: str | os.PathLike, objects: Sequence[CommittedObject]) -> Path:
    """Write the clicks of ``objects`` to the CSV file ``path`` (atomically).

    Parameters
    ----------
    path : str or os.PathLike
        The file; written whole or not at all.
    objects : sequence of CommittedObject
        See :func:`clicks_table_rows`.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        See :func:`clicks_table_rows`; nothing is written.
    OSError
        The file cannot be written; a file already there is left as it was.
    """
    path = Path(path).expanduser()
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(clicks_table_rows(objects))
    data = text.getvalue().encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
    return path
