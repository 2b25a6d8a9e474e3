"""``napari-fbrs segment --clicks FILE``: many objects from a file of clicks, on a 2D image
or a stack (z, t, or several such axes), into one label image, optionally carried through
the stack (``--propagate``, or the file's ``propagate`` column with each object's settings).

The objects go through a :class:`~napari_fbrs.core.session.SegmentationSession`, as in the
widget. The command line itself, the image reading and the one-object path are in
:mod:`napari_fbrs.cli.segment`; the file format in :mod:`napari_fbrs.cli.clicks_file`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_fbrs.cli import UserError
from napari_fbrs.cli.segment import SAMPLE_PREFIX, as_2d_image, read_image
from napari_fbrs.core.propagation_settings import setting_problem

__all__ = [
    "as_image_or_stack",
    "check_propagation_options",
    "check_slices",
    "read_image_or_stack",
    "segment_objects",
]


def read_image_or_stack(spec: str) -> np.ndarray:
    """The image file or sample ``spec``, as :func:`~napari_fbrs.cli.segment.read_image`
    reads it, except that a TIFF of 3 or 4 planes is a stack unless the file says they are
    colours (its samples axis), where ``read_image`` must guess."""
    path = Path(str(spec)).expanduser()
    if str(spec).startswith(SAMPLE_PREFIX) or path.suffix.lower() not in (".tif", ".tiff"):
        return read_image(spec)
    if not path.is_file():
        raise UserError(f"image file not found: {path}")
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, data = series.axes, series.asarray()
    except Exception as exc:  # every reader failure means the same thing to the user
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read image {path}: {detail}") from None
    if "S" in axes:  # colour samples: last, as the rest of napari-fbrs has them
        data = np.moveaxis(data, axes.index("S"), -1)
    return np.squeeze(data)


def as_image_or_stack(image: np.ndarray, source: str) -> tuple[np.ndarray, bool, tuple[int, ...]]:
    """``(image, rgb, stack shape)`` for ``--clicks``: one 2D image as
    :func:`~napari_fbrs.cli.segment.as_2d_image` takes it (stack shape ``()``), or a stack
    ``(..., H, W)`` grey or ``(..., H, W, 3|4)`` colour with one or more leading axes
    (``(Z, H, W)``, ``(T, Z, H, W)``, ...; a 4D array whose last axis has 3 or 4 entries
    is a colour z-stack)."""
    if image.ndim >= 4 and image.shape[-1] in (3, 4):
        return image, True, tuple(int(n) for n in image.shape[:-3])
    if image.ndim >= 4 and image.shape[-1] in (1, 2):  # channels (grey + alpha), not columns
        raise UserError(
            f"{source} has shape {image.shape}: segment --clicks takes a 2D image or a stack "
            "(..., H, W) grey or (..., H, W, 3|4) colour; for other layouts use the napari "
            "widget"
        )
    if image.ndim >= 4 or (image.ndim == 3 and image.shape[-1] not in (1, 2, 3, 4)):
        return image, False, tuple(int(n) for n in image.shape[:-2])
    image = as_2d_image(image, source)
    return image, image.ndim == 3, ()


def _propagates(obj: Any, args: argparse.Namespace) -> bool:
    return bool(args.propagate or obj.propagate)


def check_propagation_options(args: argparse.Namespace, objects: list = ()) -> None:
    """The stop rules go with ``--propagate`` (or objects of the clicks file that
    propagate) and lie in their ranges."""
    rules = args.stop_iou is not None or args.convex or args.min_contrast is not None
    if not (args.propagate or any(obj.propagate for obj in objects)):
        if rules:
            raise UserError(
                "--stop-iou, --convex and --min-contrast go with --propagate (or a propagate "
                "column in the clicks file)"
            )
        return
    for option, name, value in (
        ("--stop-iou", "stop_iou", args.stop_iou),
        ("--min-contrast", "min_contrast", args.min_contrast),
    ):
        problem = None if value is None else setting_problem(name, value)
        if problem is not None:
            raise UserError(f"{option} {problem}, got {value:g}")


def _slices_text(stack: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in stack)


def check_slices(
    objects: list, stack: tuple[int, ...], args: argparse.Namespace, source: str
) -> None:
    """The clicks' slices fit the image (one index per leading axis, in range), and an
    object that propagates is clicked on one slice and walks a slice axis."""
    depths = {len(c[0]) for obj in objects for c in obj.clicks}
    if not stack:
        if depths != {0}:
            raise UserError(f"the image is 2D: {source} must have no slice (z) column")
        if any(_propagates(obj, args) for obj in objects):
            what = "--propagate" if args.propagate else f"the propagate column of {source}"
            raise UserError(f"{what} needs a stack (Z, H, W)")
        return
    if depths != {len(stack)}:
        if len(stack) == 1:
            wanted = "a z column"
        else:
            names = ", ".join(f"axis-{i}" for i in range(len(stack)))
            wanted = f"columns {names}"
        raise UserError(
            f"the image is a stack of {_slices_text(stack)} slices: give the slice of each "
            f"click in {wanted} of {source}"
        )
    for obj in objects:
        for where, y, x, _ in obj.clicks:
            if any(i >= n for i, n in zip(where, stack, strict=True)):
                at = ", ".join(str(i) for i in where)
                ranges = ", ".join(f"0..{n - 1}" for n in stack)
                raise UserError(
                    f"object {obj.name}: click ({at}, {y:g}, {x:g}) is on slice {at}; the "
                    f"stack has slices {ranges}"
                )
        if not _propagates(obj, args):
            continue
        if len({c[0] for c in obj.clicks}) > 1:
            raise UserError(
                f"object {obj.name} has clicks on several slices; an object that propagates "
                "is clicked on one slice"
            )
        axis = obj.settings.axis
        if axis is not None and axis >= len(stack):
            raise UserError(
                f"object {obj.name}: propagate_axis {axis} is not a slice axis; the stack has "
                f"{len(stack)} (0..{len(stack) - 1})"
            )


def _propagation(obj: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``propagation_request`` for ``obj``: an option given on the
    command line applies to every object, else the file's setting, else the panel's
    default."""
    from napari_fbrs.core.session.propagation import CONVEX_REGROWTH

    given = obj.settings
    return {
        "axis": given.axis,  # None: the last slice axis, as in the panel
        "direction": 0 if given.direction is None else given.direction,
        "stop_iou": next(v for v in (args.stop_iou, given.stop_iou, 0.5) if v is not None),
        "stop_slices": given.stop_slices or (),
        "regrowth": CONVEX_REGROWTH if args.convex else given.regrowth,
        "min_contrast": args.min_contrast if args.min_contrast is not None else given.min_contrast,
    }


