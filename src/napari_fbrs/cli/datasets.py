"""``napari-fbrs datasets``: list and download the public evaluation benchmarks.

::

    napari-fbrs datasets list [--data-root DIR]
    napari-fbrs datasets download NAME [NAME ...] [--data-root DIR] [--force]

Downloads go to ``<cache>/datasets/<NAME>`` (``NAPARI_FBRS_CACHE`` moves the cache), which
is the default ``--data-root`` of ``napari-fbrs evaluate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_fbrs.cli import UserError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``datasets`` subcommand (``list`` and ``download``)."""
    parser = subparsers.add_parser(
        "datasets",
        help="list or download the evaluation benchmarks (GrabCut, Berkeley, DAVIS, COCO_MVal)",
        description="List the evaluation benchmarks and download the public archives of the "
        "f-BRS release into the cache (the default --data-root of evaluate).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="where each benchmark is and whether it is there")
    download = actions.add_parser("download", help="download and unpack benchmark archives")
    download.add_argument(
        "names", nargs="+", metavar="NAME", help="GrabCut, Berkeley, DAVIS, COCO_MVal, or all"
    )
    download.add_argument(
        "--force", action="store_true", help="download again even if the dataset is present"
    )
    for p in (listing, download):
        p.add_argument(
            "--data-root",
            type=Path,
            metavar="DIR",
            help="data root instead of the cache's datasets folder",
        )
    parser.set_defaults(func=run)
    return parser


def _root(args: argparse.Namespace) -> Path:
    from napari_fbrs.core.evaluation.download import datasets_dir

    return args.data_root if args.data_root is not None else datasets_dir()


def _list(args: argparse.Namespace) -> int:
    from napari_fbrs.core.evaluation.datasets import BENCHMARKS
    from napari_fbrs.core.evaluation.download import ARCHIVES, base_url, dataset_path

    root = _root(args)
    print(f"data root: {root}")
    rows = [("NAME", "STATUS", "SOURCE")]
    for name in BENCHMARKS:
        present = dataset_path(name, root)
        status = "present" if present is not None else "missing"
        if name in ARCHIVES:
            source = base_url() + ARCHIVES[name]
        else:
            source = "not downloadable here: place it by hand (see docs/evaluation.md)"
        rows.append((name, status, source))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, status, source in rows:
        print(f"{name.ljust(widths[0])}  {status.ljust(widths[1])}  {source}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from napari_fbrs.cli.evaluate import ProgressBar
    from napari_fbrs.core.evaluation.download import ARCHIVES, base_url, download_dataset

    canonical = {k.lower(): k for k in ARCHIVES}
    names: list[str] = []
    for name in args.names:
        if name.lower() == "all":
            names += [n for n in ARCHIVES if n not in names]
            continue
        if name.lower() not in canonical:
            raise UserError(f"no download for {name!r}; downloadable: {', '.join(ARCHIVES)}")
        if canonical[name.lower()] not in names:
            names.append(canonical[name.lower()])
    root = _root(args)
    for name in names:
        url = base_url() + ARCHIVES[name]
        print(f"{name}: {url} -> {root / name}", file=sys.stderr)
        bar = ProgressBar(label=f"  {name}", unit=" MB", scale=1e-6)
        try:
            path = download_dataset(name, root, progress=bar, force=args.force)
        except (OSError, RuntimeError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"could not download {name} from {url}: {detail}") from None
        finally:
            bar.close()
        print(f"{name}: ready at {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``napari-fbrs datasets``; returns the exit code."""
    if args.action == "list":
        return _list(args)
    return _download(args)
