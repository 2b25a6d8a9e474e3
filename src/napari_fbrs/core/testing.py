"""Helpers for tests and conformance checks: the deterministic weight fill and a tiny net.

Kept in the package (not in ``tests/``) so that benchmarks and users' own plugin tests can
use them too. Nothing here is imported by the rest of the core.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_fbrs.core.clicks import distance_maps
from napari_fbrs.core.models.base import InteractiveNet

__all__ = [
    "TinyNet",
    "deterministic_fill_",
    "deterministic_state_dict",
    "disk_net",
    "fixture_agreement",
    "fixture_net",
    "load_fixture",
    "reference_predictor",
]


def _fill_value(key: str, shape: tuple[int, ...], fill_gain: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    f64 = torch.float64
    if key.endswith("running_var"):
        return 1 + torch.rand(shape, generator=g, dtype=f64)
    if key.endswith("running_mean") or key.endswith("bias"):
        return 0.1 * torch.randn(shape, generator=g, dtype=f64)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=g, dtype=f64) * math.sqrt(fill_gain / fan_in)
    return 1 + 0.1 * torch.randn(shape, generator=g, dtype=f64)


def deterministic_state_dict(
    state_dict: Mapping[str, torch.Tensor], fill_gain: float
) -> dict[str, torch.Tensor]:
    """The conformance fixtures' weight fill (``shared/conformance/README.md``).

    Every floating-point entry is replaced by values drawn from a generator seeded with the
    CRC32 of its key; integer buffers (``num_batches_tracked``) are kept.
    """
    out = {}
    for key, value in state_dict.items():
        if value.is_floating_point():
            out[key] = _fill_value(key, tuple(value.shape), fill_gain).to(value.dtype)
        else:
            out[key] = value.clone()
    return out


def deterministic_fill_(net: nn.Module, fill_gain: float) -> nn.Module:
    """Fill ``net``'s parameters and buffers in place with the fixtures' recipe; returns it."""
    net.load_state_dict(deterministic_state_dict(net.state_dict(), fill_gain))
    return net


class TinyNet(InteractiveNet):
    """A very small click network with all three f-BRS sites, for fast tests.

    Not a real model: an encoder of two strided convolutions (stride 4), a middle block
    (site ``"A"`` before it, ``"B"`` after it), and a decoder conv (site ``"C"`` before
    the 1x1 output).
    """

    def __init__(self, channels: int = 8, norm_radius: float = 260.0, seed: int | None = 0):
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.norm_radius = norm_radius
        self.rgb_conv = nn.Conv2d(5, 3, 1)
        self.enc = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.mid = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.dec = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(channels, 1, 1)
        self.channels = channels

    def encode_clicks(self, image, points, prev_mask=None):
        return distance_maps(points, image.shape[2], image.shape[3], self.norm_radius)

    def logits_from_maps(self, image, maps):
        feats, ctx = self.site_features("A", image, maps)
        return self.logits_from_site("A", feats, ctx)

    def site_features(self, site: str, image, maps) -> tuple[torch.Tensor, Any]:
        x = self.enc(self.rgb_conv(torch.cat([image, maps], dim=1)))
        if site == "A":
            return x, None
        x = self.mid(x)
        if site == "B":
            return x, None
        if site == "C":
            return self.dec(x), None
        raise ValueError(f"unknown site {site!r}")

    def logits_from_site(self, site: str, features, context):
        x = features
        if site == "A":
            x = self.mid(x)
        if site in ("A", "B"):
            x = self.dec(x)
        return self.out(x)

    def site_channels(self, site: str) -> int:
        return self.channels


def tiny_net_forward_check(net: TinyNet, size: tuple[int, int] = (32, 40)) -> torch.Tensor:
    """Run a forward pass on a random image (used by import smoke tests)."""
    img = torch.rand(1, 3, *size)
    pts = torch.tensor([[[5.0, 6.0], [-1.0, -1.0]]])
    return F.sigmoid(net(img, pts)["instances"])


def reference_predictor(net: InteractiveNet, mode: str):
    """A CPU predictor with the settings that made the conformance fixtures'
    ``<MODE>_probs`` (``shared/conformance/README.md``: flip, ZoomIn 400/1/1.4/200/0.5,
    threshold 0.49, L-BFGS-B maxfun 20, each mode's default network clicks)."""
    from napari_fbrs.core.predictor import Predictor
    from napari_fbrs.core.transforms import ZoomIn

    zoom = ZoomIn(
        target_size=400, skip_clicks=1, expansion_ratio=1.4, min_crop_size=200, recompute_iou=0.5
    )
    return Predictor(
        net, mode=mode, device="cpu", with_flip=True, zoom_in=zoom, prob_thresh=0.49,
        lbfgs_maxfun=20,
    )  # fmt: skip


def fixture_agreement(prob, ref) -> tuple[float, float]:
    """``(IoU of the masks at 0.49, mean |prob - ref|)`` of two ``(H, W)`` maps: the
    quantities the conformance bounds are stated in."""
    import numpy as np

    ours, theirs = np.asarray(prob) >= 0.49, np.asarray(ref) >= 0.49
    union = np.logical_or(ours, theirs).sum()
    iou = float(np.logical_and(ours, theirs).sum() / union) if union else 1.0
    return iou, float(np.abs(np.asarray(prob, np.float32) - np.asarray(ref, np.float32)).mean())


def disk_net(radius: float = 8.0, neg_gain: float = 20.0) -> TinyNet:
    """The ``tiny_test`` network with hand-set weights whose logits are
    ``k * (t - pos_map) + g * (neg_map - 1)``: a disk of ``radius`` pixels around positive
    clicks, cut around negative ones (less for a small ``g = neg_gain``). Deterministic, so
    replays reproduce labels exactly; used by tests and benchmarks of the session machinery."""
    from napari_fbrs.core.models.registry import build_model

    net = build_model("tiny_test", norm_radius=20.0)
    k = 20.0
    t = float(math.tanh(2.0 * radius / 20.0))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.rgb_conv.weight[0, 3, 0, 0] = 1.0  # positive distance map
        net.rgb_conv.weight[1, 4, 0, 0] = 1.0  # negative distance map
        for conv in (net.enc[0], net.enc[2], net.mid[0], net.dec[0]):
            conv.weight[0, 0, 1, 1] = 1.0
            conv.weight[1, 1, 1, 1] = 1.0
        net.out.weight[0, 0, 0, 0] = -k
        net.out.weight[0, 1, 0, 0] = neg_gain
        net.out.bias[0] = k * t - neg_gain
    return net.eval()


def load_fixture(conformance_dir, arch: str) -> tuple[dict, Any, Any]:
    """``(meta, ref, image)`` of a conformance fixture: ``<arch>.meta.json`` as a dict, the
    opened ``<arch>.npz`` and ``input.png`` as an ``(H, W, 3)`` uint8 array."""
    import json
    from pathlib import Path

    import numpy as np
    from skimage.io import imread

    folder = Path(conformance_dir)
    meta = json.loads((folder / f"{arch}.meta.json").read_text())
    return meta, np.load(folder / f"{arch}.npz"), imread(folder / "input.png")


def fixture_net(arch: str, fill_gain: float) -> InteractiveNet:
    """Architecture ``arch`` in eval mode, filled as the fixtures are, gradients off."""
    from napari_fbrs.core.models.registry import build_model

    net = deterministic_fill_(build_model(arch), fill_gain).eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net
