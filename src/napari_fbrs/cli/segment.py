"""``napari-fbrs segment``: segment one object in an image from clicks, without the GUI.

::

    napari-fbrs segment IMAGE --click Y,X [--click -Y,X ...] --out MASK.tif
        [--mode f-BRS-B] [--model NAME|PATH] [--device auto] [--gt MASK]

``IMAGE`` is a TIFF/PNG/JPEG/BMP file or ``sample:photo`` / ``sample:nuclei`` (the sample
images shipped in the package). A click is ``Y,X`` in pixels (row, column, as napari shows
them); a leading minus marks a negative (background) click. The clicks are applied in order
and the time of each is printed. The mask is written as uint8 0/255, to TIFF or to PNG by
the suffix of ``--out`` (its folder is created if needed).

``--clicks FILE.csv`` segments many objects, one after the other, from a file of clicks
(:mod:`napari_fbrs.core.clicks_file`), and writes a label image with one id per object
(:mod:`napari_fbrs.cli.segment_objects`).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_fbrs.cli import UserError, check_thresh, first_click_crop

__all__ = ["add_parser", "as_2d_image", "parse_click", "read_image", "run"]

SAMPLE_PREFIX = "sample:"
MASK_SUFFIXES = (".tif", ".tiff", ".png")
LABELS_SUFFIXES = (".tif", ".tiff")
#: ZoomIn's smallest crop side when --min-crop is not given: the widget's default (its
#: *min crop*), so that a clicks file saved from the panel replays as it was made there
DEFAULT_MIN_CROP = 200
_CLICK = re.compile(r"^\s*([-+]?)\s*(\d+(?:\.\d*)?)\s*,\s*(\d+(?:\.\d*)?)\s*$")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``segment`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``add_subparsers()`` object of the ``napari-fbrs`` parser.

    Returns
    -------
    argparse.ArgumentParser
        The ``segment`` parser.
    """
    from napari_fbrs.core.zoo import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "segment",
        help="segment objects from clicks and write a mask or labels",
        description=(
            "Segment one object in a 2D image from positive and negative clicks with f-BRS, "
            "print the time per click, and write the mask (uint8, 0/255); or, with --clicks, "
            "many objects of a 2D image or a stack (z, t, ...) into one label image."
        ),
    )
    # "-12,40" (a negative click) must be read as a value, not as an unknown option
    parser._negative_number_matcher = re.compile(r"^-\d")
    parser.add_argument(
        "image",
        metavar="IMAGE",
        help="image file (TIFF, PNG, JPEG, BMP), or sample:photo / sample:nuclei",
    )
    parser.add_argument(
        "--click",
        action="append",
        default=[],
        metavar="Y,X",
        help="a click at row Y, column X (pixels); -Y,X is a negative (background) click; "
        "repeat in order (--click=-Y,X also works)",
    )
    parser.add_argument(
        "--clicks",
        type=Path,
        metavar="FILE.csv",
        help="many objects: a CSV file of clicks with columns y, x and optionally object, "
        "positive and, for a stack, z (several slice axes: axis-0, axis-1, ...; napari's "
        "saved points: axis-0, ..., the last two being y and x); each object is segmented "
        "in turn and --out is a label image (TIFF), one id per object; the propagate "
        "columns the panel writes are followed",
    )
    parser.add_argument(
        "--propagate",
        action="store_true",
        help="with --clicks on a stack: carry each object from its clicked slice through "
        "the stack (both ways, along the last slice axis, unless the file says otherwise for "
        "the object) and write it on every slice reached",
    )
    parser.add_argument(
        "--stop-iou",
        type=float,
        default=None,
        metavar="F",
        help="--propagate stops where the object's IoU with the previous slice falls "
        "below this (default: the object's stop_iou in the clicks file, else 0.5; given here, "
        "it applies to every object)",
    )
    parser.add_argument(
        "--convex",
        action="store_true",
        help="--propagate stops where a shrinking object's area grows again (nuclei, "
        "cells: the walk entering a touching neighbour), for every object (without it: the "
        "object's regrowth in the clicks file, else off)",
    )
    parser.add_argument(
        "--min-contrast",
        type=float,
        default=None,
        metavar="F",
        help="--propagate stops where the object's brightness above the background falls "
        "below F times the start slice's (bright objects on a dark background), for every "
        "object (default: the object's min_contrast in the clicks file, else off)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="MASK",
        help="output mask file, .tif/.tiff or .png (uint8, 255 = object; the folder is "
        "created if needed); with --clicks, a label image (.tif/.tiff)",
    )
    parser.add_argument(
        "--mode",
        default="f-BRS-B",
        help="NoBRS, f-BRS-A, f-BRS-B (default), f-BRS-C, RGB-BRS or DistMap-BRS (any letter case)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|PATH",
        help=f"zoo name or checkpoint file (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument(
        "--gt",
        type=Path,
        metavar="MASK",
        help="ground-truth mask (non-zero = object) to report the IoU against",
    )
    parser.add_argument(
        "--thresh",
        type=float,
        default=0.49,
        help="probability threshold of the mask (default 0.49)",
    )
    parser.add_argument(
        "--no-flip", action="store_true", help="do not average with the horizontally flipped image"
    )
    parser.add_argument(
        "--no-zoom-in",
        action="store_true",
        help="always predict on the whole image (no Zoom-In crop)",
    )
    parser.add_argument(
        "--first-click-crop",
        default=None,
        metavar="N|auto|off",
        help="how the first click is predicted: auto (default) on the whole image, then "
        "again zoomed in if the object found is small; N: in an N x N crop around it; "
        "off: on the whole image, as the paper",
    )
    parser.add_argument(
        "--min-crop",
        type=int,
        default=None,
        metavar="N",
        help="ZoomIn's smallest crop side in image pixels (default 200, as the widget's "
        "ZoomIn min crop; smaller suits small objects, see the user guide)",
    )
    parser.add_argument(
        "--beyond-border",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let ZoomIn crops reach past the image border, the image mirrored there, so an "
        "object cut by the border stays centred (default, as in the widget); "
        "--no-beyond-border keeps crops inside the image, as the paper",
    )
    parser.add_argument(
        "--trim-overshoot",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="BRS corrections only as large as the clicks need: step back from the "
        "optimiser's last step to the shortest that still satisfies them (worth trying on "
        "small objects such as nuclei; default off, as the paper and the widget)",
    )
    parser.set_defaults(func=run)
    return parser


