"""``fbrs_lite`` and ``fbrs_lite2``: the compact click-segmentation networks of the bundled
model (``fbrs_lite2`` since its version 3).

An EfficientNet-Lite0 encoder (Lite2 for ``fbrs_lite2``; the ImageNet layer layout,
written here so that inference needs nothing but this module and a checkpoint), a light
DeepLabV3+-style decoder built from separable convolutions, and early fusion of the click
maps into the stem.

Data flow and f-BRS sites (strides relative to the input)::

    image (3) ---- stem conv s2 --+-- blocks ... f4 (24, s4) ... f16 (112) ... f32 (320)
    maps (3) -- click stem s2 ----+                                        |
                                                                  site A = f32
    up(f32) ++ f16 -> ASPP (s16) -> up to s4 ++ proj(f4)          site B (96 + 32)
    -> 2 separable convs                                          site C (channels)
    -> 1x1 classifier -> logits (B, 1, H/4, W/4)

``maps`` are the two f-BRS distance maps (positive, negative; ``tanh(2 d / 260)``) plus the
previous prediction as a third channel (RITM-style iterative input), so
``uses_prev_mask = True``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_fbrs.core.clicks import distance_maps
from napari_fbrs.core.models.base import InteractiveNet
from napari_fbrs.core.models.layers import SeparableConv2d, conv_bn_relu

__all__ = [
    "EFFICIENTNET_LITE0_STAGES",
    "EFFICIENTNET_LITE_STAGES",
    "LiteEncoder",
    "LiteNet",
    "build_lite",
]

Stages = tuple[tuple[int, int, int, int, int], ...]

#: (expand ratio, kernel, stride, out channels, repeats) per stage of EfficientNet-Lite0.
EFFICIENTNET_LITE0_STAGES: Stages = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def _scaled_stages(width: float, depth: float) -> Stages:
    """Lite0's stages scaled as EfficientNet scales its variants: widths times ``width``
    rounded to a multiple of 8, repeats times ``depth`` rounded up; the Lite models keep
    the repeats of the first and last stages (and the stem's width) as they are."""
    out = []
    for i, (expand, kernel, stride, cout, repeats) in enumerate(EFFICIENTNET_LITE0_STAGES):
        scaled = max(8, int(cout * width + 4) // 8 * 8)
        cout = scaled + 8 if scaled < 0.9 * cout * width else scaled
        if 0 < i < len(EFFICIENTNET_LITE0_STAGES) - 1:
            repeats = math.ceil(repeats * depth)
        out.append((expand, kernel, stride, cout, repeats))
    return tuple(out)


#: The stages per variant (Lite2: widths x1.1, depths x1.2; checked against the ImageNet
#: release files in the tests).
EFFICIENTNET_LITE_STAGES: dict[str, Stages] = {
    "lite0": EFFICIENTNET_LITE0_STAGES,
    "lite2": _scaled_stages(1.1, 1.2),
}
STEM_CHANNELS = 32
# Stages whose last block gives the stride-4 and stride-16 features (stride 32: the last).
_STAGE_F4, _STAGE_F16 = 1, 4


def _bn(channels: int) -> nn.BatchNorm2d:
    # eps of the TensorFlow-trained ImageNet weights
    return nn.BatchNorm2d(channels, eps=1e-3)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the "Lite" variant).

    Keys: ``expand.{0,1}`` (absent when ``expand_ratio == 1``), ``depthwise.{0,1}``,
    ``project.{0,1}``.
    """

    def __init__(self, cin: int, cout: int, expand_ratio: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand_ratio
        self.expand = (
            nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), _bn(mid), nn.ReLU6(inplace=True))
            if expand_ratio != 1
            else None
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False),
            _bn(mid),
            nn.ReLU6(inplace=True),
        )
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), _bn(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class LiteEncoder(nn.Module):
    """EfficientNet-Lite feature extractor (no classification head).

    Parameters
    ----------
    variant : str
        A key of :data:`EFFICIENTNET_LITE_STAGES` (``"lite0"``: 16 blocks, ``"lite2"``: 21).

    Keys: ``stem.{0,1}`` (3x3 stride-2 conv, norm), ``blocks.<i>.*`` for the blocks.
    """

    def __init__(self, variant: str = "lite0"):
        super().__init__()
        if variant not in EFFICIENTNET_LITE_STAGES:
            known = ", ".join(EFFICIENTNET_LITE_STAGES)
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {known}")
        self.variant = variant
        self.stages = EFFICIENTNET_LITE_STAGES[variant]
        self.stem = nn.Sequential(
            nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False), _bn(STEM_CHANNELS)
        )
        blocks = []
        stage_ends = []
        cin = STEM_CHANNELS
        for expand, kernel, stride, cout, repeats in self.stages:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
            stage_ends.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        self._f4, self._f16 = stage_ends[_STAGE_F4], stage_ends[_STAGE_F16]

    def channels(self, stride: int) -> int:
        """Channels of the stride-4, -16 or -32 feature."""
        stage = {4: _STAGE_F4, 16: _STAGE_F16, 32: len(self.stages) - 1}[stride]
        return self.stages[stage][3]

    def forward(
        self, x: torch.Tensor, stem_extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the stride-4, -16 and -32 features ``(f4, f16, f32)``.

        ``stem_extra`` is added to the stem's normalised output before its activation (the
        click fusion), shape ``(B, 32, H/2, W/2)``.
        """
        x = self.stem(x)
        if stem_extra is not None:
            x = x + stem_extra
        x = F.relu6(x)
        f4 = f16 = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self._f4:
                f4 = x
            elif i == self._f16:
                f16 = x
        return f4, f16, x


def _dilated_separable(cin: int, cout: int, rate: int) -> nn.Sequential:
    """Dilated depthwise 3x3, pointwise 1x1, norm, ReLU (``SeparableConv2d`` has no dilation)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=rate, dilation=rate, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Small atrous spatial pyramid pooling with separable dilated branches.

    Keys: ``branches.0`` (1x1), ``branches.<1..>`` (separable, dilated), ``pool`` (image
    pooling 1x1), ``project`` (1x1 fusing all branches).
    """

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (2, 4, 6)):
        super().__init__()
        branches: list[nn.Module] = [conv_bn_relu(cin, cout, 1)]
        for r in rates:
            branches.append(_dilated_separable(cin, cout, r))
        self.branches = nn.ModuleList(branches)
        # no norm on the pooled branch: it is 1x1 and the batch may be a single image
        self.pool = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(cout * (len(branches) + 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        pooled = self.pool(F.adaptive_avg_pool2d(x, 1))
        outs.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, dim=1))


