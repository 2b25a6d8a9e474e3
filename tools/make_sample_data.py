"""Regenerate the two sample images shipped in ``src/napari_fbrs/data/``.

Both files are made deterministically, so running this script again reproduces them
(up to rounding differences between library versions):

``photo.png``
    ``skimage.data.coffee()`` (a photograph by Rachel Michetti, released as CC0 and shipped
    with scikit-image), downscaled by 0.75 to 300 x 450 RGB uint8 to keep the file small.
``nuclei.tif``
    A synthetic 16-bit fluorescence image, 256 x 256: elliptical nuclei with some internal
    texture on an uneven background, blurred by the optics, then photon (Poisson) noise
    and camera read (Gaussian) noise, all from a seeded random generator.

Usage::

    python tools/make_sample_data.py            # writes into src/napari_fbrs/data/
    python tools/make_sample_data.py --out DIR  # writes somewhere else
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent.parent / "src" / "napari_fbrs" / "data"
PHOTO_SCALE = 0.75
NUCLEI_SHAPE = (256, 256)
NUCLEI_SEED = 20200614  # CVPR 2020 opened on 14 June 2020
NUCLEI_COUNT = 28


def make_photo() -> np.ndarray:
    """The coffee photograph from scikit-image, downscaled by :data:`PHOTO_SCALE`.

    Returns
    -------
    numpy.ndarray
        ``(300, 450, 3)`` uint8 RGB.
    """
    from skimage import data
    from skimage.transform import rescale

    image = data.coffee().astype(np.float64)
    small = rescale(image, PHOTO_SCALE, channel_axis=-1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def make_nuclei(shape: tuple[int, int] = NUCLEI_SHAPE, seed: int = NUCLEI_SEED) -> np.ndarray:
    """A synthetic fluorescence image of nuclei.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image.
    seed : int
        Seed of the random generator; the same seed gives the same image.

    Returns
    -------
    numpy.ndarray
        ``shape`` uint16: photon counts plus a camera offset of about 100.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    # expected photon counts: an uneven background (vignetting-like falloff plus a tilt)
    r2 = ((yy - h * 0.45) / h) ** 2 + ((xx - w * 0.55) / w) ** 2
    signal = 180.0 + 120.0 * np.exp(-r2 / 0.18) + 40.0 * (xx / w)

    # nuclei: rotated ellipses that do not overlap much, each with its own brightness
    centres: list[tuple[float, float, float]] = []
    tries = 0
    while len(centres) < NUCLEI_COUNT and tries < 5000:
        tries += 1
        a = rng.uniform(7.0, 14.0)
        b = a * rng.uniform(0.6, 1.0)
        cy = rng.uniform(a, h - a)
        cx = rng.uniform(a, w - a)
        if any(np.hypot(cy - y, cx - x) < 0.9 * (a + r) for y, x, r in centres):
            continue
        centres.append((cy, cx, a))
        theta = rng.uniform(0.0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = (u / a) ** 2 + (v / b) ** 2
        # brighter rim-to-centre profile, soft edge
        profile = np.clip(1.0 - inside, 0.0, 1.0) ** 0.35
        signal += rng.uniform(1500.0, 5000.0) * profile

    # chromatin-like texture inside the nuclei, then the optics' blur
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), 1.5)
    signal *= 1.0 + 0.25 * texture / texture.std() * (signal > 400)
    signal = ndimage.gaussian_filter(np.clip(signal, 0.0, None), 1.6)

    # photon noise, camera offset and read noise
    counts = rng.poisson(signal).astype(np.float64)
    counts += 100.0 + rng.normal(0.0, 12.0, shape)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def write_samples(out: Path) -> list[Path]:
    """Write ``photo.png`` and ``nuclei.tif`` into ``out`` (created if needed).

    Parameters
    ----------
    out : pathlib.Path
        The output folder.

    Returns
    -------
    list of pathlib.Path
        The two files written.
    """
    import tifffile
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    photo_path = out / "photo.png"
    nuclei_path = out / "nuclei.tif"
    Image.fromarray(make_photo()).save(photo_path, optimize=True)
    tifffile.imwrite(nuclei_path, make_nuclei(), metadata=None, software=None)
    return [photo_path, nuclei_path]


def main() -> None:
    """Command line: ``python tools/make_sample_data.py [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    args = parser.parse_args()
    for path in write_samples(args.out):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
