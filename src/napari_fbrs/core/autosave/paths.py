"""Where sidecars live: beside the image file or in the autosave folder
(:func:`sidecar_path`, :func:`autosave_dir`), and the sidecars found in a folder
(:func:`list_autosaves`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from napari_fbrs.core.autosave.document import _read_json
from napari_fbrs.core.autosave.records import AutosaveError

#: File-name suffix of the sidecars.
SUFFIX = ".fbrs-autosave.json"


def autosave_dir() -> Path:
    """The folder for sidecars of images that have no writable folder of their own:
    ``napari_fbrs.core.zoo.cache_dir() / "autosave"`` (``NAPARI_FBRS_CACHE`` moves it)."""
    from napari_fbrs.core.zoo import cache_dir

    return cache_dir() / "autosave"


def safe_stem(text: str, limit: int = 60) -> str:
    """``text`` as a file-name stem: runs of other characters than ``A-Za-z0-9._-`` become
    ``_``, at most ``limit`` characters, ``"image"`` when nothing is left."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return stem[:limit] or "image"


def _writable_dir(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def sidecar_path(image: str | os.PathLike, directory: str | os.PathLike | None = None) -> Path:
    """Where the autosave of an image lives.

    Parameters
    ----------
    image : pathlib.Path or str
        The file the image was opened from, as a :class:`pathlib.Path` (or an absolute
        path string), or, for an image that only exists in napari, the layer's name as a
        ``str`` (any text: it is sanitised; a relative string is always a name, so a
        layer called ``"../x"`` never lands outside ``directory``).
    directory : str or path, optional
        The fallback folder (default :func:`autosave_dir`).

    Returns
    -------
    pathlib.Path
        ``<file>.fbrs-autosave.json`` beside an existing image file whose folder is
        writable; otherwise ``<directory>/<safe name>-<hash>.fbrs-autosave.json``, the hash
        taken over the full path or name, so that different images never share a sidecar
        and no name can point outside ``directory``.
    """
    is_path = not isinstance(image, str) or os.path.isabs(image)
    text = os.fsdecode(os.fspath(image))
    fallback = Path(directory) if directory is not None else None
    candidate: Path | None = None
    if is_path:
        with contextlib.suppress(OSError, ValueError):
            p = Path(text).expanduser()
            if p.is_file():
                candidate = p.resolve()
    if candidate is not None and _writable_dir(candidate.parent):
        return candidate.with_name(candidate.name + SUFFIX)
    ident = str(candidate) if candidate is not None else text
    digest = hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    name = (candidate.name if candidate is not None else text) or "image"
    folder = fallback if fallback is not None else autosave_dir()
    return folder / f"{safe_stem(name)}-{digest}{SUFFIX}"


def list_autosaves(directory: str | os.PathLike | None = None) -> list[tuple[Path, str, str]]:
    """Sidecars in ``directory`` (default :func:`autosave_dir`), newest first.

    Returns
    -------
    list of (path, image name, saved_at)
        Unreadable sidecars are listed with an empty name and time.
    """
    folder = Path(directory) if directory is not None else autosave_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob(f"*{SUFFIX}"):
        try:
            doc = _read_json(path)
            out.append((path, str(doc["image"]["name"]), str(doc["saved_at"])))
        except (AutosaveError, KeyError, TypeError):
            out.append((path, "", ""))
    out.sort(key=lambda t: (t[2], t[0].stat().st_mtime if t[0].exists() else 0), reverse=True)
    return out
