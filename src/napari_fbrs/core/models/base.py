"""The interface every interactive segmentation network of napari-fbrs implements.

The predictor never reaches into a network's submodules: it talks to a network only
through the methods below, so that DeepLabV3+, HRNet+OCR, RITM and the bundled lite model
all run the same six BRS modes.

Conventions (all tensors are float32, batch-first, channels-first):

* ``image``: ``(B, 3, H, W)`` already normalised the way ``input_normalization`` says.
* ``points``: ``(B, 2N, 2)`` or ``(B, 2N, 3)`` click coordinates ``(y, x[, index])`` in
  pixels of ``image``: first ``N`` rows positive clicks, then ``N`` rows negative clicks,
  padding rows are ``-1``.
* ``maps``: ``(B, K, H, W)`` click encoding produced by :meth:`encode_clicks` (``K = 2`` for
  distance maps; RITM-style nets may add the previous mask as an extra channel).
* "low-resolution logits": ``(B, 1, h, w)`` at the network's output stride, before the
  final upsampling to ``(H, W)``.

f-BRS insertion *sites* are named ``"A"``, ``"B"``, ``"C"``; ``brs_sites`` maps the user
modes ``f-BRS-A/B/C`` onto them (HRNet maps both A and B to its backbone output, as the
reference implementation does).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["InteractiveNet"]


class InteractiveNet(nn.Module):
    """Base class: click-conditioned binary segmentation network.

    Subclasses implement :meth:`encode_clicks`, :meth:`logits_from_maps`,
    :meth:`site_features`, :meth:`logits_from_site` and :meth:`site_channels`.
    """

    #: ``"imagenet"``: the predictor feeds ``(x/255 - mean) / std``; ``"unit"``: ``x/255``.
    input_normalization: str = "imagenet"
    #: f-BRS mode name -> insertion site.
    brs_sites: dict[str, str] = {"f-BRS-A": "A", "f-BRS-B": "B", "f-BRS-C": "C"}
    #: whether the network takes the previous prediction as an input channel (RITM).
    uses_prev_mask: bool = False
    #: index (negative: from the end) of the positive click distance map in the output of
    #: :meth:`encode_clicks`; the negative map follows it. DistMap-BRS adds its correction
    #: to these two channels only, never to a previous-mask channel. The default, the last
    #: two channels, fits ``(pos, neg)`` and RITM's ``(prev, pos, neg)``; a network that
    #: puts the previous mask last sets 0.
    distance_maps_channel: int = -2
    #: registry name of the architecture (set by the registry's builders).
    arch_name: str = ""

    # -- to implement -------------------------------------------------------------------
    def encode_clicks(
        self, image: torch.Tensor, points: torch.Tensor, prev_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode clicks as maps ``(B, K, H, W)`` aligned with ``image``."""
        raise NotImplementedError

    def logits_from_maps(self, image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Full network pass from the image and click maps to low-resolution logits."""
        raise NotImplementedError

    def site_features(
        self, site: str, image: torch.Tensor, maps: torch.Tensor
    ) -> tuple[torch.Tensor, Any]:
        """Run the network up to insertion ``site``.

        Returns ``(features, context)``: ``features`` is ``(B, C, h', w')`` with
        ``C == site_channels(site)`` (what f-BRS scales and shifts per channel);
        ``context`` is whatever else :meth:`logits_from_site` needs (e.g. skip features),
        treated as opaque and constant by the predictor.
        """
        raise NotImplementedError

    def logits_from_site(self, site: str, features: torch.Tensor, context: Any) -> torch.Tensor:
        """Finish the network from (scaled/shifted) ``features`` at ``site``: low-res logits."""
        raise NotImplementedError

    def site_channels(self, site: str) -> int:
        """Number of channels of the features at ``site``."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def forward(
        self, image: torch.Tensor, points: torch.Tensor, prev_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Full pass; returns ``{"instances": logits (B, 1, H, W)}`` at the input size."""
        maps = self.encode_clicks(image, points, prev_mask)
        logits = self.logits_from_maps(image, maps)
        logits = F.interpolate(logits, size=image.shape[2:], mode="bilinear", align_corners=True)
        return {"instances": logits}
