"""Normalized focal loss (NFL) for click segmentation.

The focal weights ``(1 - p_t)^gamma`` are rescaled per image so they sum to the number of
valid pixels: hard pixels dominate as in the focal loss, but the loss scale does not shrink
as the prediction improves (the f-BRS/RITM training loss).
"""

from __future__ import annotations

import torch

__all__ = ["normalized_focal_loss"]


def normalized_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    alpha: float = 0.5,
    gamma: float = 2.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Mean normalized focal loss over a batch.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, 1, H, W)`` float32 network output before the sigmoid.
    target : torch.Tensor
        ``(B, 1, H, W)`` float32, 1 object, 0 background.
    valid : torch.Tensor or None
        ``(B, 1, H, W)`` bool or float, 0 where pixels are ignored; ``None``: all valid.
    alpha : float
        Weight of the object class (``1 - alpha`` for the background).
    gamma : float
        Focusing exponent.

    Returns
    -------
    torch.Tensor
        Scalar: per-image sum of ``-alpha_t * w * log(p_t)`` over valid pixels, divided by
        the number of valid pixels, averaged over the batch. ``w`` are the focal weights
        normalised to sum to the number of valid pixels (the normaliser carries no
        gradient).
    """
    target = target.to(logits.dtype)
    weight = torch.ones_like(logits) if valid is None else valid.to(logits.dtype)
    prob = torch.sigmoid(logits)
    is_obj = target > 0.5
    p_t = torch.where(is_obj, prob, 1.0 - prob)
    # log p_t from the logits: stable where the sigmoid saturates
    log_p_t = torch.nn.functional.logsigmoid(torch.where(is_obj, logits, -logits))
    alpha_t = torch.where(is_obj, torch.full_like(prob, alpha), torch.full_like(prob, 1 - alpha))
    focal = (1.0 - p_t).pow(gamma) * weight
    dims = tuple(range(1, logits.ndim))
    n_valid = weight.sum(dim=dims, keepdim=True)
    scale = (n_valid / (focal.sum(dim=dims, keepdim=True) + eps)).detach()
    per_pixel = -alpha_t * (focal * scale) * log_p_t
    per_image = per_pixel.sum(dim=dims) / (n_valid.flatten() + eps)
    return per_image.mean()
