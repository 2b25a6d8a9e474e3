"""RITM HRNetV2 + OCR click network: previous-mask input, disk clicks, coordinate features.

The RITM release (Sofiiuk, Petrov, Konushin, "Reviving Iterative Training with Mask
Guidance for Interactive Segmentation", ICIP 2022) uses the same HRNetV2 + OCR feature
extractor as f-BRS (:class:`~napari_fbrs.core.models.hrnet.HRNetOCRFeatureExtractor`,
reused here unchanged) but feeds the clicks differently:

* clicks are binary **disks** of radius 5 pixels (one map per polarity) instead of
  distance maps;
* "IT-M" (iterative mask) models take the **previous prediction** as one more input map,
  placed before the two click maps: ``(prev_mask, positive, negative)``;
* the click maps do not enter the image: a small **coordinate-feature branch**
  (``maps_transform``: 1x1 conv to 16 channels, LeakyReLU(0.2), stride-2 3x3 conv to 64
  channels, learned scalar scale ``|s|``) is added to the output of the backbone's first
  conv + norm + ReLU (``additional_features``).

State-dict keys and shapes are those of the official RITM checkpoints
(``maps_transform.{0,2}.{weight,bias}``, ``maps_transform.3.scale`` and
``feature_extractor.*``; see ``shared/conformance/ritm_*.keys.json``).

Input normalisation. The official model normalises its ``[0, 1]`` input with the ImageNet
mean and std inside ``forward``. Here the predictor does it (``input_normalization =
"imagenet"``), so that RGB-BRS perturbs the *normalised* image exactly as the reference
RITM predictor does; :meth:`RITMHRNetNet.forward_unit` takes the official ``[0, 1]`` input
(with the previous mask as a fourth channel) for callers that have it.

f-BRS sites are those of the f-BRS HRNet: ``"A"`` = the concatenated backbone features,
``"C"`` = the OCR features before ``cls_head``; f-BRS-B uses ``"A"``.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_fbrs.core.clicks import distance_maps
from napari_fbrs.core.image import IMAGENET_MEAN, IMAGENET_STD
from napari_fbrs.core.models.base import InteractiveNet
from napari_fbrs.core.models.hrnet import HRNetOCRFeatureExtractor, HRNetOCRSites
from napari_fbrs.core.models.layers import NormLayer

__all__ = ["RITMHRNetNet", "ScaleLayer", "build_ritm_hrnet", "disk_maps"]


def disk_maps(points: torch.Tensor, height: int, width: int, radius: float = 5.0) -> torch.Tensor:
    """Encode clicks as RITM's binary disks.

    A pixel ``(r, c)`` (integer row and column) is on the disk of a click ``(y, x)`` when
    ``(r - y)^2 + (c - x)^2 <= radius^2``, computed in float32 in that order, so that
    sub-pixel click coordinates (ZoomIn views) give the same disks as the reference.

    Parameters
    ----------
    points : torch.Tensor
        ``(B, 2N, 2|3)`` float click rows ``(y, x[, index])`` in pixels: ``N`` positive rows,
        then ``N`` negative rows; rows whose ``y`` or ``x`` is negative are padding.
    height, width : int
        Size of the maps.
    radius : float
        Disk radius in pixels (5 for the RITM release).

    Returns
    -------
    torch.Tensor
        ``(B, 2, height, width)`` float32 in ``{0, 1}``: channel 0 positive, 1 negative.
    """
    bsz, n2, _ = points.shape
    n = n2 // 2
    yx = points[..., :2].to(torch.float32)
    valid = yx.max(dim=-1).values >= 0  # (B, 2N)
    rows = torch.arange(height, dtype=torch.float32, device=points.device)
    cols = torch.arange(width, dtype=torch.float32, device=points.device)
    dy = rows.view(1, 1, height, 1) - yx[..., 0].view(bsz, n2, 1, 1)
    dx = cols.view(1, 1, 1, width) - yx[..., 1].view(bsz, n2, 1, 1)
    inside = (dy * dy + dx * dx) <= float(radius) ** 2  # (B, 2N, H, W)
    inside &= valid.view(bsz, n2, 1, 1)
    return inside.view(bsz, 2, n, height, width).any(dim=2).to(torch.float32)


class ScaleLayer(nn.Module):
    """Multiply by the absolute value of one learned scalar: ``x * |scale|``.

    Key: ``scale``, shape ``(1,)`` (0.05 before training).
    """

    def __init__(self, init_value: float = 0.05):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(init_value), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, C, h, w)``."""
        return x * self.scale.abs()


