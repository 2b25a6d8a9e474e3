"""DeepLabV3+ interactive segmentation network of f-BRS (ResNet-34/50/101 backbones).

The module tree and key names reproduce the official f-BRS checkpoints exactly:
``rgb_conv`` (fuses the image with the two click distance maps), ``feature_extractor``
(dilated ResNet, ``skip_project`` of the stride-4 features, ``aspp``, decoder ``head``)
and the output ``head`` (separable convolutions down to one logit channel).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from napari_fbrs.core.clicks import distance_maps
from napari_fbrs.core.models.base import InteractiveNet
from napari_fbrs.core.models.layers import NormLayer, SeparableConv2d, conv_bn_relu
from napari_fbrs.core.models.resnet import build_resnet

__all__ = ["ASPP", "DeepLabNet", "DeepLabV3Plus", "SepConvHead", "build_deeplab"]

#: backbone -> (channels of c1, channels of c4)
_BACKBONE_CHANNELS: dict[str, tuple[int, int]] = {
    "resnet34": (64, 512),
    "resnet50": (256, 2048),
    "resnet101": (256, 2048),
}
_SKIP_CHANNELS = 32
_ATROUS_RATES = (12, 24, 36)


def _upsample(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    # f-BRS interpolates with align_corners=True everywhere.
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class _SkipProject(nn.Module):
    """1x1 conv + norm + ReLU to 32 channels. Keys: ``skip_project.{0,1}``."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer):
        super().__init__()
        self.skip_project = conv_bn_relu(in_channels, out_channels, 1, norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip_project(x)


class _ImagePooling(nn.Module):
    """ASPP image-level branch. Keys: ``gap.{1,2}`` (``gap.0`` is the pooling)."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer):
        super().__init__()
        self.gap = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        # Bilinear upsampling of a 1x1 map is a constant map: a broadcast view is enough.
        pooled = self.gap(x)
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (1x1, three dilated 3x3, image pooling) + projection.

    Keys: ``concurent.{0..4}`` (sic, the official spelling) and ``project.{0,1}``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        atrous_rates=_ATROUS_RATES,
        project_dropout: float = 0.5,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        branches: list[nn.Module] = [
            conv_bn_relu(in_channels, out_channels, 1, norm_layer=norm_layer)
        ]
        for rate in atrous_rates:
            branches.append(
                conv_bn_relu(
                    in_channels, out_channels, 3, padding=rate, dilation=rate, norm_layer=norm_layer
                )
            )
        branches.append(_ImagePooling(in_channels, out_channels, norm_layer))
        self.concurent = nn.ModuleList(branches)
        project: list[nn.Module] = list(
            conv_bn_relu(len(branches) * out_channels, out_channels, 1, norm_layer=norm_layer)
        )
        if project_dropout > 0:
            project.append(nn.Dropout(project_dropout))
        self.project = nn.Sequential(*project)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.concurent], dim=1))


class _DecoderHead(nn.Module):
    """Two separable convs and a 1x1 conv. Keys: ``block.{0,1,2}``."""

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, norm_layer: NormLayer
    ):
        super().__init__()
        self.block = nn.Sequential(
            SeparableConv2d(in_channels, mid_channels, norm_layer=norm_layer),
            SeparableConv2d(mid_channels, mid_channels, norm_layer=norm_layer),
            nn.Conv2d(mid_channels, out_channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ feature extractor: stride-4 features with ``ch`` channels.

    Keys: ``backbone``, ``head``, ``skip_project``, ``aspp`` (in that order).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        ch: int = 256,
        project_dropout: float = 0.5,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        if backbone not in _BACKBONE_CHANNELS:
            raise ValueError(
                f"unknown backbone {backbone!r}; known: {', '.join(_BACKBONE_CHANNELS)}"
            )
        skip_in, aspp_in = _BACKBONE_CHANNELS[backbone]
        self.backbone_channels = aspp_in
        self.ch = ch
        self.backbone = build_resnet(backbone, norm_layer=norm_layer)
        self.head = _DecoderHead(ch + _SKIP_CHANNELS, ch, ch, norm_layer)
        self.skip_project = _SkipProject(skip_in, _SKIP_CHANNELS, norm_layer)
        self.aspp = ASPP(aspp_in, ch, _ATROUS_RATES, project_dropout, norm_layer)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone: ``(c4, projected c1)``, ``(B, C4, H/8, W/8)`` and ``(B, 32, H/4, W/4)``."""
        c1, _, _, c4 = self.backbone(x)
        return c4, self.skip_project(c1)

    def fuse(self, c4: Tensor, skip: Tensor) -> Tensor:
        """ASPP on ``c4``, upsampled to ``skip`` and concatenated: ``(B, ch + 32, h, w)``."""
        return torch.cat([_upsample(self.aspp(c4), skip.shape[2:]), skip], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, ch, ceil(H/4), ceil(W/4))``."""
        return self.head(self.fuse(*self.encode(x)))


class SepConvHead(nn.Module):
    """Output head: separable convs to ``mid_channels`` then a 1x1 conv. Keys: ``layers``."""

    def __init__(
        self,
        num_outputs: int,
        in_channels: int,
        mid_channels: int,
        num_layers: int = 2,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            SeparableConv2d(
                in_channels if i == 0 else mid_channels, mid_channels, norm_layer=norm_layer
            )
            for i in range(num_layers)
        ]
        layers.append(nn.Conv2d(mid_channels, num_outputs, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DeepLabNet(InteractiveNet):
    """f-BRS DeepLabV3+ click network.

    The input is ``rgb_conv(cat(image, distance_maps))`` with ImageNet-normalised ``image``
    ``(B, 3, H, W)``; low-resolution logits are ``(B, 1, ceil(H/4), ceil(W/4))``.

    f-BRS sites:

    * ``"A"``: backbone output ``c4`` ``(B, C4, H/8, W/8)`` (``C4`` 512 or 2048);
      context = projected ``c1``.
    * ``"B"``: ASPP output upsampled and concatenated with projected ``c1``,
      ``(B, head_channels + 32, H/4, W/4)``.
    * ``"C"``: decoder output ``(B, head_channels, H/4, W/4)``.

    Parameters
    ----------
    backbone : str
        ``"resnet34"``, ``"resnet50"`` or ``"resnet101"``.
    head_channels : int
        Width of the DeepLab decoder (128 or 256 in the release).
    aspp_dropout : float
        Dropout after the ASPP projection (training only).
    norm_radius : float
        Distance-map normalisation radius.
    """

    input_normalization = "imagenet"

    def __init__(
        self,
        backbone: str = "resnet50",
        head_channels: int = 256,
        aspp_dropout: float = 0.2,
        norm_radius: float = 260.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        self.norm_radius = float(norm_radius)
        self.head_channels = head_channels
        self.rgb_conv = nn.Sequential(
            nn.Conv2d(5, 8, 1),
            nn.LeakyReLU(negative_slope=0.2),
            norm_layer(8),
            nn.Conv2d(8, 3, 1),
        )
        self.feature_extractor = DeepLabV3Plus(backbone, head_channels, aspp_dropout, norm_layer)
        self.head = SepConvHead(1, head_channels, head_channels // 2, 2, norm_layer)

    def encode_clicks(
        self, image: Tensor, points: Tensor, prev_mask: Tensor | None = None
    ) -> Tensor:
        """Distance maps ``(B, 2, H, W)`` of ``points`` ``(B, 2N, 2|3)`` (``prev_mask`` unused)."""
        maps = distance_maps(
            points.to(image.device), image.shape[2], image.shape[3], self.norm_radius
        )
        return maps.to(image.dtype)

    def _encode(self, image: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        x = self.rgb_conv(torch.cat([image, maps], dim=1))
        return self.feature_extractor.encode(x)

    def logits_from_maps(self, image: Tensor, maps: Tensor) -> Tensor:
        """``image`` ``(B, 3, H, W)``, ``maps`` ``(B, 2, H, W)`` -> ``(B, 1, H/4, W/4)``."""
        fe = self.feature_extractor
        return self.head(fe.head(fe.fuse(*self._encode(image, maps))))

    def site_features(self, site: str, image: Tensor, maps: Tensor) -> tuple[Tensor, Any]:
        """Run up to ``site``; see the class docstring for shapes. Context: see sites."""
        self._check_site(site)
        c4, skip = self._encode(image, maps)
        if site == "A":
            return c4, skip
        fused = self.feature_extractor.fuse(c4, skip)
        if site == "B":
            return fused, None
        return self.feature_extractor.head(fused), None

    def logits_from_site(self, site: str, features: Tensor, context: Any) -> Tensor:
        """Finish the network from ``features`` at ``site``: ``(B, 1, H/4, W/4)``."""
        self._check_site(site)
        fe = self.feature_extractor
        x = features
        if site == "A":
            x = fe.fuse(x, context)
        if site in ("A", "B"):
            x = fe.head(x)
        return self.head(x)

    def site_channels(self, site: str) -> int:
        """Channels at ``site``: ``C4``, ``head_channels + 32`` or ``head_channels``."""
        self._check_site(site)
        return {
            "A": self.feature_extractor.backbone_channels,
            "B": self.head_channels + _SKIP_CHANNELS,
            "C": self.head_channels,
        }[site]

    @staticmethod
    def _check_site(site: str) -> None:
        if site not in ("A", "B", "C"):
            raise ValueError(f"unknown f-BRS site {site!r}; DeepLab has sites 'A', 'B', 'C'")


def build_deeplab(
    backbone: str, head_channels: int, aspp_dropout: float = 0.2, norm_radius: float = 260.0
) -> DeepLabNet:
    """Build an untrained f-BRS DeepLabV3+ network (registry builder).

    Parameters
    ----------
    backbone : str
        ``"resnet34"``, ``"resnet50"`` or ``"resnet101"``.
    head_channels : int
        Decoder width (``dh128`` -> 128, ``dh256`` -> 256).
    aspp_dropout : float
        Dropout after the ASPP projection.
    norm_radius : float
        Distance-map normalisation radius (260 in f-BRS).

    Returns
    -------
    DeepLabNet
        In training mode; the registry's ``build_model`` switches it to eval.
    """
    return DeepLabNet(backbone, head_channels, aspp_dropout, norm_radius)
