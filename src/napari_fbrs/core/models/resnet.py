"""Dilated ResNet backbone (output stride 8) with the f-BRS checkpoint layout.

The layout follows the gluon-cv "v1b" ResNet that f-BRS ports to PyTorch: the stride of a
bottleneck sits on its 3x3 convolution, the 1x1 downsampling shortcut is a plain strided
convolution, layer3 and layer4 keep stride 1 and are dilated 2 and 4. ResNet-34 uses the
plain 7x7 stem ("v1b"); ResNet-50/101 use the deep three-convolution stem ("v1s").
"""

from __future__ import annotations

from torch import Tensor, nn

from napari_fbrs.core.models.layers import BasicBlock, Bottleneck, NormLayer

__all__ = ["RESNET_SPECS", "DilatedResNet", "build_resnet"]

#: name -> (block type, blocks per layer, deep stem)
RESNET_SPECS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int], bool]] = {
    "resnet34": (BasicBlock, (3, 4, 6, 3), False),
    "resnet50": (Bottleneck, (3, 4, 6, 3), True),
    "resnet101": (Bottleneck, (3, 4, 23, 3), True),
}


class DilatedResNet(nn.Module):
    """ResNet returning the four stage outputs at strides 4, 8, 8, 8.

    Keys: ``conv1`` (a conv, or ``conv1.{0,1,3,4,6}`` for the deep stem), ``bn1``,
    ``layer1`` .. ``layer4``. There is no classifier.

    Parameters
    ----------
    block : type
        :class:`BasicBlock` or :class:`Bottleneck`.
    layers : tuple of int
        Number of blocks in each of the four stages.
    deep_stem : bool
        Three 3x3 convolutions (64, 64, 128 channels) instead of one 7x7 (64 channels).
    norm_layer : callable
        Normalisation layer factory.
    """

    #: the stem's norms see only their convolutions' outputs (``inference.fold_batch_norms``)
    conv_norm_pairs = (("conv1", "bn1"),)

    def __init__(
        self,
        block: type[nn.Module],
        layers: tuple[int, int, int, int],
        deep_stem: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        self._norm_layer = norm_layer
        if deep_stem:
            stem_width = 64
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False),
                norm_layer(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False),
                norm_layer(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, 2 * stem_width, 3, stride=1, padding=1, bias=False),
            )
            self.inplanes = 2 * stem_width
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.inplanes = 64
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], dilation=2)
        self.layer4 = self._make_layer(block, 512, layers[3], dilation=4)

    def _make_layer(
        self, block: type[nn.Module], planes: int, blocks: int, stride: int = 1, dilation: int = 1
    ) -> nn.Sequential:
        norm_layer = self._norm_layer
        out_planes = planes * block.expansion  # type: ignore[attr-defined]
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_planes, 1, stride=stride, bias=False),
                norm_layer(out_planes),
            )
        # As in gluon-cv v1b: the first block of a dilated stage enters with half the
        # stage's dilation (1 for dilation 2) and ends with the full one.
        first_dilation = 1 if dilation in (1, 2) else dilation // 2
        blocks_list = [
            block(
                self.inplanes,
                planes,
                stride,
                dilation=first_dilation,
                downsample=downsample,
                previous_dilation=dilation,
                norm_layer=norm_layer,
            )
        ]
        self.inplanes = out_planes
        for _ in range(1, blocks):
            blocks_list.append(
                block(
                    self.inplanes,
                    planes,
                    dilation=dilation,
                    previous_dilation=dilation,
                    norm_layer=norm_layer,
                )
            )
        return nn.Sequential(*blocks_list)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run the backbone.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, 3, H, W)`` float32.

        Returns
        -------
        tuple of torch.Tensor
            ``(c1, c2, c3, c4)``: ``(B, C_i, ceil(H/4), ceil(W/4))`` for ``c1`` and
            ``ceil(H/8) x ceil(W/8)`` for the others; ``C = 64, 128, 256, 512`` (ResNet-34)
            or ``256, 512, 1024, 2048`` (ResNet-50/101).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4


def build_resnet(name: str, norm_layer: NormLayer = nn.BatchNorm2d) -> DilatedResNet:
    """Build an untrained dilated ResNet.

    Parameters
    ----------
    name : str
        ``"resnet34"``, ``"resnet50"`` or ``"resnet101"``.

    Returns
    -------
    DilatedResNet
    """
    if name not in RESNET_SPECS:
        raise ValueError(f"unknown ResNet {name!r}; known: {', '.join(RESNET_SPECS)}")
    block, layers, deep_stem = RESNET_SPECS[name]
    return DilatedResNet(block, layers, deep_stem=deep_stem, norm_layer=norm_layer)
