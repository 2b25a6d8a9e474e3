"""``napari-fbrs train``: train or fine-tune the bundled ``fbrs_lite`` network.

::

    napari-fbrs train --data DIR[,DIR...] [--synthetic N] --out DIR [--steps N] ...
    napari-fbrs train --out DIR --resume [--steps N]
    napari-fbrs train --export CKPT --out FILE

Importing this module imports neither torch nor Qt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_fbrs.cli import UserError
from napari_fbrs.core.models.registry import architectures_of_family

__all__ = ["add_parser", "run"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune the bundled fbrs_lite model; export it",
        description=(
            "Train the fbrs_lite network on dataset folders and/or synthetic images, or "
            "fine-tune it on your own labels (--init fbrs-lite). Checkpoints go to --out "
            "and can be resumed; --export writes the small fp16 file to load as a model."
        ),
    )
    parser.add_argument(
        "--data",
        metavar="DIR[,DIR...]",
        default=None,
        help="dataset folders (GrabCut data_GT/boundary_GT, img/gt, "
        "images/masks or labels), comma-separated",
    )
    parser.add_argument(
        "--synthetic",
        type=int,
        default=None,
        metavar="N",
        help="add N procedurally generated images to the mix",
    )
    parser.add_argument(
        "--paste",
        type=float,
        default=None,
        metavar="P",
        help="probability of a copy-paste composite per sample: another sample's "
        "background or an occluder (default 0)",
    )
    parser.add_argument(
        "--border-mirror",
        type=float,
        default=None,
        metavar="P",
        help="probability that a sample's crop reaches past the image border, the image "
        "mirrored there, as the widget's ZoomIn shows objects cut by the border (default 0)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR|FILE",
        help="output folder for checkpoints (with --export: the output file)",
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=None, help="total optimisation steps (default 20000)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="B",
        help="samples per step (default 8)",
    )
    parser.add_argument(
        "--crop",
        type=_positive_int,
        default=None,
        help="training crop side in pixels (default 320)",
    )
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 3e-4)")
    parser.add_argument(
        "--init",
        default=None,
        metavar="imagenet|fbrs-lite|PATH",
        help="starting weights (default imagenet; fbrs-lite or a checkpoint to fine-tune)",
    )
    parser.add_argument(
        "--arch",
        default=None,
        choices=architectures_of_family("lite"),
        help="network to train from --init imagenet (default fbrs_lite; fbrs_lite2 has the "
        "larger EfficientNet-Lite2 encoder); a checkpoint --init brings its own",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=500,
        metavar="N",
        help="write a checkpoint every N steps (default 500)",
    )
    parser.add_argument(
        "--log-every",
        type=_positive_int,
        default=10,
        metavar="N",
        help="print a progress line every N steps (default 10)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument(
        "--threads", type=_positive_int, default=None, metavar="T", help="CPU threads for torch"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="W",
        help="data-loading worker processes (default 0: in the main "
        "process; the data do not depend on it)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long with a checkpoint; the learning-rate "
        "schedule is fitted to the time",
    )
    parser.add_argument(
        "--keep-snapshots",
        type=_positive_int,
        default=5,
        metavar="K",
        help="weight snapshots step_<n>.pt kept (default 5)",
    )
    parser.add_argument(
        "--export",
        default=None,
        metavar="CKPT",
        help="write the fp16 shipping file of checkpoint CKPT to --out",
    )
    parser.set_defaults(func=run)
    return parser


def _export(args: argparse.Namespace) -> int:
    from napari_fbrs.core.models.registry import CheckpointError
    from napari_fbrs.core.training.checkpoint import export

    ckpt = Path(args.export)
    if ckpt.is_dir():
        ckpt = ckpt / "last.pt"
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out must be a file name with --export, {out} is a folder")
    try:
        path = export(ckpt, out)
    except (CheckpointError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _print_progress(info) -> None:
    remaining = (info.steps - info.step) / info.steps_per_s if info.steps_per_s > 0 else 0
    line = (
        f"step {info.step}/{info.steps}  loss {info.loss:.4f}  IoU {info.iou:.3f}  "
        f"lr {info.lr:.2e}  {info.steps_per_s:.3f} steps/s  data wait {info.data_wait:.0%}  "
        f"elapsed {info.elapsed_s / 60:.1f} min  left ~{remaining / 3600:.1f} h"
    )
    if info.checkpoint:
        line += f"  saved {info.checkpoint}"
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-fbrs train``; user mistakes raise :class:`UserError`."""
    if args.export:
        return _export(args)
    out = Path(args.out)
    data = [d.strip() for d in args.data.split(",") if d.strip()] if args.data else None
    if args.resume:
        if not (out / "last.pt").is_file():
            raise UserError(f"--resume: no checkpoint to continue in {out} (last.pt missing)")
    elif not data and not args.synthetic:
        raise UserError("give training data with --data DIR[,DIR...] and/or --synthetic N")
    if args.synthetic is not None and args.synthetic < 0:
        raise UserError(f"--synthetic must be >= 0, not {args.synthetic}")
    if args.paste is not None and not 0 <= args.paste <= 1:
        raise UserError(f"--paste is a probability in [0, 1], not {args.paste}")
    if args.border_mirror is not None and not 0 <= args.border_mirror <= 1:
        raise UserError(f"--border-mirror is a probability in [0, 1], not {args.border_mirror}")
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr must be positive, not {args.lr}")
    if args.crop is not None and args.crop < 32:
        raise UserError(f"--crop must be at least 32 pixels, not {args.crop}")
    for folder in data or []:
        if not Path(folder.split("+")[0]).exists():
            raise UserError(f"--data: {folder} does not exist")
    if not args.resume and (out / "last.pt").is_file():
        raise UserError(f"{out} already holds a run (last.pt); use --resume or another --out")
    init = args.init
    if init is not None and init not in ("imagenet", "none") and not Path(init).is_file():
        from napari_fbrs.core import zoo

        if init not in zoo.CHECKPOINTS:
            raise UserError(f"--init: {init} is neither imagenet, a known model nor a file")

    from napari_fbrs.core.evaluation.datasets import DatasetError
    from napari_fbrs.core.models.registry import CheckpointError
    from napari_fbrs.core.training import train

    print(
        f"napari-fbrs train: {'resuming' if args.resume else 'starting'} in {out} "
        f"at {time.strftime('%Y-%m-%d %H:%M:%S')}",
        flush=True,
    )
    try:
        last = train(
            data,
            out,
            synthetic=args.synthetic,
            steps=args.steps,
            batch_size=args.batch_size,
            crop=args.crop,
            lr=args.lr,
            init=init,
            arch=args.arch,
            seed=args.seed,
            paste=args.paste,
            border_mirror=args.border_mirror,
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
            resume=args.resume,
            device=args.device,
            threads=args.threads,
            workers=args.workers,
            time_limit=args.time_limit,
            keep_snapshots=args.keep_snapshots,
            progress=_print_progress,
        )
    except (DatasetError, CheckpointError, FileNotFoundError, ImportError) as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    except ValueError as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    print(f"done: {last}")
    return 0