class LiteNet(InteractiveNet):
    """EfficientNet-Lite + light DeepLabV3+ decoder, with click maps fused at the stem.

    Parameters
    ----------
    channels : int
        Width of the ASPP and of the decoder (site ``"C"`` has this many channels).
    skip_channels : int
        Width of the stride-4 skip projection.
    norm_radius : float
        Distance normalisation of the click maps (260 as in the f-BRS paper).
    encoder : str
        EfficientNet-Lite variant of the encoder: ``"lite0"`` (``fbrs_lite``) or
        ``"lite2"`` (``fbrs_lite2``).
    """

    input_normalization = "imagenet"
    uses_prev_mask = True
    # maps are (positive, negative, previous mask): DistMap-BRS corrects channels 0 and 1
    distance_maps_channel = 0

    def __init__(
        self,
        channels: int = 96,
        skip_channels: int = 32,
        norm_radius: float = 260.0,
        encoder: str = "lite0",
    ):
        super().__init__()
        self.channels = channels
        self.skip_channels = skip_channels
        self.norm_radius = float(norm_radius)
        # click stem: 3 maps -> stem resolution and width; the last conv starts at zero so an
        # ImageNet-initialised encoder sees unchanged features at the start of training
        self.click_stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, STEM_CHANNELS, 1),
        )
        nn.init.zeros_(self.click_stem[3].weight)
        nn.init.zeros_(self.click_stem[3].bias)
        self.encoder = LiteEncoder(encoder)
        c4, c16, c32 = (self.encoder.channels(s) for s in (4, 16, 32))
        self.aspp = ASPP(c16 + c32, channels)
        self.skip = conv_bn_relu(c4, skip_channels, 1)
        self.decoder = nn.Sequential(
            SeparableConv2d(channels + skip_channels, channels, 3, padding=1),
            SeparableConv2d(channels, channels, 3, padding=1),
        )
        self.classifier = nn.Conv2d(channels, 1, 1)

    # -- clicks ------------------------------------------------------------------------
    def encode_clicks(
        self, image: torch.Tensor, points: torch.Tensor, prev_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Distance maps of the clicks plus the previous prediction.

        Parameters
        ----------
        image : torch.Tensor
            ``(B, 3, H, W)`` float32 (only its size and device are used).
        points : torch.Tensor
            ``(B, 2N, 2|3)`` click rows ``(y, x[, index])``, see ``clicks_to_points``.
        prev_mask : torch.Tensor or None
            ``(B, 1, H, W)`` float32 probabilities in ``[0, 1]`` of the previous
            prediction; ``None`` means no previous prediction (zeros).

        Returns
        -------
        torch.Tensor
            ``(B, 3, H, W)`` float32: positive map, negative map, previous mask.
        """
        bsz, _, height, width = image.shape
        maps = distance_maps(points.to(image.device), height, width, self.norm_radius)
        if prev_mask is None:
            prev = image.new_zeros(bsz, 1, height, width)
        else:
            prev = prev_mask.to(device=image.device, dtype=maps.dtype)
            if prev.shape[2:] != (height, width):
                prev = F.interpolate(
                    prev, size=(height, width), mode="bilinear", align_corners=False
                )
        return torch.cat([maps, prev], dim=1)

    # -- network -----------------------------------------------------------------------
    def _encode(self, image: torch.Tensor, maps: torch.Tensor):
        return self.encoder(image, stem_extra=self.click_stem(maps))

    def _from_a(self, f32: torch.Tensor, ctx: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        f4, f16 = ctx
        up = F.interpolate(f32, size=f16.shape[2:], mode="bilinear", align_corners=False)
        x = self.aspp(torch.cat([f16, up], dim=1))
        x = F.interpolate(x, size=f4.shape[2:], mode="bilinear", align_corners=False)
        return torch.cat([x, self.skip(f4)], dim=1)

    def logits_from_maps(self, image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Low-resolution logits ``(B, 1, ceil(H/4), ceil(W/4))`` from image and maps."""
        f4, f16, f32 = self._encode(image, maps)
        return self.classifier(self.decoder(self._from_a(f32, (f4, f16))))

    def site_features(
        self, site: str, image: torch.Tensor, maps: torch.Tensor
    ) -> tuple[torch.Tensor, Any]:
        """Features at ``site`` and the context needed to finish the pass.

        ``"A"``: stride-32 encoder output ``(B, 320|352, h32, w32)``, context ``(f4, f16)``.
        ``"B"``: stride-4 concat of upsampled ASPP output and skip ``(B, channels +
        skip_channels, h4, w4)``, context ``None``.
        ``"C"``: decoder output ``(B, channels, h4, w4)``, context ``None``.
        """
        f4, f16, f32 = self._encode(image, maps)
        if site == "A":
            return f32, (f4, f16)
        x = self._from_a(f32, (f4, f16))
        if site == "B":
            return x, None
        if site == "C":
            return self.decoder(x), None
        raise ValueError(f"unknown f-BRS site {site!r}; use 'A', 'B' or 'C'")

    def logits_from_site(self, site: str, features: torch.Tensor, context: Any) -> torch.Tensor:
        """Finish the pass from (scaled/shifted) site features: logits ``(B, 1, h4, w4)``."""
        if site == "A":
            x = self.decoder(self._from_a(features, context))
        elif site == "B":
            x = self.decoder(features)
        elif site == "C":
            x = features
        else:
            raise ValueError(f"unknown f-BRS site {site!r}; use 'A', 'B' or 'C'")
        return self.classifier(x)

    def site_channels(self, site: str) -> int:
        """Channels at ``site``: 320 (A; 352 for Lite2), ``channels + skip_channels`` (B),
        ``channels`` (C)."""
        if site == "A":
            return self.encoder.channels(32)
        if site == "B":
            return self.channels + self.skip_channels
        if site == "C":
            return self.channels
        raise ValueError(f"unknown f-BRS site {site!r}; use 'A', 'B' or 'C'")


def build_lite(**kw: Any) -> LiteNet:
    """Build an untrained :class:`LiteNet` (keyword arguments go to its constructor)."""
    return LiteNet(**kw)
