"""How far intensity alone gets on nuclei3d: the best threshold per nucleus, chosen with its labels.

A reference point for issue 7's goal (3D IoU >= 0.80; IoU 0.9 on the middle slice within
two clicks). For every nucleus, the image (lightly smoothed: sigma 0.5 px in z, 0.7 px in
y and x) is thresholded at each percentile 2..99 of the nucleus's bounding box (padded by
4 px); the connected component that overlaps the nucleus most is compared with it, and the
best IoU over all levels is kept. This is an *oracle*: the level is chosen with the answer.
Two variants: on the nucleus's middle slice (2D, as the NoC robot sees it) and on the whole
stack (3D components, as propagation must separate it from its neighbours). Writes JSON.

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
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


if __name__ == "__main__":
    main()
