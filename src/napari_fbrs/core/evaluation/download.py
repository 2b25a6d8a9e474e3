"""Download the public benchmark archives of the f-BRS release into the cache directory.

``download_dataset("GrabCut")`` leaves the dataset at ``datasets_dir() / "GrabCut"``, which
is where :func:`napari_fbrs.core.evaluation.datasets.open_dataset` looks for benchmark
names by default. ``NAPARI_FBRS_CACHE`` moves the cache; ``NAPARI_FBRS_DATASETS_URL``
replaces the release address (a mirror, or a local server in tests).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "ARCHIVES",
    "DEFAULT_BASE_URL",
    "base_url",
    "dataset_path",
    "datasets_dir",
    "download_dataset",
]

DEFAULT_BASE_URL = (
    "https://github.com/saic-vul/fbrs_interactive_segmentation/releases/download/v1.0/"
)
#: Downloadable benchmark -> archive file name in the release (no hashes are published).
ARCHIVES: dict[str, str] = {
    "GrabCut": "GrabCut.zip",
    "Berkeley": "Berkeley.zip",
    "DAVIS": "DAVIS.zip",
    "COCO_MVal": "COCO_MVal.zip",
}


def base_url() -> str:
    """Release address, ``NAPARI_FBRS_DATASETS_URL`` when set; always ends with ``/``."""
    url = os.environ.get("NAPARI_FBRS_DATASETS_URL") or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def datasets_dir() -> Path:
    """Default data root: ``<cache_dir()>/datasets``."""
    from napari_fbrs.core.zoo import cache_dir

    return cache_dir() / "datasets"


def _layout_dirs(name: str) -> tuple[str, ...]:
    from napari_fbrs.core.evaluation.datasets import BENCHMARKS

    return BENCHMARKS[name][1]


def _has_layout(folder: Path, name: str) -> bool:
    return all((folder / sub).is_dir() for sub in _layout_dirs(name))


def dataset_path(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """Folder of a downloaded benchmark under ``root`` (default :func:`datasets_dir`), or
    ``None`` when it is not there."""
    folder = Path(root) if root is not None else datasets_dir()
    folder = folder / name
    return folder if _has_layout(folder, name) else None


def _find_layout_root(top: Path, name: str) -> Path | None:
    """The folder inside an unpacked archive that holds the benchmark's sub-folders."""
    for current, _dirs, _files in os.walk(top):
        if _has_layout(Path(current), name):
            return Path(current)
    return None


class _ProgressAdapter:
    """pooch's tqdm-like progress protocol -> ``callback(done_bytes, total_bytes)``."""

    def __init__(self, callback: Callable[[int, int], None]):
        self.callback = callback
        self.total = 0
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n
        # pooch counts whole chunks, so the last update may overshoot the size
        done = min(self.n, self.total) if self.total else self.n
        self.callback(done, self.total)

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        pass


def download_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
    *,
    url: str | None = None,
    known_hash: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download and unpack a benchmark archive; return the dataset folder.

    Parameters
    ----------
    name : str
        A key of :data:`ARCHIVES` (any case).
    root : path or None
        Data root; default :func:`datasets_dir`. The dataset ends up in ``root/<Name>``.
    progress : callable or None
        ``progress(done_bytes, total_bytes)`` during the download (``total_bytes`` is 0
        when the server does not say).
    force : bool
        Download again even when the dataset is already there.
    url : str or None
        Address of the archive; default :func:`base_url` + the archive's file name.
    known_hash : str or None
        pooch hash of the archive (``"sha256:<hex>"`` or a bare SHA-256), checked after the
        download; the release publishes none, so by default nothing is checked.
    timeout : float
        Seconds to wait for the server before giving up (per connection and read).

    Returns
    -------
    Path
        ``root/<Name>``, holding the benchmark's layout.

    Raises
    ------
    KeyError
        Unknown name (the message lists the downloadable ones).
    OSError
        The download failed (``requests`` errors are ``OSError``).
    ValueError
        The archive does not match ``known_hash``, or is not a zip file.
    RuntimeError
        The archive does not contain the expected layout.
    """
    canonical = {k.lower(): k for k in ARCHIVES}
    if name.lower() not in canonical:
        raise KeyError(f"no download for dataset {name!r}; downloadable: {', '.join(ARCHIVES)}")
    name = canonical[name.lower()]
    root_dir = Path(root) if root is not None else datasets_dir()
    target = root_dir / name
    if not force and _has_layout(target, name):
        return target

    import zipfile

    import pooch

    url = url or base_url() + ARCHIVES[name]
    root_dir.mkdir(parents=True, exist_ok=True)
    archive = root_dir / ARCHIVES[name]
    if force and archive.exists():
        archive.unlink()
    unpack_dir = root_dir / f".{name}.unpack"
    if unpack_dir.exists():
        shutil.rmtree(unpack_dir)
    logger = pooch.get_logger()
    level = logger.level
    # pooch logs the unknown hash of every file at INFO; the CLI reports what matters itself
    logger.setLevel(logging.WARNING)
    bar = _ProgressAdapter(progress) if progress else False
    downloader = None
    if url.lower().startswith(("http://", "https://")):
        downloader = pooch.HTTPDownloader(progressbar=bar, timeout=timeout)
    try:
        pooch.retrieve(
            url=url,
            known_hash=known_hash,
            fname=ARCHIVES[name],
            path=root_dir,
            processor=pooch.Unzip(extract_dir=unpack_dir.name),
            downloader=downloader,
            progressbar=bar,
        )
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise ValueError(f"{archive.name} from {url} is not a zip archive") from exc
    except ValueError:
        # a hash mismatch: pooch has already removed the download
        archive.unlink(missing_ok=True)
        raise
    finally:
        logger.setLevel(level)
    found = _find_layout_root(unpack_dir, name)
    if found is None:
        shutil.rmtree(unpack_dir, ignore_errors=True)
        archive.unlink(missing_ok=True)  # or the next try would unpack the same archive
        wanted = " and ".join(_layout_dirs(name))
        raise RuntimeError(f"{archive.name} does not contain {wanted} folders")
    if target.exists():
        shutil.rmtree(target)
    shutil.move(str(found), str(target))
    shutil.rmtree(unpack_dir, ignore_errors=True)
    # The archive is not needed once unpacked; the datasets are large.
    archive.unlink(missing_ok=True)
    return target
