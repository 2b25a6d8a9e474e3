"""The ``napari-fbrs`` command line: segment, evaluate, models, train, datasets.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and ``run(args)``.
User errors raise :class:`UserError`: one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["UserError", "check_thresh", "first_click_crop", "main"]

# subcommand -> module (imported only when that subcommand runs or help is built)
SUBCOMMANDS = {
    "segment": "napari_fbrs.cli.segment",
    "evaluate": "napari_fbrs.cli.evaluate",
    "models": "napari_fbrs.cli.models",
    "train": "napari_fbrs.cli.train",
    "datasets": "napari_fbrs.cli.datasets",
}


class UserError(Exception):
    """A mistake in the command line or its inputs; printed as one line, exit code 2.

    Raise it with a message that says what is wrong and, where it helps, what to do
    instead. :func:`main` prints it without a traceback.
    """


def first_click_crop(text: str | None) -> int | str | None:
    """The value of a ``--first-click-crop`` option as ``nf.ZoomIn`` takes it.

    Parameters
    ----------
    text : str or None
        ``off`` (or ``None``): the whole image; ``auto``; or a side in pixels, at least 8.

    Returns
    -------
    int, "auto" or None

    Raises
    ------
    UserError
        Anything else.
    """
    if text is None or text.strip().lower() == "off":
        return None
    if text.strip().lower() == "auto":
        return "auto"
    try:
        side = int(text)
    except ValueError:
        raise UserError(
            f"--first-click-crop must be a number of pixels, 'auto' or 'off', not {text!r}"
        ) from None
    if side < 8:
        raise UserError(f"--first-click-crop must be at least 8 pixels, not {side}")
    return side


def check_thresh(value: float) -> float:
    """A ``--thresh`` value, which must lie strictly between 0 and 1.

    Raises
    ------
    UserError
        Anything else.
    """
    if not 0.0 < value < 1.0:
        raise UserError(f"--thresh must lie strictly between 0 and 1, got {value:g}")
    return value


def _one_line(text: str) -> str:
    """``text`` with its line breaks and runs of blanks collapsed to single spaces."""
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    """Build the ``napari-fbrs`` argument parser with every subcommand registered.

    Subcommand modules are imported here but import neither torch nor Qt at module level,
    so ``napari-fbrs --help`` stays fast. A subcommand whose module is missing from this
    installation is still listed, and says that it is not available yet when run.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand sets ``func`` (its ``run(args)``) on the namespace.
    """
    from napari_fbrs._version import __version__

    parser = argparse.ArgumentParser(
        prog="napari-fbrs",
        description="Interactive segmentation with f-BRS, without the GUI.",
    )
    parser.add_argument("--version", action="version", version=f"napari-fbrs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            p = sub.add_parser(name, help=f"({name} is not available yet)")
            p.set_defaults(_unavailable=name)
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-fbrs`` console script.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0 on success, 2 for a user error (printed as one line on stderr,
        no traceback), 130 when interrupted. Command-line syntax errors found by argparse
        exit with code 2 through ``SystemExit``, as argparse does.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        print(
            f"napari-fbrs {args._unavailable}: error: this subcommand is not available yet "
            "in this version",
            file=sys.stderr,
        )
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"napari-fbrs {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
