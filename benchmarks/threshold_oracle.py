"""How far intensity alone gets on nuclei3d: the best threshold per nucleus, chosen with its labels.

A reference point for issue 7's goal (3D IoU >= 0.80; IoU 0.9 on the middle slice within
two clicks). For every nucleus, the image (lightly smoothed: sigma 0.5 px in z, 0.7 px in
y and x) is thresholded at each percentile 2..99 of the nucleus's bounding box (padded by
4 px); the connected component that overlaps the nucleus most is compared with it, and the
best IoU over all levels is kept. This is an *oracle*: the level is chosen with the answer.
Two variants: on the nucleus's middle slice (2D, as the NoC robot sees it) and on the whole
stack (3D components, as propagation must separate it from its neighbours).

Two more oracles bound what any method working from these intensities can reach:

* *foreground*: the best single threshold of the smoothed stack against the union of all
  labels (IoU), i.e. how well the image separates nuclei from background at all;
* *split*: the true foreground is given, and a seeded watershed from one true seed per nucleus
  (its most interior voxel) divides it, on the true foreground's distance transform (shape
  alone), the inverted smoothed intensity, or its gradient magnitude. Only the boundaries
  between touching nuclei are left to find, with more help than clicks give;
* *threshold + split*: the same distance-transform split from the true seeds, but on the
  foreground thresholded at the best level per nucleus (both oracles).

Writes JSON.

Usage: ``python benchmarks/threshold_oracle.py --out oracle.json``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def best_threshold_iou(image: np.ndarray, truth: np.ndarray, pad: int = 4) -> float:
    """Best IoU of a thresholded connected component with ``truth`` (same shape, any ndim).

    Parameters
    ----------
    image : np.ndarray
        Float image, 2D ``(Y, X)`` or 3D ``(Z, Y, X)``.
    truth : np.ndarray
        Bool mask of one object, same shape.
    pad : int
        Margin around the object's bounding box in which levels and components are taken.
    """
    from scipy import ndimage

    box = ndimage.find_objects(truth.astype(np.uint8))[0]
    box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
    sub, gt = image[box], truth[box]
    best = 0.0
    for level in np.percentile(sub, np.arange(2, 100)):
        components, _ = ndimage.label(sub >= level)
        counts = np.bincount(components[gt])
        if len(counts) < 2 or counts[1:].max() == 0:
            continue
        found = components == (int(np.argmax(counts[1:])) + 1)
        best = max(best, float((found & gt).sum() / (found | gt).sum()))
    return best


def best_foreground_iou(image: np.ndarray, foreground: np.ndarray) -> float:
    """Best IoU of ``image >= level`` with ``foreground`` over the percentiles 2..99 of ``image``.

    Parameters
    ----------
    image : np.ndarray
        Float image, any shape.
    foreground : np.ndarray
        Bool mask of the same shape (all objects together).
    """
    best = 0.0
    for level in np.percentile(image, np.arange(2, 100)):
        found = image >= level
        best = max(best, float((found & foreground).sum() / (found | foreground).sum()))
    return best


def interior_seeds(labels: np.ndarray) -> np.ndarray:
    """One marker voxel per label: its voxel farthest from the background (same shape, int32)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(labels > 0)
    seeds = np.zeros(labels.shape, np.int32)
    for label in (int(v) for v in np.unique(labels) if v):
        inside = np.where(labels == label, depth, 0.0)
        seeds[np.unravel_index(int(np.argmax(inside)), labels.shape)] = label
    return seeds


def seeded_split_ious(
    labels: np.ndarray, seeds: np.ndarray, elevation: np.ndarray
) -> dict[int, float]:
    """Per-label IoU after a watershed of the true foreground from the true seeds.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels, ``(Z, Y, X)``; 0 is background.
    seeds : np.ndarray
        Integer markers of the same shape (:func:`interior_seeds`).
    elevation : np.ndarray
        Float ``(Z, Y, X)`` landscape the watershed floods (low values first).

    Returns
    -------
    dict
        Label -> IoU of its watershed region with its true mask.
    """
    from skimage.segmentation import watershed

    regions = watershed(elevation, seeds, mask=labels > 0)
    ious = {}
    for label in (int(v) for v in np.unique(labels) if v):
        mine, truth = regions == label, labels == label
        ious[label] = float((mine & truth).sum() / (mine | truth).sum())
    return ious


