"""``napari-fbrs evaluate``: the NoC protocol on benchmark datasets or your own labels.

::

    napari-fbrs evaluate --model NAME|PATH --mode f-BRS-B[,NoBRS,...]
        --datasets GrabCut,DAVIS[,FOLDER,IMAGE+LABELS] [--data-root DIR]
        [--max-clicks 20] [--target-iou 0.9] [--limit N] [--out DIR] [--device auto]

Prints the NoC table and writes ``results.md``, ``results.json`` and ``miou.png`` into
``--out``; progress goes to stderr. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from napari_fbrs.cli import UserError, check_thresh, first_click_crop

__all__ = ["ProgressBar", "add_parser", "run"]

DEFAULT_OUT = "fbrs-evaluation"


class ProgressBar:
    """A one-line text progress bar on stderr, fed by ``callback(done, total)`` calls.

    On a terminal it redraws in place; elsewhere (logs, CI) it prints a line every 10 %
    (with an unknown total, ``total <= 0``: the first line, then the last one on
    :meth:`close`).

    Parameters
    ----------
    label : str
        Text before the bar (may be changed between calls).
    unit : str
        Text after the counts, e.g. ``" MB"``.
    stream : text stream or None
        Default ``sys.stderr``.
    width : int
        Characters of the bar.
    scale : float
        Factor applied to the counts for display (``1e-6`` shows bytes as MB).
    """

    def __init__(
        self,
        label: str = "",
        unit: str = "",
        stream: TextIO | None = None,
        width: int = 28,
        scale: float = 1.0,
    ):
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.scale = scale  # e.g. 1e-6 to show bytes as MB
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._open = False
        self._start = time.perf_counter()
        self._last_text = ""
        self._printed = ""

    def _num(self, value: int) -> str:
        return f"{value * self.scale:.1f}" if self.scale != 1.0 else str(value)

    def __call__(self, done: int, total: int) -> None:
        if total > 0:
            frac = min(max(done / total, 0.0), 1.0)
            filled = int(round(frac * self.width))
            bar = "#" * filled + "-" * (self.width - filled)
            text = (
                f"{self.label} [{bar}] {self._num(done)}/{self._num(total)}{self.unit} "
                f"({100 * frac:3.0f}%, {time.perf_counter() - self._start:.0f} s)"
            )
            decile = int(frac * 10)
        else:
            text = f"{self.label} {self._num(done)}{self.unit}"
            decile = self._last_decile + 1 if done == 0 else self._last_decile
        if self.tty:
            # pad over the rest of a longer previous line
            self.stream.write("\r" + text.ljust(len(self._last_text)))
            self._open = True
        elif decile != self._last_decile:
            self.stream.write(text + "\n")
            self._printed = text
        self._last_text = text
        self._last_decile = decile
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (terminal) or print its last state if not yet printed."""
        if self._open:
            self.stream.write("\n")
            self._open = False
        elif not self.tty and self._last_text and self._last_text != self._printed:
            self.stream.write(self._last_text + "\n")
            self._printed = self._last_text
        self.stream.flush()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand."""
    from napari_fbrs.core.zoo import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "evaluate",
        help="NoC evaluation with a simulated user (benchmarks or your own labels)",
        description=(
            "Evaluate a model with the standard NoC protocol: a simulated user clicks on the "
            "largest error until the target IoU or the click budget is reached. Writes "
            "results.md (the NoC table), results.json (every object's IoU curve) and "
            "miou.png (mIoU against clicks) into --out."
        ),
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|PATH",
        help=f"zoo name or checkpoint file (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--mode",
        default="f-BRS-B",
        metavar="MODE[,MODE...]",
        help="comma-separated modes: NoBRS, RGB-BRS, DistMap-BRS, f-BRS-A, "
        "f-BRS-B (default), f-BRS-C",
    )
    parser.add_argument(
        "--datasets",
        required=True,
        metavar="NAME|PATH[,...]",
        help="comma-separated: GrabCut, Berkeley, DAVIS, COCO_MVal, SBD (under "
        "--data-root), a folder (benchmark layout or images/ + masks/ "
        "or labels/), or IMAGE+LABELS (one image, one label image)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        metavar="DIR",
        help="folder holding the benchmark folders (default: the download "
        "cache, see 'napari-fbrs datasets list')",
    )
    parser.add_argument(
        "--max-clicks",
        type=int,
        default=20,
        metavar="N",
        help="click budget per object (default 20)",
    )
    parser.add_argument(
        "--target-iou",
        type=float,
        default=0.90,
        metavar="IOU",
        help="stop clicking an object at this IoU (default 0.90; at least 0.90 "
        "so that NoC@90 is exact, 1.0 to spend every click)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="only the first N objects of each dataset"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"output folder (default: ./{DEFAULT_OUT})",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument(
        "--zoom-in",
        default="auto",
        metavar="SIZE|auto|off",
        help="ZoomIn crop size: auto (the paper's: 600 for DAVIS, else 400), "
        "a size in pixels, or off",
    )
    parser.add_argument(
        "--min-crop",
        type=int,
        default=200,
        metavar="N",
        help="ZoomIn's smallest crop side in image pixels (default 200, the paper's)",
    )
    parser.add_argument(
        "--first-click-crop",
        default=None,
        metavar="N|auto|off",
        help="predict the first click in an N x N crop around it; auto: on the whole image, "
        "then again zoomed in if the object found is small; off (default): the whole "
        "image, as the paper",
    )
    parser.add_argument(
        "--beyond-border",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="let ZoomIn crops reach past the image border, the image mirrored there "
        "(default: --no-beyond-border, crops stay inside the image, as the paper)",
    )
    parser.add_argument(
        "--trim-overshoot",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="after L-BFGS-B satisfies the clicks, step back to the shortest step that still "
        "does (default: --no-trim-overshoot, as the paper)",
    )
    parser.add_argument(
        "--thresh",
        type=float,
        default=0.49,
        help="probability threshold of the mask, also the BRS objective's (default 0.49, "
        "the paper's)",
    )
    parser.add_argument(
        "--no-flip", action="store_true", help="do not average with the horizontally flipped image"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write miou.png")
    parser.set_defaults(func=run)
    return parser


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_modes(text: str) -> list[str]:
    """Comma-separated modes, matched case-insensitively to ``napari_fbrs.MODES``."""
    from napari_fbrs.core.predictor import MODES

    canonical = {m.lower(): m for m in MODES}
    modes = []
    for part in _split(text):
        if part.lower() not in canonical:
            raise UserError(f"unknown mode {part!r}; choose from {', '.join(MODES)}")
        if canonical[part.lower()] not in modes:
            modes.append(canonical[part.lower()])
    if not modes:
        raise UserError("--mode is empty; give at least one mode")
    return modes


def _zoom_in_size(setting: str, dataset: str) -> int | None:
    if setting == "off":
        return None
    if setting == "auto":
        return 600 if dataset == "DAVIS" else 400
    return int(setting)


def _check_args(args: argparse.Namespace) -> None:
    if args.max_clicks < 1:
        raise UserError(f"--max-clicks must be at least 1, not {args.max_clicks}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, not {args.limit}")
    if not (0.9 <= args.target_iou <= 1.0):
        raise UserError(
            f"--target-iou must lie in [0.9, 1.0] (NoC@90 needs it), not {args.target_iou:g}"
        )
    zoom = args.zoom_in.strip().lower()
    if zoom not in ("auto", "off") and not (zoom.isdigit() and int(zoom) >= 8):
        raise UserError(f"--zoom-in must be auto, off or a size >= 8 pixels, not {args.zoom_in!r}")
    args.zoom_in = zoom
    if args.min_crop < 8:
        raise UserError(f"--min-crop must be at least 8 pixels, not {args.min_crop}")
    check_thresh(args.thresh)
    args.first_click_crop = first_click_crop(args.first_click_crop)
    if zoom == "off" and args.first_click_crop is not None:
        raise UserError("--first-click-crop needs ZoomIn; drop --zoom-in off")
    if zoom == "off" and args.beyond_border:
        raise UserError("--beyond-border needs ZoomIn; drop --zoom-in off")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out exists and is not a folder: {args.out}")


def open_datasets(specs: list[str], data_root: Path | None) -> list:
    """Open every ``--datasets`` entry; user mistakes become :class:`UserError`."""
    from napari_fbrs.core.evaluation.datasets import DatasetError, open_dataset
    from napari_fbrs.core.evaluation.download import datasets_dir

    root = data_root if data_root is not None else datasets_dir()
    if not specs:
        raise UserError("--datasets is empty; give at least one dataset")
    opened = []
    for spec in specs:
        try:
            ds = open_dataset(spec, root)
            len(ds)  # lists the files now, so layout problems surface before the model loads
        except DatasetError as exc:
            raise UserError(str(exc)) from None
        opened.append(ds)
    names = [ds.name for ds in opened]
    if len(set(names)) != len(names):
        raise UserError(f"two datasets share a name ({', '.join(names)}); rename a folder")
    return opened


def run(args: argparse.Namespace) -> int:
    """Run ``napari-fbrs evaluate``; returns the exit code."""
    _check_args(args)
    modes = parse_modes(args.mode)
    datasets = open_datasets(_split(args.datasets), args.data_root)
    for ds in datasets:
        if getattr(ds, "unpaired", None):
            print(
                f"warning: {ds.name}: {len(ds.unpaired)} image(s) without a mask are skipped",
                file=sys.stderr,
            )

    from napari_fbrs.cli.models import resolve_model

    checkpoint = resolve_model(args.model)

    import napari_fbrs as nf
    from napari_fbrs.core.evaluation.datasets import DatasetError
    from napari_fbrs.core.evaluation.report import build_report, markdown_table, write_report
    from napari_fbrs.core.evaluation.runner import evaluate_dataset
    from napari_fbrs.core.models.registry import resolve_device

    try:
        device = str(resolve_device(args.device))
        net = nf.load_model(checkpoint, device=device)
    except ValueError as exc:  # bad device; CheckpointError is a ValueError too
        raise UserError(str(exc)) from None

    counts = [len(ds) if args.limit is None else min(len(ds), args.limit) for ds in datasets]
    total = sum(counts) * len(modes)
    print(
        f"evaluating {args.model} on {device}: {', '.join(ds.name for ds in datasets)} x "
        f"{', '.join(modes)} ({total} object runs, up to {args.max_clicks} clicks each)",
        file=sys.stderr,
    )
    bar = ProgressBar()
    results = []
    done_before = 0
    try:
        for ds, count in zip(datasets, counts, strict=True):
            zoom = _zoom_in_size(args.zoom_in, ds.name)
            for mode in modes:
                try:
                    predictor = nf.Predictor(
                        net,
                        mode=mode,
                        device=device,
                        with_flip=not args.no_flip,
                        prob_thresh=args.thresh,
                        trim_overshoot=args.trim_overshoot,
                        zoom_in=None
                        if zoom is None
                        else nf.ZoomIn(
                            target_size=zoom,
                            min_crop_size=args.min_crop,
                            first_click_crop=args.first_click_crop,
                            beyond_border=args.beyond_border,
                        ),
                    )
                except ValueError as exc:  # e.g. a mode the architecture does not define
                    raise UserError(str(exc)) from None
                bar.label = f"{ds.name}/{mode}"
                offset = done_before

                def progress(done: int, _total: int, offset: int = offset) -> None:
                    bar(offset + done, total)

                try:
                    results.append(
                        evaluate_dataset(
                            predictor,
                            ds,
                            dataset=ds.name,
                            mode=mode,
                            max_clicks=args.max_clicks,
                            target_iou=args.target_iou,
                            limit=args.limit,
                            progress=progress,
                        )
                    )
                except DatasetError as exc:  # an unreadable or empty mask, met on the way
                    raise UserError(str(exc)) from None
                done_before += count
    finally:
        bar.close()

    report = build_report(args.model, results)
    # how the predictor was set up, so that a results.json says what it measured
    report["settings"] = {
        "zoom_in": args.zoom_in,
        "min_crop": args.min_crop,
        "first_click_crop": args.first_click_crop,
        "beyond_border": args.beyond_border,
        "trim_overshoot": args.trim_overshoot,
        "flip": not args.no_flip,
        "thresh": args.thresh,
    }
    paths = write_report(report, args.out, plot=not args.no_plot)
    print(markdown_table(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
