"""Training samples: user folders (via the evaluation readers) mixed with synthetic scenes.

Every sample is drawn from a seeded generator, so a run (and a resumed run) sees the same
data in the same order for the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from napari_fbrs.core.training.augment import augment
from napari_fbrs.core.training.clicks_sim import IGNORE
from napari_fbrs.core.training.paste import occlude, transplant
from napari_fbrs.core.training.synthetic import synthetic_sample

__all__ = ["TrainingData"]


class TrainingData:
    """Objects from dataset folders plus ``synthetic`` procedurally generated images.

    Parameters
    ----------
    folders : sequence of path
        Dataset folders in any layout :func:`napari_fbrs.core.evaluation.datasets.open_dataset`
        reads (GrabCut ``data_GT``/``boundary_GT``, ``img``/``gt``, ``images``/``masks``
        with binary masks or instance-label images, ``IMAGE+LABELS`` pairs). A ``(Z, H, W)``
        label stack gives one object per label and z-plane (planes where the label has at
        least 16 pixels), not only its largest plane as in evaluation.
    synthetic : int
        Number of synthetic images in the mix (each index is one fixed generated scene).
    seed : int
        Seed of the synthetic scenes.
    paste : float
        Probability that a drawn sample is composited with a second one
        (:mod:`~napari_fbrs.core.training.paste`): half of them get a new background, half
        an occluder in front of part of the object (a new background where no occluder
        position leaves enough of the object visible).
    border_mirror : float
        Probability that a sample's crop window may reach past the image border, the image
        mirrored there, as the predictor shows it with ``ZoomIn(beyond_border=True)``
        (:func:`~napari_fbrs.core.training.augment.scaled_window`).

    Raises
    ------
    napari_fbrs.core.evaluation.datasets.DatasetError
        A folder cannot be read.
    ValueError
        No data at all.
    """

    def __init__(
        self,
        folders: Sequence[str | os.PathLike[str]] = (),
        synthetic: int = 0,
        seed: int = 0,
        paste: float = 0.0,
        border_mirror: float = 0.0,
    ):
        from napari_fbrs.core.evaluation.datasets import open_dataset

        # every labelled z-plane of a label stack is a training object
        self.datasets = [open_dataset(str(f), stack_planes="all") for f in folders]
        self.sizes = [len(d) for d in self.datasets]
        self.synthetic = int(synthetic)
        self.seed = int(seed)
        if not 0.0 <= paste <= 1.0:
            raise ValueError(f"paste is a probability in [0, 1], not {paste}")
        self.paste = float(paste)
        if not 0.0 <= border_mirror <= 1.0:
            raise ValueError(f"border_mirror is a probability in [0, 1], not {border_mirror}")
        self.border_mirror = float(border_mirror)
        if sum(self.sizes) + self.synthetic <= 0:
            raise ValueError("no training data: give dataset folders and/or synthetic images")

    def __len__(self) -> int:
        return sum(self.sizes) + self.synthetic

    def describe(self) -> str:
        parts = [f"{d.name} ({n} objects)" for d, n in zip(self.datasets, self.sizes, strict=True)]
        if self.synthetic:
            parts.append(f"synthetic ({self.synthetic} images)")
        return ", ".join(parts)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Full-size sample ``index``.

        Returns
        -------
        image : np.ndarray
            ``(H, W, 3)`` RGB: uint8 for 8-bit RGB files, else float32 in ``[0, 1]``.
        target : np.ndarray
            ``(H, W)`` uint8: 0 background, 1 object, ``IGNORE``.
        any_orientation : bool
            Whether upside-down flips are plausible (synthetic scenes).
        """
        from napari_fbrs.core.image import to_unit_rgb

        for dataset, size in zip(self.datasets, self.sizes, strict=True):
            if index < size:
                s = dataset[index]
                if s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3:
                    image = s.image  # 8-bit RGB as it is: augmentation resamples uint8
                else:
                    image = np.moveaxis(to_unit_rgb(s.image), 0, -1)
                target = s.gt.astype(np.uint8)
                if s.ignore is not None:
                    target[s.ignore] = IGNORE
                return np.ascontiguousarray(image), target, False
            index -= size
        if not 0 <= index < self.synthetic:
            raise IndexError("sample index out of range")
        rng = np.random.default_rng([self.seed, 0x5EED, index])
        size = tuple(int(v) for v in rng.integers(256, 481, 2))
        image, mask = synthetic_sample(rng, size)
        return image, mask.astype(np.uint8), True

    def draw(
        self, rng: np.random.Generator, crop: int, min_area: int = 40, attempts: int = 20
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random augmented ``crop x crop`` sample with at least ``min_area`` object pixels.

        Returns
        -------
        image : np.ndarray
            ``(crop, crop, 3)`` float32 in ``[0, 1]``.
        target : np.ndarray
            ``(crop, crop)`` uint8 (0, 1, ``IGNORE``).
        """
        image, target = self._draw_one(rng, crop, min_area, attempts)
        if self.paste and rng.random() < self.paste:
            other, other_target = self._draw_one(rng, crop, min_area, attempts)
            composite = None
            if rng.random() < 0.5:
                composite = occlude(image, target, other, other_target, rng)
                if composite is not None and int((composite[1] == 1).sum()) < min_area:
                    composite = None
            # no room for an occluder: a new background instead
            if composite is None:
                composite = transplant(image, target, other, other_target, rng)
            image, target = composite
        return image, target

    def _draw_one(
        self, rng: np.random.Generator, crop: int, min_area: int, attempts: int
    ) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(attempts):
            image, target, any_orientation = self.load(int(rng.integers(len(self))))
            if not (target == 1).any():
                continue
            image, target = augment(
                image,
                target,
                crop,
                rng,
                vertical_flip=any_orientation,
                border_mirror=self.border_mirror,
            )
            if int((target == 1).sum()) >= min_area:
                return image, target
        raise RuntimeError(f"no sample with an object of {min_area}+ pixels in {attempts} draws")