def _label_ids(objects: list) -> list[int]:
    """The objects' ids: their ``object`` values when these are all distinct positive
    integers, else 1, 2, ... in file order."""
    try:
        ids = [int(obj.name) for obj in objects]
    except ValueError:
        ids = []
    named = zip(ids, objects, strict=False)  # ids is empty when a name is not a number
    if ids and all(i > 0 and str(i) == obj.name.strip() for i, obj in named):
        return ids
    return list(range(1, len(objects) + 1))


def segment_objects(
    make_predictor: Any,
    objects: list,
    image: np.ndarray,
    rgb: bool,
    out: Path,
    args: argparse.Namespace,
) -> int:
    """Segment each object of a clicks file and write one label image (``--clicks``).

    The objects go through a :class:`~napari_fbrs.core.session.SegmentationSession`, as
    in the widget: each is written only over background (pixels an earlier object holds
    stay its own), on every slice it has clicks on, or, with ``--propagate`` (or its
    ``propagate`` column), on every slice its propagation reaches.
    """
    from napari_fbrs.core.image import intensity_window
    from napari_fbrs.core.labels_file import save_labels
    from napari_fbrs.core.session import SegmentationSession, promoted_dtype

    ids = _label_ids(objects)
    shape = image.shape[:-1] if rgb else image.shape
    # one window for the whole stack, as a napari layer has (2D: the predictor's own)
    limits = intensity_window(image) if len(shape) >= 3 else None
    session = SegmentationSession(
        image,
        rgb=rgb,
        labels=np.zeros(shape, dtype=promoted_dtype(np.uint8, max(ids))),
        predictor_factory=make_predictor,
        contrast_limits=limits,
        prob_thresh=args.thresh,
        max_history=1,  # no undo here: keep no old commits in memory
    )
    seconds = []
    written = 0
    for label, obj in zip(ids, objects, strict=True):
        start = time.perf_counter()
        by_slice: dict[tuple[int, ...], list[tuple[float, float, bool]]] = {}
        for where, y, x, positive in obj.clicks:
            by_slice.setdefault(where, []).append((y, x, positive))
        pixels, notes, reached = 0, [], 0
        for key, clicks in by_slice.items():
            for y, x, positive in clicks:
                session.add_click(y, x, positive, key=key)
            session.predict(key)
            try:
                if _propagates(obj, args):
                    request = session.propagation_request(key, **_propagation(obj, args))
                    volume = session.compute_propagation(request)
                    reached = int(np.count_nonzero(volume.any(axis=(1, 2))))
                    info = session.commit_propagation(request, volume, label=label)
                else:
                    info = session.commit(key, label=label)
            except ValueError as exc:  # an empty mask, or one entirely on earlier objects
                session.reset_clicks(key)
                where = f" on slice {', '.join(str(i) for i in key)}" if key else ""
                notes.append(f"not written{where}: {exc}")
                continue
            pixels += info.n_pixels
        seconds.append(time.perf_counter() - start)
        written += pixels > 0
        n = len(obj.clicks)
        slices = f" on {reached} slices" if _propagates(obj, args) and pixels else ""
        print(
            f"object {obj.name} -> id {label}: {n} click{'s' if n != 1 else ''} in "
            f"{seconds[-1]:.2f} s, {pixels} px{slices}" + "".join(f"; {note}" for note in notes)
        )
    print(
        f"{written} of {len(objects)} objects written; {sum(seconds) / len(seconds):.2f} s "
        "per object on average"
    )
    labels = session.labels
    try:
        save_labels(labels, out)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot write {out}: {exc}") from None
    size = "x".join(str(n) for n in labels.shape)
    print(f"wrote {out} ({size} {labels.dtype} labels, 0 = background)")
    return 0
