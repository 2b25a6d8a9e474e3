"""HRNetV2 + OCR: the feature extractor and the f-BRS click network built on it.

:class:`HRNetOCRFeatureExtractor` is the image-to-logits network (HRNetV2 backbone and
object-contextual-representations head); it knows nothing about clicks, so the RITM models
reuse it (they inject their click features through ``additional_features``).
:class:`HRNetOCRNet` is the f-BRS model: a 1x1 "rgb_conv" mixes the image with the two
click distance maps into a 3-channel input for the feature extractor.

State-dict keys and shapes are those of the official f-BRS/RITM checkpoints
(``rgb_conv.*`` and ``feature_extractor.*``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_fbrs.core.clicks import distance_maps
from napari_fbrs.core.models.base import InteractiveNet
from napari_fbrs.core.models.layers import BasicBlock, Bottleneck, NormLayer

__all__ = [
    "HRNetOCRFeatureExtractor",
    "HRNetOCRNet",
    "HighResolutionModule",
    "ObjectAttentionBlock",
    "SpatialOCR",
    "build_hrnet_ocr",
    "spatial_gather",
]


def _conv_bn(
    in_ch: int, out_ch: int, kernel_size: int, stride: int, norm_layer: NormLayer, relu: bool
) -> nn.Sequential:
    """``Sequential(conv without bias, norm[, ReLU])``: keys ``0`` and ``1``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        norm_layer(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _upsample(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _residual_layer(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    blocks: int,
    norm_layer: NormLayer,
) -> nn.Sequential:
    """``blocks`` residual blocks; the first gets a 1x1 projection when channels change."""
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = _conv_bn(inplanes, planes * block.expansion, 1, 1, norm_layer, relu=False)
    layers = [block(inplanes, planes, downsample=downsample, norm_layer=norm_layer)]
    layers += [
        block(planes * block.expansion, planes, norm_layer=norm_layer) for _ in range(1, blocks)
    ]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every output fuses all branches.

    Keys: ``branches.<i>.<block>.*`` and ``fuse_layers.<i>.<j>.*``: for a lower-resolution
    input ``j > i`` a 1x1 conv + norm (then bilinear upsampling); for a higher-resolution
    input ``j < i`` a chain of ``i - j`` stride-2 3x3 conv + norm (ReLU between them).

    Parameters
    ----------
    channels : list of int
        Channels of each branch, highest resolution first.
    num_blocks : int
        BasicBlocks per branch.
    """

    def __init__(
        self, channels: list[int], num_blocks: int, norm_layer: NormLayer = nn.BatchNorm2d
    ):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            _residual_layer(BasicBlock, c, c, num_blocks, norm_layer) for c in channels
        )
        fuse: list[nn.ModuleList] = []
        for i in range(n):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:
                    row.append(_conv_bn(channels[j], channels[i], 1, 1, norm_layer, relu=False))
                elif j == i:
                    row.append(None)
                else:
                    # stride-2 steps keep branch j's width until the last one
                    steps = [
                        _conv_bn(channels[j], channels[j], 3, 2, norm_layer, relu=True)
                        for _ in range(i - j - 1)
                    ]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, norm_layer, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse) if n > 1 else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y: torch.Tensor | None = None
            for j, layer in enumerate(row):
                if j == i:
                    z = xs[j]
                elif j > i:
                    z = _upsample(layer(xs[j]), xs[i].shape[2:])
                else:
                    z = layer(xs[j])
                if y is None:
                    y = z
                elif y is xs[i]:
                    y = y + z  # never write into a branch output: other fusions read it
                else:
                    y = y.add_(z)  # a fresh sum: accumulate in place (autograd-safe for add)
            out.append(self.relu(y))
        return out


def spatial_gather(feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """OCR object regions: feature averages weighted by a softmax over pixels.

    Parameters
    ----------
    feats : torch.Tensor
        ``(B, C, h, w)`` pixel features.
    probs : torch.Tensor
        ``(B, K, h, w)`` soft object-region logits (the auxiliary head's output).

    Returns
    -------
    torch.Tensor
        ``(B, C, K, 1)``: one feature vector per object region.
    """
    weights = torch.softmax(probs.flatten(2), dim=2)  # (B, K, hw)
    context = torch.matmul(weights, feats.flatten(2).transpose(1, 2))  # (B, K, C)
    return context.transpose(1, 2).unsqueeze(3)


class _SpatialGather(nn.Module):
    """:func:`spatial_gather` as a module (no parameters: ``ocr_gather_head``)."""

    def forward(self, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return spatial_gather(feats, probs)


def _conv_bnrelu(in_ch: int, out_ch: int, norm_layer: NormLayer) -> list[nn.Module]:
    """1x1 conv without bias, then ``Sequential(norm, ReLU)``: the OCR head's key layout."""
    return [
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.Sequential(norm_layer(out_ch), nn.ReLU(inplace=True)),
    ]


class ObjectAttentionBlock(nn.Module):
    """Pixels attend to object regions (scaled dot product), then project back.

    Keys: ``f_pixel`` (query), ``f_object`` (key), ``f_down`` (value), ``f_up`` (output).
    """

    def __init__(self, in_channels: int, key_channels: int, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(
            *_conv_bnrelu(in_channels, key_channels, norm_layer),
            *_conv_bnrelu(key_channels, key_channels, norm_layer),
        )
        self.f_object = nn.Sequential(
            *_conv_bnrelu(in_channels, key_channels, norm_layer),
            *_conv_bnrelu(key_channels, key_channels, norm_layer),
        )
        self.f_down = nn.Sequential(*_conv_bnrelu(in_channels, key_channels, norm_layer))
        self.f_up = nn.Sequential(*_conv_bnrelu(key_channels, in_channels, norm_layer))

    def forward(self, x: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        """Object context for every pixel.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, h, w)`` pixel features.
        proxy : torch.Tensor
            ``(B, C, K, 1)`` object-region features (:func:`spatial_gather`).

        Returns
        -------
        torch.Tensor
            ``(B, C, h, w)``; ``(B, C, 1, 1)`` (the same at every pixel) for a single
            region (``K == 1``) in eval mode.
        """
        b, _, h, w = x.shape
        value = self.f_down(proxy)  # (B, key, K, 1)
        if proxy.shape[2] * proxy.shape[3] == 1 and not self.training:
            # One region: the softmax weights are exactly 1, so every pixel gets the same
            # value and the query/key branches change neither the result nor its gradients.
            # (Not in training mode: norm statistics over one pixel would differ.)
            return self.f_up(value)
        query = self.f_pixel(x).flatten(2).transpose(1, 2)  # (B, hw, key)
        key = self.f_object(proxy).flatten(2)  # (B, key, K)
        sim = torch.softmax(torch.matmul(query, key) * self.key_channels**-0.5, dim=-1)
        context = torch.matmul(sim, value.flatten(2).transpose(1, 2))  # (B, hw, key)
        context = context.transpose(1, 2).reshape(b, self.key_channels, h, w)
        return self.f_up(context)


class SpatialOCR(nn.Module):
    """OCR distribution head: object context concatenated with the pixel features, fused.

    Keys: ``object_context_block.*``, ``conv_bn_dropout.0`` (conv), ``conv_bn_dropout.1.0``
    (norm).
    """

    def __init__(
        self,
        in_channels: int,
        key_channels: int,
        out_channels: int,
        dropout: float = 0.05,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels, norm_layer)
        self.conv_bn_dropout = nn.Sequential(
            *_conv_bnrelu(2 * in_channels, out_channels, norm_layer), nn.Dropout2d(dropout)
        )

    def forward(self, feats: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        """``feats``: ``(B, C, h, w)``; ``proxy``: ``(B, C, K, 1)``; returns ``(B, out, h, w)``."""
        context = self.object_context_block(feats, proxy)
        conv, norm_relu, dropout = self.conv_bn_dropout
        if context.shape[2:] != feats.shape[2:]:
            # one context vector for all pixels: convolve it once and add it, instead of
            # concatenating a broadcast copy (same result: the conv is linear, no bias)
            w_context, w_feats = conv.weight.split(context.shape[1], dim=1)
            out = F.conv2d(feats, w_feats).add_(F.conv2d(context, w_context))
        else:
            out = conv(torch.cat([context, feats], dim=1))
        return dropout(norm_relu(out))


class HRNetOCRFeatureExtractor(nn.Module):
    """HRNetV2 backbone (4 resolutions, concatenated at stride 4) with an OCR head.

    Parameters
    ----------
    width : int
        Channels of the highest-resolution branch (18, 32, 48); branches have
        ``width * (1, 2, 4, 8)`` channels, the concatenated features ``15 * width``.
    ocr_width : int
        OCR key channels; the OCR features have ``2 * ocr_width`` channels.
    small : bool
        The "18s" layout: 2 blocks per branch (instead of 4) and 1/3/2 modules in stages
        2/3/4 (instead of 1/4/3).
    num_classes : int
        Output logit channels.
    """

    #: the stem's norms see only their convolutions' outputs (``inference.fold_batch_norms``)
    conv_norm_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(
        self,
        width: int,
        ocr_width: int,
        small: bool = False,
        num_classes: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        self.width = width
        self.ocr_width = ocr_width
        blocks = 2 if small else 4
        modules = (1, 3, 2) if small else (1, 4, 3)

        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _residual_layer(Bottleneck, 64, 64, blocks, norm_layer)

        prev = [64 * Bottleneck.expansion]
        for stage, num_modules in zip((2, 3, 4), modules, strict=True):
            channels = [width * 2**i for i in range(stage)]
            setattr(self, f"transition{stage - 1}", self._transition(prev, channels, norm_layer))
            setattr(
                self,
                f"stage{stage}",
                nn.Sequential(
                    *(
                        HighResolutionModule(channels, blocks, norm_layer)
                        for _ in range(num_modules)
                    )
                ),
            )
            prev = channels
        self.backbone_channels = sum(prev)

        mid = 2 * ocr_width
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(self.backbone_channels, mid, 3, padding=1),
            norm_layer(mid),
            nn.ReLU(inplace=True),
        )
        self.ocr_gather_head = _SpatialGather()
        self.ocr_distri_head = SpatialOCR(mid, ocr_width, mid, dropout=0.05, norm_layer=norm_layer)
        self.cls_head = nn.Conv2d(mid, num_classes, 1)
        self.aux_head = nn.Sequential(
            nn.Conv2d(self.backbone_channels, self.backbone_channels, 1),
            norm_layer(self.backbone_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.backbone_channels, num_classes, 1),
        )

    @staticmethod
    def _transition(prev: list[int], cur: list[int], norm_layer: NormLayer) -> nn.ModuleList:
        """Adapt branch widths; the one new branch is a stride-2 conv of the lowest branch.

        Keys: ``<i>.0/1`` for an adapted branch, ``<i>.0.0/1`` for the new branch.
        """
        layers: list[nn.Module | None] = []
        for i, c in enumerate(cur):
            if i < len(prev):
                layers.append(
                    None if c == prev[i] else _conv_bn(prev[i], c, 3, 1, norm_layer, relu=True)
                )
            else:
                layers.append(nn.Sequential(_conv_bn(prev[-1], c, 3, 2, norm_layer, relu=True)))
        return nn.ModuleList(layers)

    def backbone_features(
        self, x: torch.Tensor, additional_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """HRNetV2 features: all branches upsampled to stride 4 and concatenated.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, 3, H, W)`` float32 network input.
        additional_features : torch.Tensor or None
            ``(B, 64, ceil(H/2), ceil(W/2))`` added after the first conv + norm + ReLU
            (RITM's click features).

        Returns
        -------
        torch.Tensor
            ``(B, 15 * width, ceil(H/4), ceil(W/4))``, branches highest resolution first.
        """
        x = self.relu(self.bn1(self.conv1(x)))
        if additional_features is not None:
            x = x + additional_features
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for transition, stage in (
            (self.transition1, self.stage2),
            (self.transition2, self.stage3),
            (self.transition3, self.stage4),
        ):
            # new branches are made from the lowest-resolution existing one
            xs = [
                xs[min(i, len(xs) - 1)] if t is None else t(xs[min(i, len(xs) - 1)])
                for i, t in enumerate(transition)
            ]
            xs = stage(xs)
        size = xs[0].shape[2:]
        return torch.cat([xs[0], *(_upsample(x, size) for x in xs[1:])], dim=1)

    def ocr_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """OCR head up to the classifier.

        Parameters
        ----------
        feats : torch.Tensor
            ``(B, 15 * width, h, w)`` from :meth:`backbone_features`.

        Returns
        -------
        ocr : torch.Tensor
            ``(B, 2 * ocr_width, h, w)``: the input of ``cls_head``.
        aux_logits : torch.Tensor
            ``(B, num_classes, h, w)``: the auxiliary head's logits (the soft regions).
        """
        aux = self.aux_head(feats)
        mid = self.conv3x3_ocr(feats)
        context = self.ocr_gather_head(mid, aux)
        return self.ocr_distri_head(mid, context), aux

    def head(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)``, both ``(B, num_classes, h, w)``, from backbone features."""
        ocr, aux = self.ocr_features(feats)
        return self.cls_head(ocr), aux

    def forward(
        self, x: torch.Tensor, additional_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)`` at stride 4 for input ``x`` ``(B, 3, H, W)``."""
        return self.head(self.backbone_features(x, additional_features))


class HRNetOCRSites:
    """The passes shared by the f-BRS and RITM HRNet+OCR networks.

    Needs ``self.feature_extractor`` (:class:`HRNetOCRFeatureExtractor`) and
    ``self._backbone(image, maps)`` (the backbone features, ``15 * width`` channels).
    Site ``"A"`` = backbone features, ``"C"`` = OCR features before ``cls_head``.
    """

    def logits_from_maps(self, image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, ceil(H/4), ceil(W/4))`` from ``image`` and ``maps`` ``(B, 2, H, W)``."""
        return self.feature_extractor.head(self._backbone(image, maps))[0]

    def site_features(
        self, site: str, image: torch.Tensor, maps: torch.Tensor
    ) -> tuple[torch.Tensor, Any]:
        """Features ``(B, site_channels(site), ceil(H/4), ceil(W/4))`` at ``site``; no context."""
        self._check_site(site)
        feats = self._backbone(image, maps)
        if site == "C":
            feats = self.feature_extractor.ocr_features(feats)[0]
        return feats, None

    def logits_from_site(self, site: str, features: torch.Tensor, context: Any) -> torch.Tensor:
        """Logits ``(B, 1, h, w)`` from (scaled/shifted) site features ``(B, C, h, w)``."""
        self._check_site(site)
        if site == "A":
            return self.feature_extractor.head(features)[0]
        return self.feature_extractor.cls_head(features)

    def site_channels(self, site: str) -> int:
        self._check_site(site)
        fe = self.feature_extractor
        return fe.backbone_channels if site == "A" else 2 * fe.ocr_width

    @staticmethod
    def _check_site(site: str) -> None:
        if site not in ("A", "C"):
            raise ValueError(f"HRNet+OCR has insertion sites 'A' and 'C', not {site!r}")


class HRNetOCRNet(HRNetOCRSites, InteractiveNet):
    """f-BRS HRNetV2 + OCR click network (``hrnet18_ocr64``, ``hrnet32_ocr128``, ...).

    Input: ``rgb_conv(cat(image, distance_maps))``. Insertion sites: ``"A"`` = the
    concatenated backbone features (``15 * width`` channels), ``"C"`` = the OCR features
    before ``cls_head`` (``2 * ocr_width`` channels); f-BRS-B uses site ``"A"``, as in the
    reference implementation. Low-resolution logits are at stride 4.
    """

    input_normalization = "imagenet"
    brs_sites = {"f-BRS-A": "A", "f-BRS-B": "A", "f-BRS-C": "C"}

    def __init__(
        self,
        width: int,
        ocr_width: int,
        small: bool = False,
        norm_radius: float = 260.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        self.norm_radius = norm_radius
        self.rgb_conv = nn.Sequential(
            nn.Conv2d(5, 8, 1),
            nn.LeakyReLU(0.2),
            norm_layer(8),
            nn.Conv2d(8, 3, 1),
        )
        self.feature_extractor = HRNetOCRFeatureExtractor(
            width, ocr_width, small, num_classes=1, norm_layer=norm_layer
        )

    def encode_clicks(
        self, image: torch.Tensor, points: torch.Tensor, prev_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Distance maps ``(B, 2, H, W)`` (positive, negative) for ``image`` ``(B, 3, H, W)``."""
        return distance_maps(points, image.shape[2], image.shape[3], self.norm_radius)

    def _backbone(self, image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        x = self.rgb_conv(torch.cat([image, maps], dim=1))
        return self.feature_extractor.backbone_features(x)


def build_hrnet_ocr(width: int, ocr_width: int, small: bool = False) -> HRNetOCRNet:
    """Build an untrained f-BRS HRNetV2-W``width`` + OCR-``ocr_width`` network.

    Parameters
    ----------
    width : int
        HRNet width: 18, 32 or 48.
    ocr_width : int
        OCR key channels: 64 (W18), 48 (small W18), 128 (W32, W48).
    small : bool
        The small ("18s") backbone layout.

    Returns
    -------
    HRNetOCRNet
        With the official checkpoint's state-dict layout, in training mode.
    """
    return HRNetOCRNet(width, ocr_width, small)