def best_threshold_split_iou(
    image: np.ndarray, labels: np.ndarray, seeds: np.ndarray, label: int, pad: int = 4
) -> float:
    """Best IoU of ``label``'s watershed region on a thresholded foreground, over its levels.

    Parameters
    ----------
    image : np.ndarray
        Float ``(Z, Y, X)`` image.
    labels : np.ndarray
        Integer instance labels of the same shape.
    seeds : np.ndarray
        Integer ``(Z, Y, X)`` markers: one voxel per label, valued with the label.
    label : int
        The nucleus scored; levels are the percentiles 2..98 (step 2) of its padded box.
    pad : int
        Margin around the nucleus's bounding box, for the levels.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    truth = labels == label
    box = ndimage.find_objects(truth.astype(np.uint8))[0]
    box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
    best = 0.0
    # levels from around the nucleus, the split over the whole stack: a neighbour's seed
    # may lie outside the box, and without it the box's blob would all go to this nucleus
    for level in np.percentile(image[box], np.arange(2, 100, 2)):
        found = image >= level
        regions = watershed(-ndimage.distance_transform_edt(found), seeds, mask=found)
        mine = regions == label
        best = max(best, float((mine & truth).sum() / (mine | truth).sum()))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "microscopy",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import tifffile
    from scipy import ndimage

    image = tifffile.imread(args.data / "nuclei3d_image.tif").astype(np.float32)
    labels = tifffile.imread(args.data / "nuclei3d_labels.tif")
    smooth = ndimage.gaussian_filter(image, (0.5, 0.7, 0.7))
    rows = []
    for label in (int(v) for v in np.unique(labels) if v):
        truth = labels == label
        z_extent = np.nonzero(truth.any(axis=(1, 2)))[0]
        z = int(z_extent[len(z_extent) // 2])
        rows.append(
            {
                "id": label,
                "z": z,
                "iou2d_middle": best_threshold_iou(smooth[z], truth[z]),
                "iou3d": best_threshold_iou(smooth, truth),
            }
        )
    from skimage.filters import sobel

    foreground = labels > 0
    splits = {
        "distance": -ndimage.distance_transform_edt(foreground),
        "intensity": -smooth,
        "gradient": sobel(smooth),
    }
    seeds = interior_seeds(labels)
    split_ious = {name: seeded_split_ious(labels, seeds, elev) for name, elev in splits.items()}
    for row in rows:
        for name, ious in split_ious.items():
            row[f"iou3d_split_{name}"] = ious[row["id"]]
        row["iou3d_threshold_split"] = best_threshold_split_iou(smooth, labels, seeds, row["id"])
    threshold_split = np.array([r["iou3d_threshold_split"] for r in rows])
    iou2d = np.array([r["iou2d_middle"] for r in rows])
    iou3d = np.array([r["iou3d"] for r in rows])
    result = {
        "benchmark": "threshold_oracle",
        "dataset": "nuclei3d",
        "nuclei": len(rows),
        "mean_iou2d_middle": float(iou2d.mean()),
        "fraction_iou2d_middle_ge_0.9": float((iou2d >= 0.9).mean()),
        "mean_iou3d": float(iou3d.mean()),
        "fraction_iou3d_ge_0.8": float((iou3d >= 0.8).mean()),
        "foreground_iou": best_foreground_iou(smooth, foreground),
        "mean_iou3d_threshold_split": float(threshold_split.mean()),
        **{
            f"mean_iou3d_split_{name}": float(np.mean(list(ious.values())))
            for name, ious in split_ious.items()
        },
        **{
            f"fraction_iou3d_split_{name}_ge_0.8": float(np.mean([v >= 0.8 for v in ious.values()]))
            for name, ious in split_ious.items()
        },
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


if __name__ == "__main__":
    main()
