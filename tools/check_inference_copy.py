"""Check that the prediction copy of each network gives the network's outputs on a device.

The test suite checks this on the CPU (``tests/test_inference_network.py``); this script
does it where the tests cannot run, e.g. on a lent GPU machine (``tools/gpu_check.sh``):
for every registered f-BRS and RITM architecture (the conformance fixtures' deterministic
weight fill) and the bundled ``fbrs-lite``, it compares on ``--device``

* the logits of :func:`~napari_fbrs.core.models.inference.inference_network` with the
  network's, and the features at every f-BRS site;
* for trained weights (``fbrs-lite``, checkpoint files), the masks of two f-BRS-B
  predictors over three clicks on a synthetic image, one on the copy and one on the
  network itself (``inference_copy=False``). Not for the deterministic fills: their L-BFGS
  paths are chaotic (a 1e-6 change of the features can move the mask by a third, see
  ``tests/test_conformance_predictor.py``), so their masks say nothing about the copy.

It prints one line per model and writes JSON to ``--out``; the exit status is 1 when a
model's largest logit difference exceeds ``--tolerance`` times its largest logit or the
masks of the two predictors differ by more than 1 % (IoU < 0.99).

GPUs may run float32 convolutions in TF32 (PyTorch's default for cuDNN convolutions), so
differences of about 1e-3 relative are expected there; ``--no-tf32`` turns it off.

Examples
--------
::

    python tools/check_inference_copy.py --device cuda --out copy_check.json
    python tools/check_inference_copy.py --device cpu --models fbrs-lite hrnet18_ocr64
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))


def _image(h: int = 240, w: int = 320) -> np.ndarray:
    """A bright disk with a darker notch on a textured background, uint8 RGB."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - 120) ** 2 + (xx - 150) ** 2 < 60**2
    notch = (yy - 120) ** 2 + (xx - 200) ** 2 < 25**2
    img = rng.integers(20, 80, (h, w, 3))
    img[disk] = [200, 150, 90]
    img[notch] = [90, 60, 40]
    return img.astype(np.uint8)


def check_model(spec: str, device: str) -> dict[str, Any]:
    """Compare the copy with the network for one model; see the module docstring."""
    import torch

    import napari_fbrs as nf
    from click_latency import load_net
    from napari_fbrs.core.clicks import Click, clicks_to_points
    from napari_fbrs.core.models.inference import inference_network

    net, weights = load_net(spec, device)
    net = net.to(device)
    fast = inference_network(net)
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 160, 224, generator=g).to(device)
    clicks = [Click(60, 90, True), Click(120, 30, False)]
    points = clicks_to_points([clicks, clicks], with_index=net.uses_prev_mask).to(device)
    prev = torch.rand(2, 1, 160, 224, generator=g).to(device) if net.uses_prev_mask else None
    with torch.no_grad():
        maps = net.encode_clicks(image, points, prev)
        ref = net.logits_from_maps(image, maps)
        logit_diff = float((fast.logits_from_maps(image, maps) - ref).abs().max())
        scale = float(ref.abs().max())
        site_diff = 0.0
        for site in sorted(set(net.brs_sites.values())):
            a, _ = net.site_features(site, image, maps)
            b, _ = fast.site_features(site, image, maps)
            site_diff = max(site_diff, float((a - b).abs().max() / (a.abs().max() + 1e-12)))
    row = {
        "model": spec,
        "weights": weights,
        "max_abs_logit_diff": logit_diff,
        "max_abs_logit": scale,
        "max_rel_site_diff": site_diff,
    }
    if weights != "checkpoint":
        return row
    masks = []
    for copy in (True, False):
        p = nf.Predictor(net, mode="f-BRS-B", device=device, inference_copy=copy)
        p.set_image(_image())
        for y, x, positive in [(120, 150, True), (120, 205, False), (40, 40, False)]:
            p.add_click(y, x, positive)
        masks.append(p.mask)
    union = np.logical_or(*masks).sum()
    iou = float(np.logical_and(*masks).sum() / union) if union else 1.0
    return {**row, "fbrs_b_mask_iou": iou, "mask_pixels": [int(m.sum()) for m in masks]}


def main(argv: list[str] | None = None) -> int:
    from click_latency import DEFAULT_MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cpu, mps or auto")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--tolerance", type=float, default=1e-2, help="relative logit bound")
    parser.add_argument("--no-tf32", action="store_true", help="full float32 convolutions")
    parser.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = parser.parse_args(argv)

    import torch

    from napari_fbrs.core.models.registry import resolve_device

    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    device = str(resolve_device(args.device))
    rows, failed = [], []
    for spec in args.models:
        row = check_model(spec, device)
        rows.append(row)
        bad = (
            row["max_abs_logit_diff"] > args.tolerance * max(row["max_abs_logit"], 1.0)
            or row.get("fbrs_b_mask_iou", 1.0) < 0.99
        )
        if bad:
            failed.append(spec)
        masks = (
            f", f-BRS-B masks IoU {row['fbrs_b_mask_iou']:.4f} {row['mask_pixels']}"
            if "fbrs_b_mask_iou" in row
            else ""
        )
        print(
            f"{spec:21s} logits max |diff| {row['max_abs_logit_diff']:.2e} (max |logit| "
            f"{row['max_abs_logit']:.2f}), sites max rel diff {row['max_rel_site_diff']:.2e}"
            + masks
            + ("  FAILED" if bad else "")
        )
    result = {
        "check": "inference_copy",
        "device": device,
        "torch": torch.__version__,
        "tf32": not args.no_tf32 and device.startswith("cuda"),
        "models": rows,
        "failed": failed,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