def parse_click(text: str) -> tuple[float, float, bool]:
    """Parse ``"Y,X"`` or ``"+Y,X"`` (positive) or ``"-Y,X"`` (negative).

    Parameters
    ----------
    text : str
        The ``--click`` value: row and column in pixels, decimals allowed, blanks
        around the numbers ignored.

    Returns
    -------
    tuple of (float, float, bool)
        ``(y, x, positive)``.

    Raises
    ------
    UserError
        When ``text`` is not of that form.
    """
    match = _CLICK.match(text)
    if match is None:
        raise UserError(
            f"bad click {text!r}: write Y,X in pixels (row, column), e.g. 120,200, "
            "or -120,200 for a negative click"
        )
    sign, y, x = match.groups()
    return float(y), float(x), sign != "-"


def read_image(spec: str | Path, what: str = "image") -> np.ndarray:
    """Read an image file, or a shipped sample given as ``sample:NAME``.

    Parameters
    ----------
    spec : str or path
        An image file (TIFF, PNG, JPEG, BMP; see
        :func:`napari_fbrs.core.evaluation.datasets.read_image`) or ``sample:photo`` /
        ``sample:nuclei``.
    what : str
        What the file is, for error messages.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``, the stored values.

    Raises
    ------
    UserError
        Missing or unreadable file, unknown sample.
    """
    text = str(spec)
    if text.startswith(SAMPLE_PREFIX):
        from napari_fbrs._sample_data import SAMPLES, load_sample

        name = text[len(SAMPLE_PREFIX) :]
        if name not in SAMPLES:
            known = ", ".join(SAMPLE_PREFIX + s for s in SAMPLES)
            raise UserError(f"unknown sample {text!r}; the samples are {known}")
        return load_sample(name)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    from napari_fbrs.core.evaluation.datasets import read_image as read_file

    try:
        return read_file(path)
    except Exception as exc:  # every reader failure means the same thing to the user
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read {what} {path}: {detail}") from None


