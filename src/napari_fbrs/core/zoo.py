"""The model zoo: named checkpoints, where they come from, and the local cache.

The bundled ``fbrs-lite`` weights ship inside the package; the official f-BRS and RITM
release checkpoints are downloaded on demand with pooch into the cache directory
(``NAPARI_FBRS_CACHE`` overrides it). To work offline, copy a checkpoint file into
``cache_dir()`` under its file name (see ``docs/models.md``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_MODEL",
    "CheckpointInfo",
    "cache_dir",
    "checkpoint_path",
    "download_checkpoint",
]

DEFAULT_MODEL = "fbrs-lite"

_FBRS_RELEASE = "https://github.com/saic-vul/fbrs_interactive_segmentation/releases/download/v1.0/"
_RITM_RELEASE = "https://github.com/saic-vul/ritm_interactive_segmentation/releases/download/v1.0/"


@dataclass(frozen=True)
class CheckpointInfo:
    """A named checkpoint.

    Parameters
    ----------
    name : str
        Zoo name (what ``load_model`` and the widget accept).
    arch : str
        Registered architecture name.
    filename : str
        File name in the cache directory (or in the package for bundled weights).
    url : str or None
        Download address; ``None`` for bundled weights.
    sha256 : str or None
        Known hash, checked after download when given.
    size_mb : float
        Approximate size of the file.
    description : str
        Training data and origin, one line.
    """

    name: str
    arch: str
    filename: str
    url: str | None
    sha256: str | None
    size_mb: float
    description: str

    @property
    def bundled(self) -> bool:
        return self.url is None


CHECKPOINTS: dict[str, CheckpointInfo] = {
    c.name: c
    for c in [
        CheckpointInfo(
            "fbrs-lite",
            "fbrs_lite2",
            "fbrs_lite.pt",
            None,
            None,
            9.6,
            "bundled (version 3): EfficientNet-Lite2 DeepLabV3+-style net trained by napari-fbrs",
        ),
        CheckpointInfo(
            "resnet34_dh128_sbd",
            "resnet34_dh128",
            "resnet34_dh128_sbd.pth",
            _FBRS_RELEASE + "resnet34_dh128_sbd.pth",
            None,
            89.0,
            "f-BRS release, trained on SBD",
        ),
        CheckpointInfo(
            "resnet50_dh128_sbd",
            "resnet50_dh128",
            "resnet50_dh128_sbd.pth",
            _FBRS_RELEASE + "resnet50_dh128_sbd.pth",
            None,
            159.0,
            "f-BRS release, trained on SBD",
        ),
        CheckpointInfo(
            "resnet101_dh256_sbd",
            "resnet101_dh256",
            "resnet101_dh256_sbd.pth",
            _FBRS_RELEASE + "resnet101_dh256_sbd.pth",
            None,
            235.0,
            "f-BRS release, trained on SBD",
        ),
        CheckpointInfo(
            "hrnet18_ocr64_sbd",
            "hrnet18_ocr64",
            "hrnet18_ocr64_sbd.pth",
            _FBRS_RELEASE + "hrnet18_ocr64_sbd.pth",
            None,
            40.0,
            "f-BRS release, trained on SBD",
        ),
        CheckpointInfo(
            "hrnet32_ocr128_sbd",
            "hrnet32_ocr128",
            "hrnet32_ocr128_sbd.pth",
            _FBRS_RELEASE + "hrnet32_ocr128_sbd.pth",
            None,
            119.0,
            "f-BRS release, trained on SBD",
        ),
        CheckpointInfo(
            "resnet50_dh128_lvis",
            "resnet50_dh128",
            "resnet50_dh128_lvis.pth",
            _FBRS_RELEASE + "resnet50_dh128_lvis.pth",
            None,
            159.0,
            "f-BRS release, trained on LVIS",
        ),
        CheckpointInfo(
            "hrnet32_ocr128_lvis",
            "hrnet32_ocr128",
            "hrnet32_ocr128_lvis.pth",
            _FBRS_RELEASE + "hrnet32_ocr128_lvis.pth",
            None,
            119.0,
            "f-BRS release, trained on LVIS",
        ),
        # RITM release (saic-vul/ritm_interactive_segmentation, tag v1.0). Sizes are those
        # the RITM README lists (all five known); no SHA-256 is published and none could be
        # computed here (no download), so none is checked.
        *(
            CheckpointInfo(
                stem,
                arch,
                f"{stem}.pth",
                f"{_RITM_RELEASE}{stem}.pth",
                None,
                size_mb,
                f"RITM release, {what}",
            )
            for stem, arch, size_mb, what in [
                (
                    "sbd_h18_itermask",
                    "ritm_hrnet18_itermask",
                    38.8,
                    "HRNet-18 IT-M (previous-mask input), trained on SBD",
                ),
                (
                    "coco_lvis_h18_baseline",
                    "ritm_hrnet18_baseline",
                    38.8,
                    "HRNet-18 without mask input, trained on COCO + LVIS",
                ),
                (
                    "coco_lvis_h18s_itermask",
                    "ritm_hrnet18s_itermask",
                    16.5,
                    "HRNet-18-small IT-M, trained on COCO + LVIS",
                ),
                (
                    "coco_lvis_h18_itermask",
                    "ritm_hrnet18_itermask",
                    38.8,
                    "HRNet-18 IT-M, trained on COCO + LVIS",
                ),
                (
                    "coco_lvis_h32_itermask",
                    "ritm_hrnet32_itermask",
                    119.0,
                    "HRNet-32 IT-M, trained on COCO + LVIS",
                ),
            ]
        ),
    ]
}


def cache_dir() -> Path:
    """Where downloaded checkpoints and datasets live (``NAPARI_FBRS_CACHE`` overrides)."""
    env = os.environ.get("NAPARI_FBRS_CACHE")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-fbrs"))


def bundled_weights_path(filename: str) -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / filename


def checkpoint_path(
    name: str, download: bool = True, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Local path of a zoo checkpoint, downloading it if needed and allowed.

    Raises
    ------
    KeyError
        Unknown name (the message lists the known ones).
    FileNotFoundError
        Bundled weights missing from the installation, or ``download=False`` and the file
        is not cached.
    """
    if name not in CHECKPOINTS:
        known = ", ".join(sorted(CHECKPOINTS))
        raise KeyError(f"unknown model {name!r}: not a file and not a known model ({known})")
    info = CHECKPOINTS[name]
    if info.bundled:
        path = bundled_weights_path(info.filename)
        if not path.is_file():
            raise FileNotFoundError(
                f"the bundled model {name!r} is not in this installation ({path}); "
                "it is still being trained, see docs/model_card.md"
            )
        return path
    path = cache_dir() / info.filename
    if path.is_file():
        return path
    if not download:
        raise FileNotFoundError(f"{name!r} is not cached at {path}")
    return download_checkpoint(name, progress=progress)


def download_checkpoint(name: str, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download a zoo checkpoint into :func:`cache_dir` with pooch and return its path."""
    import pooch

    info = CHECKPOINTS[name]
    if info.url is None:
        return checkpoint_path(name)
    known_hash = f"sha256:{info.sha256}" if info.sha256 else None
    fname = pooch.retrieve(
        url=info.url,
        known_hash=known_hash,
        fname=info.filename,
        path=cache_dir(),
        progressbar=_PoochProgress(progress) if progress else False,
    )
    return Path(fname)


class _PoochProgress:
    """Adapter from pooch's tqdm-like progress protocol to a ``callback(done, total)``."""

    def __init__(self, callback: Callable[[int, int], None]):
        self.callback = callback
        self.total = 0
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n
        self.callback(self.n, self.total)

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        pass
