"""Pack training data into a compact folder for a training run on another machine.

Writes ``OUT/coco/{img,gt}`` (COCO_MVal resized so the longer side is at most
``--max-side``), ``OUT/synth/{img,gt}`` (pre-generated synthetic scenes, so the training
machine spends no time generating them) and ``OUT/init.pt`` (the ImageNet-initialised
``fbrs_lite`` weights in fp16, so the machine needs no ``efficientnet-lite0`` package).
Masks are PNG with 255 = object, 0 = background; images JPEG.

Usage: ``python tools/pack_training_data.py ../shared/datasets/COCO_MVal .trainpack``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def _save(img: np.ndarray, gt: np.ndarray, out: Path, name: str, quality: int) -> None:
    Image.fromarray(img).save(out / "img" / f"{name}.jpg", quality=quality)
    Image.fromarray(gt).save(out / "gt" / f"{name}.png", optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("coco", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-side", type=int, default=400)
    ap.add_argument("--synthetic", type=int, default=800)
    ap.add_argument("--quality", type=int, default=88)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    coco = args.out / "coco"
    for sub in ("img", "gt"):
        (coco / sub).mkdir(parents=True, exist_ok=True)
    for path in sorted((args.coco / "img").glob("*.jpg")):
        img = Image.open(path).convert("RGB")
        gt = Image.open(args.coco / "gt" / f"{path.stem}.png").convert("L")
        scale = min(1.0, args.max_side / max(img.size))
        if scale < 1.0:
            size = (round(img.size[0] * scale), round(img.size[1] * scale))
            img = img.resize(size, Image.BILINEAR)
            gt = gt.resize(size, Image.NEAREST)
        gt_arr = np.where(np.asarray(gt) > 127, 255, 0).astype(np.uint8)
        _save(np.asarray(img), gt_arr, coco, path.stem, args.quality)

    from napari_fbrs.core.training.synthetic import synthetic_sample

    synth = args.out / "synth"
    for sub in ("img", "gt"):
        (synth / sub).mkdir(parents=True, exist_ok=True)
    for i in range(args.synthetic):
        rng = np.random.default_rng([args.seed, 0x5EED, i])
        size = tuple(int(v) for v in rng.integers(256, 401, 2))
        image, mask = synthetic_sample(rng, size)
        img = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        _save(img, np.where(mask == 1, 255, 0).astype(np.uint8), synth, f"s{i:05d}", args.quality)

    import torch

    from napari_fbrs.core.training.checkpoint import ARCH, init_model

    net = init_model("imagenet")
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save(
        {"arch": ARCH, "state_dict": state, "meta": {"init": "imagenet"}}, args.out / "init.pt"
    )


if __name__ == "__main__":
    main()
