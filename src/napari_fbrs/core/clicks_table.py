"""Writing the clicks that made a session's objects as a CSV file, the format that
``napari-fbrs segment --clicks`` reads (:mod:`napari_fbrs.cli.clicks_file`), so that the
objects can be made again headlessly, on other images or with another model."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from napari_fbrs.core.atomic import atomic_write
from napari_fbrs.core.session.types import CommittedObject

__all__ = ["clicks_table_rows", "write_clicks_table"]


def clicks_table_rows(objects: Sequence[CommittedObject]) -> list[list[str]]:
    """The rows of the clicks file of ``objects``, header first.

    Columns: ``object`` (the id), ``z`` (the slice; only for a z-stack), ``y``, ``x``
    (pixels, row and column), ``positive`` (``true``/``false``), and ``propagate``
    (``true`` for an object carried through the stack from its slice's clicks; only when
    some object was).

    Parameters
    ----------
    objects : sequence of CommittedObject
        Typically :meth:`SegmentationSession.reproducible_objects`; one slice key each, of
        length 0 (2D image) or 1 (stack along one axis).

    Raises
    ------
    ValueError
        An object of a stack with more than one slice axis (the file has one ``z``).
    """
    depth = {len(obj.key) for obj in objects}
    if depth - {0, 1}:
        raise ValueError("a clicks file holds clicks on a 2D image or a z-stack (Z, H, W)")
    if depth == {0, 1}:
        raise ValueError("objects of a 2D image and of a stack cannot share a clicks file")
    stack = depth == {1}
    propagate = any(obj.propagated for obj in objects)
    header = ["object"] + (["z"] if stack else []) + ["y", "x", "positive"]
    rows = [header + (["propagate"] if propagate else [])]
    for obj in objects:
        for click in obj.clicks:
            row = [str(int(obj.label))] + ([str(int(obj.key[0]))] if stack else [])
            row += [f"{click.y:g}", f"{click.x:g}", "true" if click.positive else "false"]
            if propagate:
                row.append("true" if obj.propagated else "false")
            rows.append(row)
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