def as_2d_image(image: np.ndarray, source: str) -> np.ndarray:
    """(H, W) or (H, W, 3|4) as the predictor takes it; one-channel extras dropped."""
    if image.ndim == 3 and image.shape[-1] in (1, 2):  # gray, gray + alpha
        image = image[..., 0]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4)):
        return image
    raise UserError(
        f"{source} has shape {image.shape}: segment takes one 2D image, (H, W) or "
        "(H, W, 3|4); for stacks and multichannel images use the napari widget"
    )


def _read_gt(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The ground-truth mask as bool (any non-zero value is the object)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"ground-truth mask file not found: {path}")
    from napari_fbrs.core.evaluation.datasets import read_mask

    try:
        gt = read_mask(path)
    except Exception as exc:  # every reader failure means the same thing to the user
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read ground-truth mask {path}: {detail}") from None
    gt = np.asarray(gt)
    if gt.ndim == 3:  # a colour mask: any channel set
        gt = gt.any(axis=-1)
    if gt.shape != shape:
        raise UserError(f"the ground-truth mask is {gt.shape[:2]}, the image is {shape}")
    return gt != 0


def _canonical_mode(text: str) -> str:
    """The BRS mode spelled as :data:`napari_fbrs.core.predictor.MODES` has it."""
    from napari_fbrs.core.predictor import MODES

    by_key = {mode.lower(): mode for mode in MODES}
    mode = by_key.get(text.strip().lower())
    if mode is None:
        raise UserError(f"unknown mode {text!r}; choose one of {', '.join(MODES)}")
    return mode


def _describe(image: np.ndarray, rgb: bool | None = None, stack: tuple[int, ...] = ()) -> str:
    if rgb is None:  # one 2D image
        rgb = image.ndim == 3
    h, w = image.shape[-3:-1] if rgb else image.shape[-2:]
    kind = "gray" if not rgb else ("RGB" if image.shape[-1] == 3 else "RGBA")
    slices = f"{' x '.join(str(n) for n in stack)} slices of " if stack else ""
    return f"{slices}{h}x{w} {kind} {image.dtype}"


