"""Building blocks shared by the networks (residual blocks, separable convolutions)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "SeparableConv2d", "conv_bn_relu"]

NormLayer = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34, HRNet branches).

    Keys: ``conv1, bn1, conv2, bn2[, downsample.0, downsample.1]``.
    """

    expansion = 1
    #: each norm sees only its convolution's output (see ``inference.fold_batch_norms``)
    conv_norm_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        previous_dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(
            inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(
            planes,
            planes,
            3,
            stride=1,
            padding=previous_dilation,
            dilation=previous_dilation,
            bias=False,
        )
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 residual block with 4x expansion (ResNet-50/101, HRNet stem).

    Keys: ``conv1, bn1, conv2, bn2, conv3, bn3[, downsample.0, downsample.1]``.
    """

    #: each norm sees only its convolution's output (see ``inference.fold_batch_norms``)
    conv_norm_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        previous_dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class SeparableConv2d(nn.Module):
    """Depthwise k x k then pointwise 1x1 convolution, norm and activation.

    Keys: ``body.0`` (depthwise), ``body.1`` (pointwise), ``body.2`` (norm).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        stride: int = 1,
        bias: bool = False,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        activation: Callable[[], nn.Module] | None = nn.ReLU,
    ):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                groups=in_channels,
                bias=bias,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
            norm_layer(out_channels) if norm_layer is not None else nn.Identity(),
            activation() if activation is not None else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    padding: int = 0,
    dilation: int = 1,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> nn.Sequential:
    """``Sequential(conv without bias, norm, ReLU)``: keys ``0`` (conv) and ``1`` (norm)."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        ),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    )
