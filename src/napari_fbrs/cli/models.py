"""``napari-fbrs models``: list the model zoo and download checkpoints.

::

    napari-fbrs models                       # same as `models list`
    napari-fbrs models download hrnet18_ocr64_sbd

Also home of :func:`resolve_model`, which turns a ``--model`` argument (zoo name or file)
into a checkpoint path for the other subcommands. Importing this module imports neither
torch nor Qt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_fbrs.cli import UserError

__all__ = ["add_parser", "fetch_checkpoint", "model_status", "resolve_model", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``models`` subcommand (``list``, the default, and ``download``).

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``add_subparsers()`` object of the ``napari-fbrs`` parser.

    Returns
    -------
    argparse.ArgumentParser
        The ``models`` parser.
    """
    parser = subparsers.add_parser(
        "models",
        help="list the model zoo, download checkpoints",
        description=(
            "List the known models (the bundled one and the official f-BRS/RITM releases) "
            "and download checkpoints into the cache (NAPARI_FBRS_CACHE overrides its place)."
        ),
    )
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    actions.add_parser("list", help="list the zoo (the default)")
    download = actions.add_parser("download", help="download checkpoints into the cache")
    download.add_argument("names", nargs="+", metavar="NAME", help="zoo names to download")
    parser.set_defaults(func=run)
    return parser


def model_status(name: str) -> str:
    """Where a zoo checkpoint stands on this machine.

    Parameters
    ----------
    name : str
        A key of :data:`napari_fbrs.core.zoo.CHECKPOINTS`.

    Returns
    -------
    str
        ``"bundled"``, ``"bundled (not available yet)"``, ``"cached"`` or ``"downloadable"``.
    """
    from napari_fbrs.core import zoo

    info = zoo.CHECKPOINTS[name]
    if info.bundled:
        present = zoo.bundled_weights_path(info.filename).is_file()
        return "bundled" if present else "bundled (not available yet)"
    return "cached" if (zoo.cache_dir() / info.filename).is_file() else "downloadable"


def fetch_checkpoint(name: str) -> Path:
    """Local path of a zoo checkpoint, downloading it (with progress on stderr) if needed.

    Parameters
    ----------
    name : str
        A zoo name.

    Returns
    -------
    pathlib.Path
        The checkpoint file.

    Raises
    ------
    UserError
        Unknown name, bundled weights not available yet, or a failed download (the
        message says how to place the file by hand).
    """
    from napari_fbrs.core import zoo

    if name not in zoo.CHECKPOINTS:
        known = ", ".join(zoo.CHECKPOINTS)
        raise UserError(f"unknown model {name!r}; known models: {known} (or give a file)")
    info = zoo.CHECKPOINTS[name]
    try:
        return zoo.checkpoint_path(name, download=False)
    except FileNotFoundError as exc:
        if info.bundled:
            raise UserError(
                f"{exc}; meanwhile pass --model a downloadable zoo name (see 'napari-fbrs "
                "models') or a checkpoint file"
            ) from None
    from napari_fbrs.cli.evaluate import ProgressBar

    target = zoo.cache_dir()
    print(f"downloading {name} (about {info.size_mb:.0f} MB) into {target}", file=sys.stderr)
    bar = ProgressBar(name, " MB", scale=1e-6)
    try:
        return zoo.download_checkpoint(name, progress=bar)
    except (OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"could not download {name} from {info.url} ({detail}); to work offline, "
            f"copy {info.filename} into {target}"
        ) from None
    finally:
        bar.close()


def resolve_model(spec: str) -> Path:
    """Turn a ``--model`` argument into a checkpoint file.

    Parameters
    ----------
    spec : str
        A checkpoint file path or a zoo name.

    Returns
    -------
    pathlib.Path
        An existing file (zoo checkpoints are downloaded if needed).

    Raises
    ------
    UserError
        When ``spec`` is neither an existing file nor a usable zoo name.
    """
    from napari_fbrs.core import zoo

    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if spec in zoo.CHECKPOINTS:
        return fetch_checkpoint(spec)
    if path.suffix in (".pt", ".pth") or "/" in spec or "\\" in spec:
        raise UserError(f"model file not found: {spec}")
    known = ", ".join(zoo.CHECKPOINTS)
    raise UserError(f"unknown model {spec!r}: not a file and not one of {known}")


def _list() -> None:
    """Print the zoo as a table, then the cache folder and the default model."""
    from napari_fbrs.core import zoo

    rows = [("NAME", "ARCHITECTURE", "SIZE", "STATUS", "DESCRIPTION")]
    for name, info in zoo.CHECKPOINTS.items():
        rows.append(
            (name, info.arch, f"{info.size_mb:.0f} MB", model_status(name), info.description)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        print("  ".join([*cells, row[4]]).rstrip())
    print(f"\ncache: {zoo.cache_dir()} (set NAPARI_FBRS_CACHE to use another folder)")
    print(f"default model: {zoo.DEFAULT_MODEL}")


def _download(names: list[str]) -> None:
    """Fetch each named checkpoint and say where it is."""
    from napari_fbrs.core import zoo

    for name in names:
        before = model_status(name) if name in zoo.CHECKPOINTS else None
        path = fetch_checkpoint(name)  # raises for unknown names and missing bundled weights
        if before == "bundled":
            print(f"{name}: bundled with the package, nothing to download ({path})")
        else:
            print(f"{name}: {'already cached' if before == 'cached' else 'downloaded'} at {path}")


def run(args: argparse.Namespace) -> int:
    """Run ``napari-fbrs models``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line of :func:`add_parser`.

    Returns
    -------
    int
        0; user errors raise :class:`~napari_fbrs.cli.UserError` instead.
    """
    if getattr(args, "models_action", None) == "download":
        _download(args.names)
    else:
        _list()
    return 0