def _write_mask(path: Path, mask: np.ndarray) -> None:
    data = np.where(mask, 255, 0).astype(np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            from PIL import Image

            Image.fromarray(data).save(path)
        else:
            import tifffile

            tifffile.imwrite(path, data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``napari-fbrs segment``.

    Everything that can be checked cheaply (clicks, output name, image, ground truth, mode,
    device) is checked before the model is loaded or downloaded.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line of :func:`add_parser`.

    Returns
    -------
    int
        0; user errors raise :class:`~napari_fbrs.cli.UserError` instead.
    """
    many = getattr(args, "clicks", None) is not None
    if many and args.click:
        raise UserError("give the clicks either with --click or in a --clicks file, not both")
    if many and args.gt is not None:
        raise UserError("--gt compares one object's mask; it does not go with --clicks")
    if not args.click and not many:
        raise UserError("give at least one click: --click Y,X (row, column in pixels)")
    out = Path(args.out).expanduser()
    suffixes = LABELS_SUFFIXES if many else MASK_SUFFIXES
    if out.suffix.lower() not in suffixes:
        what = "a label image: .tif or .tiff" if many else ".tif, .tiff or .png"
        raise UserError(f"--out must end in {what}, not {out.name!r}")
    if out.is_dir():
        raise UserError(f"--out is a folder, not a file name: {out}")
    if not many and args.propagate:
        raise UserError("--propagate goes with a --clicks file (and a stack)")
    from napari_fbrs.cli import segment_objects as many_objects

    if many:
        from napari_fbrs.core.clicks_file import ClicksFileError, read_clicks_file

        try:
            objects = read_clicks_file(args.clicks)
        except ClicksFileError as exc:
            raise UserError(str(exc)) from None
        many_objects.check_propagation_options(args, objects)
        clicks = [(y, x, positive) for obj in objects for _, y, x, positive in obj.clicks]
        image, rgb, stack = many_objects.as_image_or_stack(
            many_objects.read_image_or_stack(args.image), args.image
        )
        many_objects.check_slices(objects, stack, args, str(args.clicks))
    else:
        many_objects.check_propagation_options(args)
        clicks = [parse_click(text) for text in args.click]
        image, rgb, stack = as_2d_image(read_image(args.image), args.image), None, ()
    h, w = (image.shape[-3:-1] if rgb else image.shape[-2:]) if many else image.shape[:2]
    for y, x, _ in clicks:
        if not (-0.5 <= y < h - 0.5 and -0.5 <= x < w - 0.5):  # nearest pixel inside
            raise UserError(
                f"click ({y:g}, {x:g}) is outside the image: rows 0..{h - 1}, columns 0..{w - 1}"
            )
    gt = _read_gt(args.gt, (h, w)) if args.gt is not None else None
    mode = _canonical_mode(args.mode)
    check_thresh(args.thresh)
    if args.no_zoom_in and args.first_click_crop is not None:
        raise UserError("--first-click-crop needs ZoomIn; drop --no-zoom-in")
    if args.min_crop is not None:
        if args.no_zoom_in:
            raise UserError("--min-crop needs ZoomIn; drop --no-zoom-in")
        if args.min_crop < 8:
            raise UserError(f"--min-crop must be at least 8 pixels, not {args.min_crop}")
    min_crop = DEFAULT_MIN_CROP if args.min_crop is None else args.min_crop
    crop = first_click_crop("auto" if args.first_click_crop is None else args.first_click_crop)

    import napari_fbrs as nf
    from napari_fbrs.core.models.registry import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    from napari_fbrs.cli.models import resolve_model

    checkpoint = resolve_model(args.model)

    def make_predictor() -> Any:
        return nf.Predictor(
            net,
            mode=mode,
            device=str(device),
            with_flip=not args.no_flip,
            zoom_in=None
            if args.no_zoom_in
            else nf.ZoomIn(
                target_size=400,
                min_crop_size=min_crop,
                first_click_crop=crop,
                beyond_border=args.beyond_border,
            ),
            prob_thresh=args.thresh,
            trim_overshoot=args.trim_overshoot,
        )

    try:
        net = nf.load_model(checkpoint, device=str(device))
        predictor = make_predictor()
        if not many:
            predictor.set_image(image)
    except ValueError as exc:  # CheckpointError is one too; a mode the network lacks
        raise UserError(str(exc)) from None

    arch = getattr(net, "arch_name", "?")
    print(f"image: {args.image} ({_describe(image, rgb, stack)})")
    where = "" if str(checkpoint) == str(args.model) else f", {checkpoint}"
    print(f"model: {args.model} ({arch}{where}) on {device}")
    options = [
        f"flip {'off' if args.no_flip else 'on'}",
        "zoom-in off"
        if args.no_zoom_in
        else f"zoom-in on, first-click crop {crop or 'off'}, "
        + ("" if min_crop == DEFAULT_MIN_CROP else f"min crop {min_crop}, ")
        + f"crops {'past' if args.beyond_border else 'inside'} the border",
        f"threshold {args.thresh:g}",
    ]
    if args.trim_overshoot:
        options.append("corrections trimmed")
    print(f"mode: {mode} ({', '.join(options)})")

    if many:
        return many_objects.segment_objects(make_predictor, objects, image, rgb, out, args)
    seconds = []
    for i, (y, x, positive) in enumerate(clicks, start=1):
        start = time.perf_counter()
        predictor.add_click(y, x, positive=positive)
        seconds.append(time.perf_counter() - start)
        area = int(predictor.mask.sum())
        print(
            f"click {i}: {'positive' if positive else 'negative'} at (y={y:g}, x={x:g}) "
            f"in {seconds[-1]:.2f} s, mask {area} px ({100 * area / (h * w):.1f}% of the image)"
        )
    print(
        f"time per click: {sum(seconds) / len(seconds):.2f} s on average over "
        f"{len(seconds)} click{'s' if len(seconds) != 1 else ''}"
    )

    mask = np.asarray(predictor.mask, dtype=bool)
    _write_mask(out, mask)
    print(f"wrote {out} ({h}x{w} uint8, 255 = object)")
    if gt is not None:
        from napari_fbrs.core.evaluation.metrics import iou

        print(f"IoU with {args.gt}: {iou(mask, gt):.4f}")
    return 0
