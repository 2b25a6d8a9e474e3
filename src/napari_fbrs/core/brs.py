"""The backpropagating-refinement objective and its L-BFGS-B driver.

BRS (Jang & Kim 2019) and f-BRS (Sofiiuk et al. 2020) adjust auxiliary variables at
inference time so that the prediction agrees with the clicks: the probability should be
1 on small disks around positive clicks and 0 around negative ones. The objective is

    L = mean_pos (1 - p)^2 + mean_neg p^2 + reg_weight * R(variables)

minimised with scipy's L-BFGS-B. Evaluation stops early (zero gradient, so L-BFGS-B ends)
once every click is satisfied, or once the mask changes by less than ``min_iou_diff``
between evaluations, or when a cancel callback says the result is no longer wanted.

The step that first satisfies the clicks is often far longer than needed: a corrective
click at an object's edge then carves a notch or floods the surroundings.
:func:`trim_overshoot` (an extension, not in the paper) bisects back along that step to
the shortest one that still satisfies every click.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_fbrs.core.clicks import Click

__all__ = ["LbfgsSettings", "BrsObjective", "click_disks", "run_lbfgs", "trim_overshoot"]


@dataclass(frozen=True)
class LbfgsSettings:
    """L-BFGS-B settings (defaults: the f-BRS reference evaluation)."""

    m: int = 20
    factr: float = 0.0
    pgtol: float = 1e-8
    maxfun: int = 20

    @property
    def maxiter(self) -> int:
        return 2 * self.maxfun


def click_disks(
    clicks_lists: Sequence[Sequence[Click]], height: int, width: int, radius: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square ``(2r+1)^2`` patches around clicks, as float masks (the BRS loss's targets).

    The patch of a click is the slice ``[y - r : y + r + 1, x - r : x + r + 1]`` around its
    rounded coordinates (Python's ``round``: halves to even), exactly as the reference
    predictor takes it, Python slice rules included: a click within ``r`` pixels of the
    top or left border starts its slice at a negative index, which selects nothing, so such
    a click has no patch (and does not enter the loss); at the bottom and right borders
    the patch is simply cut.

    Parameters
    ----------
    clicks_lists : sequence of sequences of Click
        One list per batch item, ``(y, x)`` in pixels of the ``(height, width)`` view.
    height, width : int
        Size of the masks.
    radius : int
        Half side of the patches.

    Returns
    -------
    (pos, neg) : torch.Tensor
        Each ``(B, 1, height, width)`` float32 with 1 on the patches of that polarity.
    """
    pos = np.zeros((len(clicks_lists), 1, height, width), dtype=np.float32)
    neg = np.zeros_like(pos)
    for b, clicks in enumerate(clicks_lists):
        for c in clicks:
            y, x = int(round(c.y)), int(round(c.x))
            target = pos if c.positive else neg
            target[b, 0, y - radius : y + radius + 1, x - radius : x + radius + 1] = 1
    return torch.from_numpy(pos), torch.from_numpy(neg)


