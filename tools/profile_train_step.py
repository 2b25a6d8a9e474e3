"""Where a training step of ``fbrs-lite`` spends its time (forward, backward, error clicks).

A step is one forward+backward+optimiser step plus 0-3 no-gradient forwards, each followed by
the simulated corrective clicks (``error_clicks_torch``). Prints milliseconds per part on
synthetic batches. Measured on an H100 (2026-11-26, batch 32, crop 320, bf16): forward
no-grad 10.1 ms (8.0 channels-last), error clicks 14.4 ms, forward+backward+step 44.8 ms
(37.0 channels-last): the GPU step, not data loading, bounds training at 12-16 steps/s.

Usage: ``python tools/profile_train_step.py [--device cuda] [--batch 32] [--crop 320]``
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    from napari_fbrs.core.training.checkpoint import init_model
    from napari_fbrs.core.training.loop import error_clicks_torch

    dev = torch.device(args.device)
    b, s = args.batch, args.crop
    net = init_model("fbrs-lite").to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-6)
    images = torch.rand(b, 3, s, s, device=dev)
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    disk = ((yy - s // 2) ** 2 + (xx - s // 2) ** 2 < (s // 3) ** 2).to(torch.uint8)
    targets = disk[None].repeat(b, 1, 1).to(dev)
    points = torch.full((b, 6, 2), -1.0, device=dev)
    points[:, 0] = s // 2
    empty = torch.zeros(b, s, s, dtype=torch.bool, device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(name: str, fn) -> None:
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        sync()
        print(f"{name}: {(time.perf_counter() - t) / args.repeats * 1000:.1f} ms", flush=True)

    def forward() -> None:
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            net(images, points, None)

    def forward_backward() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = net(images, points, None)["instances"].float()
        opt.zero_grad()
        out.mean().backward()
        opt.step()

    for layout in ("contiguous", "channels-last"):
        if layout == "channels-last":
            net.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        net.eval()
        timed(f"forward no-grad ({layout})", forward)
        net.train()
        timed(f"forward+backward+step ({layout})", forward_backward)
    timed("error clicks (one per image)", lambda: error_clicks_torch(empty, targets))


if __name__ == "__main__":
    main()
