"""``napari-fbrs segment --clicks FILE``: many objects from a file of clicks, on a 2D image
or a z-stack, into one label image, optionally carried through the stack (``--propagate``).

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


def as_image_or_stack(image: np.ndarray, source: str) -> tuple[np.ndarray, bool, int]:
    """``(image, rgb, number of slices)`` for ``--clicks``: one 2D image as
    :func:`~napari_fbrs.cli.segment.as_2d_image` takes it, or a stack ``(Z, H, W)`` grey
    or ``(Z, H, W, 3|4)``."""
    if image.ndim == 4 and image.shape[-1] in (3, 4):
        return image, True, int(image.shape[0])
    if image.ndim == 3 and image.shape[-1] not in (1, 2, 3, 4):
        return image, False, int(image.shape[0])
    if image.ndim > 3:
        raise UserError(
            f"{source} has shape {image.shape}: segment --clicks takes a 2D image or a "
            "stack (Z, H, W) or (Z, H, W, 3|4); for other layouts use the napari widget"
        )
    image = as_2d_image(image, source)
    return image, image.ndim == 3, 0


def _propagates(obj: Any, args: argparse.Namespace) -> bool:
    return bool(args.propagate or obj.propagate)


def check_propagation_options(args: argparse.Namespace, objects: list = ()) -> None:
    """The stop rules go with ``--propagate`` (or objects of the clicks file that
    propagate) and lie in their ranges; sets the default ``--stop-iou``."""
    rules = args.stop_iou is not None or args.convex or args.min_contrast is not None
    if not (args.propagate or any(obj.propagate for obj in objects)):
        if rules:
            raise UserError(
                "--stop-iou, --convex and --min-contrast go with --propagate (or a propagate "
                "column in the clicks file)"
            )
        return
    if args.stop_iou is None:
        args.stop_iou = 0.5
    if not 0.0 < args.stop_iou < 1.0:
        raise UserError(f"--stop-iou must lie strictly between 0 and 1, got {args.stop_iou:g}")
    if args.min_contrast is not None and not 0.0 < args.min_contrast <= 1.0:
        raise UserError(f"--min-contrast must lie in (0, 1], got {args.min_contrast:g}")


def check_slices(objects: list, stack: int, args: argparse.Namespace, source: str) -> None:
    """The clicks' slices fit the image, and ``--propagate`` starts each object on one."""
    has_z = any(c[0] is not None for obj in objects for c in obj.clicks)
    if stack and not has_z:
        raise UserError(
            f"the image is a stack of {stack} slices: give the slice of each click in a z "
            f"column of {source}"
        )
    if not stack:
        if has_z:
            raise UserError(f"the image is 2D: {source} must have no z column")
        if any(_propagates(obj, args) for obj in objects):
            what = "--propagate" if args.propagate else f"the propagate column of {source}"
            raise UserError(f"{what} needs a stack (Z, H, W)")
        return
    for obj in objects:
        for z, y, x, _ in obj.clicks:
            if z >= stack:
                raise UserError(
                    f"object {obj.name}: click ({z}, {y:g}, {x:g}) is on slice {z}; the stack "
                    f"has slices 0..{stack - 1}"
                )
        if _propagates(obj, args) and len({c[0] for c in obj.clicks}) > 1:
            raise UserError(
                f"object {obj.name} has clicks on several slices; an object that propagates "
                "is clicked on one slice"
            )


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
    from napari_fbrs.core.session.propagation import CONVEX_REGROWTH

    ids = _label_ids(objects)
    shape = image.shape[:-1] if rgb else image.shape
    # one window for the whole stack, as a napari layer has (2D: the predictor's own)
    limits = intensity_window(image) if len(shape) == 3 else None
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
        for z, y, x, positive in obj.clicks:
            by_slice.setdefault(() if z is None else (z,), []).append((y, x, positive))
        pixels, notes, reached = 0, [], 0
        for key, clicks in by_slice.items():
            for y, x, positive in clicks:
                session.add_click(y, x, positive, key=key)
            session.predict(key)
            try:
                if _propagates(obj, args):
                    request = session.propagation_request(
                        key,
                        axis=0,
                        direction=0,
                        stop_iou=args.stop_iou,
                        regrowth=CONVEX_REGROWTH if args.convex else None,
                        min_contrast=args.min_contrast,
                    )
                    volume = session.compute_propagation(request)
                    reached = int(np.count_nonzero(volume.any(axis=(1, 2))))
                    info = session.commit_propagation(request, volume, label=label)
                else:
                    info = session.commit(key, label=label)
            except ValueError as exc:  # an empty mask, or one entirely on earlier objects
                session.reset_clicks(key)
                where = f" on slice {key[0]}" if key else ""
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
