"""``napari-fbrs segment --clicks FILE``: many objects from a file of clicks, on a 2D image
or a stack (z, t, or several such axes), into one label image, optionally carried through
the stack (``--propagate``, or the file's ``propagate`` column with each object's settings).

The objects go through a :class:`~napari_fbrs.core.session.SegmentationSession` and
:func:`napari_fbrs.core.clicks_replay.replay_objects`, as the panel's *Load objects...*
does. The command line itself, the image reading and the one-object path are in
:mod:`napari_fbrs.cli.segment`; the file format in :mod:`napari_fbrs.core.clicks_file`.
"""

from __future__ import annotations

import argparse
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


def check_slices(
    objects: list, stack: tuple[int, ...], args: argparse.Namespace, source: str
) -> None:
    """The clicks' slices fit the image (:func:`napari_fbrs.core.clicks_replay.check_objects`)."""
    from napari_fbrs.core.clicks_replay import check_objects

    if not stack and args.propagate:
        raise UserError("--propagate needs a stack (Z, H, W)")
    try:
        check_objects(objects, stack, source, propagate_all=args.propagate)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _propagation(obj: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``propagation_request`` for ``obj``: an option given on the
    command line applies to every object, else the file's setting, else the panel's
    default."""
    from napari_fbrs.core.clicks_replay import propagation_options
    from napari_fbrs.core.session.propagation import CONVEX_REGROWTH

    return propagation_options(
        obj,
        stop_iou=args.stop_iou,
        regrowth=CONVEX_REGROWTH if args.convex else None,
        min_contrast=args.min_contrast,
    )


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
    from napari_fbrs.core.clicks_replay import object_ids
    from napari_fbrs.core.image import intensity_window
    from napari_fbrs.core.labels_file import save_labels
    from napari_fbrs.core.session import SegmentationSession, promoted_dtype

    ids = object_ids(objects)
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
    from napari_fbrs.core.clicks_replay import replay_objects

    def report(outcome: Any, total: int) -> None:
        n = outcome.n_clicks
        slices = f" on {outcome.n_slices} slices" if outcome.n_slices else ""
        print(
            f"object {outcome.name} -> id {outcome.label}: {n} click{'s' if n != 1 else ''} "
            f"in {outcome.seconds:.2f} s, {outcome.n_pixels} px{slices}"
            + "".join(f"; {note}" for note in outcome.notes)
        )

    outcomes = replay_objects(
        session,
        objects,
        ids,
        propagate_all=args.propagate,
        options=lambda obj: _propagation(obj, args),
        progress=report,
    )
    written = sum(o.n_pixels > 0 for o in outcomes)
    mean = sum(o.seconds for o in outcomes) / max(1, len(outcomes))
    print(f"{written} of {len(objects)} objects written; {mean:.2f} s per object on average")
    labels = session.labels
    try:
        save_labels(labels, out)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot write {out}: {exc}") from None
    size = "x".join(str(n) for n in labels.shape)
    print(f"wrote {out} ({size} {labels.dtype} labels, 0 = background)")
    return 0