class BrsObjective:
    """Callable for ``scipy.optimize.fmin_l_bfgs_b``: ``x -> (loss, gradient)``.

    Parameters
    ----------
    logits_fn : callable
        ``logits_fn(params) -> (B, 1, h, w)`` logits at click-map resolution, where
        ``params`` is the float32 torch vector being optimised (requires grad).
    reg_fn : callable
        ``reg_fn(params) -> scalar tensor`` regulariser.
    pos_mask, neg_mask : torch.Tensor
        ``(B, 1, h, w)`` click patches (:func:`click_disks`).
    prob_thresh : float
        Probability threshold of the mask.
    min_iou_diff : float
        Stop when the mask IoU between consecutive evaluations exceeds ``1 - min_iou_diff``.
    cancel : callable, optional
        ``cancel() -> bool``; when true, evaluation stops at once.
    """

    def __init__(
        self,
        logits_fn: Callable[[torch.Tensor], torch.Tensor],
        reg_fn: Callable[[torch.Tensor], torch.Tensor],
        pos_mask: torch.Tensor,
        neg_mask: torch.Tensor,
        prob_thresh: float = 0.49,
        min_iou_diff: float = 0.01,
        device: torch.device | str = "cpu",
        cancel: Callable[[], bool] | None = None,
    ):
        self.logits_fn = logits_fn
        self.reg_fn = reg_fn
        self.pos_mask = pos_mask.to(device)
        self.neg_mask = neg_mask.to(device)
        self.pos_count = float(self.pos_mask.sum()) + 1e-5
        self.neg_count = float(self.neg_mask.sum()) + 1e-5
        self.prob_thresh = prob_thresh
        self.min_iou_diff = min_iou_diff
        self.device = device
        self.cancel = cancel
        self.best_logits: torch.Tensor | None = None
        self.best_loss = np.inf
        self.evaluations = 0
        #: ``(x_before, x_after)``: the last unsatisfied point evaluated and the first point
        #: after it that satisfies every click (None until that happens)
        self.satisfying_step: tuple[np.ndarray, np.ndarray] | None = None
        self._last_mask: torch.Tensor | None = None
        self._last_unsatisfied: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        zero = np.zeros_like(x)
        if self.cancel is not None and self.cancel():
            return (self.best_loss if np.isfinite(self.best_loss) else 0.0), zero
        self.evaluations += 1
        params = torch.from_numpy(x).to(self.device, torch.float32).requires_grad_(True)
        with torch.enable_grad():
            logits = self.logits_fn(params)
            prob = torch.sigmoid(logits)
            pos_diff = (1 - prob) * self.pos_mask
            neg_diff = prob * self.neg_mask
            loss = (
                pos_diff.square().sum() / self.pos_count
                + neg_diff.square().sum() / self.neg_count
                + self.reg_fn(params)
            )
        value = float(loss.detach())
        if value < self.best_loss:
            self.best_loss = value
            self.best_logits = logits.detach()
        with torch.no_grad():
            satisfied = self._satisfied(pos_diff, neg_diff)
        if satisfied:
            if self.satisfying_step is None and self._last_unsatisfied is not None:
                self.satisfying_step = (self._last_unsatisfied, np.array(x, dtype=np.float64))
            return value, zero  # every click satisfied
        self._last_unsatisfied = np.array(x, dtype=np.float64)
        mask = prob.detach() > self.prob_thresh
        if self._last_mask is not None and self.min_iou_diff > 0:
            iou = _batch_iou(mask, self._last_mask)
            if iou.size and iou.mean() > 1 - self.min_iou_diff:
                return value, zero  # the mask has stopped changing
        self._last_mask = mask
        # Only d(loss)/d(params): autograd.grad skips the gradients of the network's own
        # weights (and never accumulates anything into their .grad).
        (grad,) = torch.autograd.grad(loss, params)
        return value, grad.cpu().numpy().astype(np.float64).ravel()

    def _satisfied(self, pos_diff: torch.Tensor, neg_diff: torch.Tensor) -> bool:
        return (
            float(pos_diff.abs().max()) < 1 - self.prob_thresh
            and float(neg_diff.abs().max()) < self.prob_thresh
        )

    def satisfies(self, x: np.ndarray) -> tuple[bool, torch.Tensor]:
        """Whether the variables ``x`` satisfy every click, and their logits (no gradient;
        counted as an evaluation)."""
        self.evaluations += 1
        params = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(self.device)
        with torch.no_grad():
            logits = self.logits_fn(params)
            prob = torch.sigmoid(logits)
            ok = self._satisfied((1 - prob) * self.pos_mask, prob * self.neg_mask)
        return ok, logits


def trim_overshoot(
    objective: BrsObjective, steps: int = 4
) -> tuple[np.ndarray, torch.Tensor] | None:
    """The shortest part of the step that first satisfied the clicks that still does.

    L-BFGS-B stops at the first evaluation that satisfies every click, and its line search
    often lands far past the point where they became satisfied. Bisecting the segment from
    the last unsatisfied point to that one (``steps`` forward passes of the part of the
    network after the variables) finds a point that satisfies the clicks with a smaller
    change, to within ``2**-steps`` of the step.

    Parameters
    ----------
    objective : BrsObjective
        After :func:`run_lbfgs`.
    steps : int
        Bisection steps.

    Returns
    -------
    (x, logits) or None
        The trimmed variables (float64) and their logits (as ``logits_fn`` returns them);
        ``None`` when the optimisation never crossed from unsatisfied to satisfied, or no
        shorter step satisfies the clicks.
    """
    if objective.satisfying_step is None:
        return None
    start, end = objective.satisfying_step
    lo, hi = 0.0, 1.0
    found: torch.Tensor | None = None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        ok, logits = objective.satisfies(start + mid * (end - start))
        if ok:
            hi, found = mid, logits
        else:
            lo = mid
    if found is None:
        return None
    return start + hi * (end - start), found


def _batch_iou(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    dims = tuple(range(1, a.dim()))
    union = (a | b).float().mean(dim=dims).cpu().numpy()
    inter = (a & b).float().mean(dim=dims).cpu().numpy()
    keep = union > 0
    return inter[keep] / union[keep]


def run_lbfgs(objective: BrsObjective, x0: np.ndarray, settings: LbfgsSettings) -> np.ndarray:
    """Minimise ``objective`` from ``x0``; returns the final variables (float64)."""
    from scipy.optimize import fmin_l_bfgs_b

    x, _, _ = fmin_l_bfgs_b(
        objective,
        x0.astype(np.float64, copy=False),
        m=settings.m,
        factr=settings.factr,
        pgtol=settings.pgtol,
        maxfun=settings.maxfun,
        maxiter=settings.maxiter,
    )
    return x
