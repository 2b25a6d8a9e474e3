"""Clicks per nucleus and 3D IoU with propagation through a z-stack (issue 7's benchmark).

For every nucleus of ``nuclei3d``: the simulated user of the NoC protocol clicks on the
nucleus's middle slice (the middle of its z-extent) until IoU 0.9 or 20 clicks; the
resulting mask is then propagated through the stack with :func:`napari_fbrs.propagate`;
the 3D IoU with the nucleus's labels is measured. Writes JSON (``--out``).

Usage: ``python benchmarks/stack_propagation.py --mode f-BRS-B --out stack.json``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from napari_fbrs.cli import first_click_crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "microscopy",
    )
    ap.add_argument(
        "--stack",
        default=None,
        metavar="IMAGE+LABELS",
        help="another z-stack and its instance labels (default: nuclei3d in --data)",
    )
    ap.add_argument("--model", default="fbrs-lite")
    ap.add_argument("--mode", default="f-BRS-B")
    ap.add_argument("--target-iou", type=float, default=0.9)
    ap.add_argument("--stop-iou", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=None, help="first N nuclei only")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-crop", type=int, default=200, help="ZoomIn min_crop_size")
    ap.add_argument(
        "--first-click-crop",
        type=first_click_crop,
        default=None,
        help="ZoomIn first_click_crop (pixels, auto or off)",
    )
    ap.add_argument("--prob-thresh", type=float, default=0.49, help="Predictor prob_thresh")
    ap.add_argument("--trim-overshoot", action="store_true", help="Predictor(trim_overshoot=True)")
    ap.add_argument("--extra-positive", type=int, default=0, help="propagate(n_extra_positive=...)")
    ap.add_argument("--regrowth", type=float, default=None, help="propagate(regrowth=...)")
    ap.add_argument("--min-contrast", type=float, default=None, help="propagate(min_contrast=...)")
    ap.add_argument(
        "--prior", action="store_true", help="give each slice the previous slice's mask as prior"
    )
    ap.add_argument(
        "--from-gt",
        action="store_true",
        help="propagate from the true middle-slice mask (measures propagation alone)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import tifffile
    import torch

    import napari_fbrs as nf
    from napari_fbrs.core.evaluation.datasets import Sample
    from napari_fbrs.core.evaluation.runner import evaluate_object

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stack:
        image_path, labels_path = (Path(p) for p in args.stack.split("+", 1))
    else:
        image_path = args.data / "nuclei3d_image.tif"
        labels_path = args.data / "nuclei3d_labels.tif"
    volume = tifffile.imread(image_path)
    labels = tifffile.imread(labels_path)
    lo, hi = np.percentile(volume, (0.5, 99.5))  # one window for the whole stack
    net = nf.load_model(args.model, device="cpu")
    zoom = nf.ZoomIn(min_crop_size=args.min_crop, first_click_crop=args.first_click_crop)
    predictor = nf.Predictor(
        net,
        mode=args.mode,
        device="cpu",
        zoom_in=zoom,
        prob_thresh=args.prob_thresh,
        trim_overshoot=args.trim_overshoot,
    )
    ids = [int(i) for i in np.unique(labels) if i != 0][: args.limit]
    per_nucleus = []
    t0 = time.perf_counter()
    for obj in ids:
        gt3d = labels == obj
        zs = np.flatnonzero(gt3d.any(axis=(1, 2)))
        z = int((zs[0] + zs[-1]) // 2)
        sample = Sample(name=f"nucleus {obj}", image=volume[z], gt=gt3d[z], ignore=None)
        predictor.set_image(volume[z], contrast_limits=(lo, hi))
        if args.from_gt:  # no clicking: propagation from the true mask
            clicks, iou2d = 0, 1.0
        else:
            result = evaluate_object(
                predictor, sample, max_clicks=20, target_iou=args.target_iou, new_image=False
            )
            clicks = next(
                (i + 1 for i, v in enumerate(result.ious) if v >= args.target_iou),
                len(result.ious),
            )
            iou2d = float(result.ious[clicks - 1])
        mask = gt3d[z].copy() if args.from_gt else predictor.mask.copy()
        if mask.any():
            seg = nf.propagate(
                predictor,
                volume,
                z,
                mask,
                stop_iou=args.stop_iou,
                use_prior=args.prior,
                n_extra_positive=args.extra_positive,
                regrowth=args.regrowth,
                min_contrast=args.min_contrast,
                contrast_limits=(lo, hi),
            )
        else:
            seg = np.zeros_like(gt3d)
        inter = np.logical_and(seg, gt3d).sum()
        union = np.logical_or(seg, gt3d).sum()
        per_nucleus.append(
            {
                "id": obj,
                "z": z,
                "slices": int(len(zs)),
                "clicks": clicks,
                "iou2d": iou2d,
                "iou3d": float(inter / union) if union else 0.0,
            }
        )
        print(per_nucleus[-1], flush=True)
    report = {
        "benchmark": "stack_propagation",
        "dataset": str(image_path) if args.stack else "nuclei3d",
        "model": args.model,
        "mode": args.mode,
        "target_iou": args.target_iou,
        "stop_iou": args.stop_iou,
        "min_crop": args.min_crop,
        "first_click_crop": args.first_click_crop,
        "prior": args.prior,
        "prob_thresh": args.prob_thresh,
        "trim_overshoot": args.trim_overshoot,
        "extra_positive": args.extra_positive,
        "regrowth": args.regrowth,
        "min_contrast": args.min_contrast,
        "from_gt": args.from_gt,
        "nuclei": len(per_nucleus),
        "mean_clicks": float(np.mean([r["clicks"] for r in per_nucleus])),
        "mean_iou3d": float(np.mean([r["iou3d"] for r in per_nucleus])),
        "seconds": time.perf_counter() - t0,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "per_nucleus": per_nucleus,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({k: v for k, v in report.items() if k != "per_nucleus"}))


if __name__ == "__main__":
    main()