class RITMHRNetNet(HRNetOCRSites, InteractiveNet):
    """RITM HRNetV2 + OCR click network (``ritm_hrnet18_itermask``, ...).

    Parameters
    ----------
    width : int
        HRNet width (18 or 32 in the release).
    ocr_width : int
        OCR key channels (64 for W18, 48 for small W18, 128 for W32).
    small : bool
        The small ("18s") HRNet layout.
    with_prev_mask : bool
        Take the previous prediction as an input map ("IT-M" models); ``False`` for the
        baseline model.
    norm_radius : float
        Disk radius in pixels with ``use_disks``, else the distance-map normalisation.
    use_disks : bool
        Encode clicks as binary disks (the release) rather than f-BRS distance maps.
    use_leaky_relu : bool
        LeakyReLU(0.2) in the coordinate-feature branch (the release), else ReLU.
    binary_prev_mask : bool
        Threshold the previous mask at 0.5 before use.
    norm_layer : callable
        Normalisation layer of the feature extractor.

    Notes
    -----
    Click maps are ``(B, K, H, W)`` with ``K = 3`` (``prev_mask, positive, negative``) for
    IT-M models and ``K = 2`` for the baseline: the click maps are always the last two
    channels. Low-resolution logits are at stride 4: ``(B, 1, ceil(H/4), ceil(W/4))``.
    """

    input_normalization = "imagenet"
    brs_sites = {"f-BRS-A": "A", "f-BRS-B": "A", "f-BRS-C": "C"}

    def __init__(
        self,
        width: int = 18,
        ocr_width: int = 64,
        small: bool = False,
        with_prev_mask: bool = True,
        norm_radius: float = 5.0,
        use_disks: bool = True,
        use_leaky_relu: bool = True,
        binary_prev_mask: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        self.uses_prev_mask = bool(with_prev_mask)
        self.norm_radius = float(norm_radius)
        self.use_disks = bool(use_disks)
        self.binary_prev_mask = bool(binary_prev_mask)
        self.coord_channels = 2 + int(self.uses_prev_mask)
        self.maps_transform = nn.Sequential(
            nn.Conv2d(self.coord_channels, 16, 1),
            nn.LeakyReLU(0.2) if use_leaky_relu else nn.ReLU(inplace=True),
            nn.Conv2d(16, 64, 3, stride=2, padding=1),
            ScaleLayer(0.05),
        )
        self.feature_extractor = HRNetOCRFeatureExtractor(
            width, ocr_width, small, num_classes=1, norm_layer=norm_layer
        )

    # -- click encoding -----------------------------------------------------------------
    def encode_clicks(
        self, image: torch.Tensor, points: torch.Tensor, prev_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Coordinate maps for ``image`` ``(B, 3, H, W)``.

        Parameters
        ----------
        image : torch.Tensor
            ``(B, 3, H, W)``; only its size is used.
        points : torch.Tensor
            ``(B, 2N, 2|3)`` click rows ``(y, x[, index])`` (the index is not used by the
            release models).
        prev_mask : torch.Tensor or None
            ``(B, 1, H, W)`` (or ``(1, 1, H, W)``) previous probability in ``[0, 1]``;
            ``None`` means no previous prediction (zeros). Ignored by baseline models.

        Returns
        -------
        torch.Tensor
            ``(B, 3, H, W)`` float32 ``(prev_mask, positive, negative)`` for IT-M models,
            ``(B, 2, H, W)`` ``(positive, negative)`` for the baseline.
        """
        bsz, _, height, width = image.shape
        if self.use_disks:
            clicks = disk_maps(points.to(image.device), height, width, self.norm_radius)
        else:
            clicks = distance_maps(points.to(image.device), height, width, self.norm_radius)
        if not self.uses_prev_mask:
            return clicks
        if prev_mask is None:
            prev = clicks.new_zeros((bsz, 1, height, width))
        else:
            if (
                prev_mask.dim() != 4
                or prev_mask.shape[1] != 1
                or prev_mask.shape[2:]
                != (
                    height,
                    width,
                )
            ):
                raise ValueError(
                    f"prev_mask must be (B, 1, {height}, {width}), got {tuple(prev_mask.shape)}"
                )
            prev = prev_mask.to(device=clicks.device, dtype=torch.float32)
            if self.binary_prev_mask:
                prev = (prev > 0.5).to(torch.float32)
            if prev.shape[0] != bsz:
                prev = prev.expand(bsz, -1, -1, -1)
        return torch.cat([prev, clicks], dim=1)

    # -- network passes -----------------------------------------------------------------
    def _backbone(self, image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        coord = self.maps_transform(maps)
        return self.feature_extractor.backbone_features(image, coord)

    def forward_unit(self, x: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official RITM ``forward``: ``[0, 1]`` input, normalised here.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, 3, H, W)`` RGB in ``[0, 1]``, with the previous mask as a fourth channel
            ``(B, 4, H, W)`` for IT-M models.
        points : torch.Tensor
            ``(B, 2N, 3)`` rows ``(y, x, click_index)``, padding ``-1``.

        Returns
        -------
        dict
            ``{"instances": (B, 1, H, W) float32 logits}``.
        """
        image = x[:, :3]
        prev_mask = x[:, 3:4] if self.uses_prev_mask and x.shape[1] > 3 else None
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return self.forward((image - mean) / std, points, prev_mask)


def build_ritm_hrnet(
    width: int = 18,
    ocr_width: int = 64,
    small: bool = False,
    with_prev_mask: bool = True,
    norm_radius: float = 5.0,
    use_disks: bool = True,
    use_leaky_relu: bool = True,
    binary_prev_mask: bool = False,
) -> RITMHRNetNet:
    """Build an untrained RITM HRNetV2-W``width`` + OCR-``ocr_width`` network.

    The defaults are those of the RITM release's HRNet-18 IT-M model; see
    :class:`RITMHRNetNet` for the parameters.

    Returns
    -------
    RITMHRNetNet
        With the official checkpoint's state-dict layout, in training mode.
    """
    return RITMHRNetNet(
        width,
        ocr_width,
        small,
        with_prev_mask=with_prev_mask,
        norm_radius=norm_radius,
        use_disks=use_disks,
        use_leaky_relu=use_leaky_relu,
        binary_prev_mask=binary_prev_mask,
    )
