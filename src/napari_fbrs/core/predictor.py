"""The interactive predictor: clicks in, probability maps out, with BRS refinement.

Modes (f-BRS paper, table 1):

* ``NoBRS``: the network alone.
* ``RGB-BRS``: optimise an additive correction of the input image (BRS, Jang & Kim 2019).
* ``DistMap-BRS``: optimise an additive correction of the click maps.
* ``f-BRS-A/B/C``: optimise a per-channel scale and bias of intermediate features at the
  network's insertion site A, B or C; only the part of the network after the site runs
  during the optimisation, which is what makes f-BRS fast.

A prediction for the current clicks runs as: choose the view (whole image, or the ZoomIn
crop), resize it (longest-side limit), add its horizontal flip to the batch, compute the
logits of the mode, average the flip halves, sigmoid, and paste the view back into the
full image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from napari_fbrs.core.brs import (
    BrsObjective,
    LbfgsSettings,
    click_disks,
    run_lbfgs,
    trim_overshoot,
)
from napari_fbrs.core.clicks import Click, clicks_to_points
from napari_fbrs.core.image import ImageSource, reflect_indices
from napari_fbrs.core.models.base import InteractiveNet
from napari_fbrs.core.models.inference import inference_network
from napari_fbrs.core.models.registry import resolve_device
from napari_fbrs.core.transforms import MIN_VIEW_SIZE, Roi, ZoomIn, clicks_to_view, view_size

__all__ = ["MODES", "Predictor"]

MODES = ("NoBRS", "RGB-BRS", "DistMap-BRS", "f-BRS-A", "f-BRS-B", "f-BRS-C")
# clicks given to the network by default (the reference evaluation's settings)
_DEFAULT_NET_CLICKS = {
    "NoBRS": None,
    "RGB-BRS": 5,
    "DistMap-BRS": 5,
    "f-BRS-A": 8,
    "f-BRS-B": 8,
    "f-BRS-C": 8,
}


# undo keeps the full state (probability map, BRS variables) of this many clicks on either
# side of the current one; states further away keep only their clicks and crop and are
# recomputed when undo/redo reaches them, so memory does not grow with the session
FULL_STATES = 32


@dataclass(frozen=True)
class _State:
    """Everything that defines the predictor after a click (what undo restores)."""

    clicks: tuple[Click, ...] = ()
    prob: np.ndarray | None = None  # (H, W) float32
    roi: Roi | None = None  # ZoomIn crop, None = whole image
    opt: np.ndarray | None = None  # BRS variables after the last optimisation (float32)

    @property
    def thin(self) -> bool:
        """Clicks without a map: dropped to bound memory, recomputed when needed."""
        return self.prob is None and bool(self.clicks)


class Predictor:
    """Click-by-click segmentation of one 2D image with a network and a BRS mode.

    Parameters
    ----------
    net : InteractiveNet
        A network from :func:`napari_fbrs.build_model` / :func:`napari_fbrs.load_model`.
        It is moved to ``device`` and put in eval mode.
    mode : str
        One of :data:`MODES`.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    with_flip : bool
        Average the prediction with that of the horizontally flipped image.
    zoom_in : ZoomIn or None
        ZoomIn settings; ``None`` turns it off.
    prob_thresh : float
        Threshold of :attr:`mask` and of the BRS click-consistency checks.
    max_size : int or None
        Longest side, in pixels, of what the network sees (larger views are shrunk).
    lbfgs_maxfun : int
        Maximum objective evaluations of L-BFGS-B per click.
    net_clicks_limit : int or None
        Clicks given to the network; ``None``: the mode's default (8 for f-BRS, 5 for
        RGB-/DistMap-BRS, all for NoBRS). Later clicks act only through the optimisation.
    optimize_after_n_clicks : int
        BRS starts once there are more clicks than this.
    reg_weight, bias_reg_weight : float
        L2 weights of the auxiliary variables (f-BRS biases get ``reg_weight *
        bias_reg_weight``).
    min_iou_diff : float
        Stop optimising once the mask changes by less than this IoU between evaluations.
    lbfgs_m : int
        L-BFGS memory.
    min_size : int or None
        Whole-image views whose longer side is shorter than this are enlarged to it
        (:data:`MIN_VIEW_SIZE` by default): the networks see too little on tiny images
        (``fbrs-lite`` finds nothing in a 96-pixel image, a 128-pixel one works). ZoomIn
        crops are always resized to ``target_size``; a smaller ``max_size`` wins. ``None``:
        images as they are.
    trim_overshoot : bool
        After L-BFGS-B first satisfies the clicks, step back along its last step to the
        shortest part that still satisfies them (:func:`napari_fbrs.core.brs.trim_overshoot`,
        4 more passes of the network's part after the variables). An extension, off by
        default as in the paper: its line search often overshoots, so that a corrective
        click at an object's edge carves a notch or floods the surroundings, most visibly
        on small objects.
    inference_copy : bool
        Run a copy of the network with batch norms folded into their convolutions and
        channels-last weights (:func:`napari_fbrs.core.models.inference.inference_network`,
        made once per network and shared): about twice as fast on a CPU for ``fbrs-lite``,
        outputs equal to float32 rounding. ``False`` runs ``net`` itself (no second copy
        of the weights in memory).

    Examples
    --------
    >>> p = Predictor(net, mode="f-BRS-B")            # doctest: +SKIP
    >>> p.set_image(image)                            # doctest: +SKIP
    >>> prob = p.add_click(120, 200, positive=True)   # doctest: +SKIP
    """

    def __init__(
        self,
        net: InteractiveNet,
        mode: str = "f-BRS-B",
        device: str = "auto",
        with_flip: bool = True,
        zoom_in: ZoomIn | None = ZoomIn(),  # noqa: B008 (frozen, safe to share)
        prob_thresh: float = 0.49,
        max_size: int | None = None,
        lbfgs_maxfun: int = 20,
        net_clicks_limit: int | None = None,
        *,
        optimize_after_n_clicks: int = 1,
        reg_weight: float = 1e-3,
        bias_reg_weight: float = 10.0,
        min_iou_diff: float = 0.01,
        lbfgs_m: int = 20,
        min_size: int | None = MIN_VIEW_SIZE,
        trim_overshoot: bool = False,
        inference_copy: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if not isinstance(net, InteractiveNet):
            raise TypeError(
                f"net must be an InteractiveNet (from build_model/load_model), "
                f"got {type(net).__name__}"
            )
        if mode.startswith("f-BRS") and mode not in net.brs_sites:
            raise ValueError(f"{mode} is not defined for {type(net).__name__}")
        if not 0.0 < prob_thresh < 1.0:
            raise ValueError(f"prob_thresh must lie in (0, 1), got {prob_thresh}")
        if max_size is not None and max_size < 16:
            raise ValueError(f"max_size must be at least 16 pixels, got {max_size}")
        if min_size is not None and min_size < 16:
            raise ValueError(f"min_size must be at least 16 pixels, got {min_size}")

        if lbfgs_maxfun < 1:
            raise ValueError(f"lbfgs_maxfun must be >= 1, got {lbfgs_maxfun}")
        if net_clicks_limit is not None and net_clicks_limit < 1:
            raise ValueError(f"net_clicks_limit must be >= 1 or None, got {net_clicks_limit}")
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.mode = mode
        self.with_flip = bool(with_flip)
        self.zoom_in = zoom_in
        self.prob_thresh = float(prob_thresh)
        self.max_size = max_size
        # a longest-side limit below it wins: both bound the same side
        self.min_size = min(min_size, max_size) if min_size and max_size else min_size
        self.net_clicks_limit = (
            _DEFAULT_NET_CLICKS[mode] if net_clicks_limit is None else int(net_clicks_limit)
        )
        self.lbfgs = LbfgsSettings(m=lbfgs_m, maxfun=lbfgs_maxfun)
        self.optimize_after_n_clicks = optimize_after_n_clicks
        self.reg_weight = reg_weight
        self.bias_reg_weight = bias_reg_weight
        self.min_iou_diff = min_iou_diff
        self.trim_overshoot = bool(trim_overshoot)
        self.inference_copy = bool(inference_copy)
        self._cancel: Callable[[], bool] | None = None
        self._source: ImageSource | None = None
        self._views: dict[tuple, torch.Tensor] = {}
        self._features: tuple[Any, Any] | None = None  # (key, (features, context))
        self._history: list[_State] = [_State()]
        self._pos = 0
        self._prior: np.ndarray | None = None  # (H, W) float32, see set_prior
        #: number of objective evaluations of the last click (0 without BRS)
        self.last_evaluations = 0

    # -- public API -----------------------------------------------------------------------
    def set_image(self, image: np.ndarray, contrast_limits: Sequence[float] | None = None) -> None:
        """Set the image to segment; clears clicks and history.

        Parameters
        ----------
        image : numpy.ndarray
            ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, any numeric dtype
            (see :mod:`napari_fbrs.core.image` for the normalisation).
        contrast_limits : (low, high), optional
            Intensity window mapped to [0, 1] (napari's layer contrast limits).
        """
        self._source = ImageSource(image, contrast_limits, self.net.input_normalization)
        self._views.clear()
        self._features = None
        self.reset()

    def add_click(self, y: float, x: float, positive: bool = True) -> np.ndarray:
        """Add a click and return the new probability map.

        Parameters
        ----------
        y, x : float
            Row and column in image pixels (napari ``(row, col)``); the pixel whose centre
            is nearest must lie inside the image.
        positive : bool
            Object (``True``) or background (``False``).

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` float32 in ``[0, 1]`` for all clicks so far.

        Raises
        ------
        ValueError
            Click outside the image or not finite; nothing changes.
        RuntimeError
            No image set.
        """
        click = self._make_click(y, x, positive)
        state = self._predict(self.state.clicks + (click,), self.state)
        del self._history[self._pos + 1 :]
        self._history.append(state)
        self._pos += 1
        self._thin_distant_states()
        return self.prob

    def undo(self) -> np.ndarray:
        """Go back one click; returns the probability map then (zeros with no clicks).

        The last :data:`FULL_STATES` clicks are restored exactly (probability map, ZoomIn
        crop, BRS variables). Older ones are recomputed from their clicks in their crop,
        without the BRS warm start and previous mask of the original run, so they can
        differ slightly from what was shown then.
        """
        if self._pos > 0:
            self._move_to(self._pos - 1)
        return self.prob

    def redo(self) -> np.ndarray:
        """Re-apply an undone click; returns its probability map."""
        if self._pos < len(self._history) - 1:
            self._move_to(self._pos + 1)
        return self.prob

    def reset(self) -> None:
        """Forget all clicks and the prior mask (start a new object); the image stays."""
        self._history = [_State()]
        self._pos = 0
        self._prior = None

    def set_prior(self, prior: np.ndarray | None) -> None:
        """Give networks with a previous-mask input a starting mask for the first click.

        Networks that take the previous prediction as an input (``net.uses_prev_mask``:
        ``fbrs-lite``, the RITM models) normally start from an empty mask; a prior, e.g. the
        object on the neighbouring slice of a stack, tells them roughly where and how large
        the object is. Other networks ignore it. It lasts until :meth:`reset` or
        :meth:`set_image`; the clicks do not change.

        Parameters
        ----------
        prior : numpy.ndarray or None
            ``(H, W)`` bool or float in ``[0, 1]``, the image's shape; ``None`` removes it.

        Raises
        ------
        ValueError
            Wrong shape or values outside ``[0, 1]``; the predictor is unchanged.
        RuntimeError
            No image set.
        """
        if prior is None:
            self._prior = None
            return
        if self._source is None:
            raise RuntimeError("set an image before a prior mask")
        arr = np.asarray(prior)
        if arr.shape != self.image_shape:
            raise ValueError(f"prior mask shape {arr.shape} is not the image's {self.image_shape}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"prior mask must be bool or numeric, got {arr.dtype}")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError("prior mask values must lie in [0, 1]")
        self._prior = arr

    def set_cancel_callback(self, fn: Callable[[], bool] | None) -> None:
        """``fn() -> bool`` polled during optimisation; ``True`` stops it early."""
        self._cancel = fn

    @property
    def state(self) -> _State:
        return self._history[self._pos]

    def _move_to(self, pos: int) -> None:
        state = self._history[pos]
        if state.thin:
            prev = self._history[pos - 1] if pos > 0 else _State()
            if prev.thin:
                prev = _State()
            recomputed = self._predict(state.clicks, prev, roi=state.roi)
            self._history[pos] = recomputed
        self._pos = pos
        self._thin_distant_states()

    def _thin_distant_states(self) -> None:
        for i, s in enumerate(self._history):
            if abs(i - self._pos) > FULL_STATES and s.prob is not None:
                self._history[i] = _State(clicks=s.clicks, roi=s.roi)

    @property
    def clicks(self) -> list[Click]:
        """The current clicks, oldest first."""
        return list(self.state.clicks)

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image set with :meth:`set_image`."""
        if self._source is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._source.shape

    @property
    def prob(self) -> np.ndarray:
        """``(H, W)`` float32 probability map of the current clicks (zeros without any)."""
        if self.state.prob is None:
            return np.zeros(self.image_shape, dtype=np.float32)
        return self.state.prob

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool, ``prob >= prob_thresh``."""
        return self.prob >= self.prob_thresh

    @property
    def can_undo(self) -> bool:
        return self._pos > 0

    @property
    def can_redo(self) -> bool:
        return self._pos < len(self._history) - 1

    # -- internals --------------------------------------------------------------------------
    def _make_click(self, y: float, x: float, positive: bool) -> Click:
        h, w = self.image_shape
        y, x = float(y), float(x)
        if not (np.isfinite(y) and np.isfinite(x)):
            raise ValueError(f"click ({y}, {x}) is not a finite coordinate")
        # pixel i covers [i - 0.5, i + 0.5): accept what napari shows as inside the image
        if not (-0.5 <= y < h - 0.5 and -0.5 <= x < w - 0.5):
            raise ValueError(f"click (y={y:g}, x={x:g}) lies outside the image of shape ({h}, {w})")
        return Click(min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0), bool(positive))

    def _view(self, roi: Roi, size: tuple[int, int]) -> torch.Tensor:
        key = (roi, size)
        if key not in self._views:
            if len(self._views) > 4:
                self._views.clear()
            self._views[key] = self._source.view(roi, size).to(self.device)
        return self._views[key]

    def _predict(self, clicks: tuple[Click, ...], prev: _State, roi: Any = False) -> _State:
        """The state after ``clicks``, continuing from ``prev``; ``roi`` (a crop or
        ``None``) replaces ZoomIn's choice when given."""
        h, w = self.image_shape
        zoom = self.zoom_in
        if (
            roi is False
            and zoom is not None
            and zoom.first_click_crop == "auto"
            and len(clicks) <= zoom.skip_clicks
        ):
            whole = self._predict(clicks, prev, roi=None)
            crop = zoom.small_object_roi(whole.prob, clicks)
            return whole if crop is None else self._predict(clicks, prev, roi=crop)
        full: Roi = (0, h - 1, 0, w - 1)
        changed = False
        if roi is not False:
            changed = roi != prev.roi
        elif self.zoom_in is not None:
            roi, changed = self.zoom_in.next_roi(prev.roi, clicks, prev.prob, (h, w))
        else:
            roi = None
        view_roi = roi if roi is not None else full
        size = view_size(
            view_roi,
            roi is not None,
            self.zoom_in.target_size if self.zoom_in else None,
            self.max_size,
            self.min_size,
        )
        identity = roi is None and size == (h, w)
        image = self._view(view_roi, size)
        view_clicks = list(clicks) if identity else clicks_to_view(clicks, view_roi, size)
        lists = [view_clicks]
        if self.with_flip:
            image = torch.cat([image, image.flip(3)], dim=0)
            lists.append([Click(c.y, size[1] - c.x - 1, c.positive) for c in view_clicks])
        prev_mask = self._prev_mask_view(prev, view_roi, size) if self.net.uses_prev_mask else None

        self.last_evaluations = 0
        if self.mode == "NoBRS":
            logits, opt = self._nobrs(image, lists, prev_mask, size), None
        elif self.mode.startswith("f-BRS"):
            logits, opt = self._fbrs(image, lists, prev_mask, size, view_roi, prev.opt)
        else:
            logits, opt = self._input_brs(image, lists, prev_mask, size, changed, prev.opt)

        with torch.inference_mode():
            if self.with_flip:
                logits = 0.5 * (logits[:1] + logits[1:].flip(3))
            prob_view = torch.sigmoid(logits)
            if identity:
                prob = prob_view[0, 0].float().cpu().numpy()
            else:
                r0, r1, c0, c1 = view_roi
                pasted = (
                    F.interpolate(
                        prob_view,
                        size=(r1 - r0 + 1, c1 - c0 + 1),
                        mode="bilinear",
                        align_corners=True,
                    )[0, 0]
                    .float()
                    .cpu()
                    .numpy()
                )
                # a crop may reach past the image (ZoomIn.beyond_border): keep what is inside
                top, left = max(r0, 0), max(c0, 0)
                bottom, right = min(r1, h - 1), min(c1, w - 1)
                prob = np.zeros((h, w), dtype=np.float32)
                prob[top : bottom + 1, left : right + 1] = pasted[
                    top - r0 : bottom - r0 + 1, left - c0 : right - c0 + 1
                ]
        if opt is not None:  # float32 halves what undo keeps; L-BFGS-B restarts in float64
            opt = np.asarray(opt, dtype=np.float32)
        return _State(clicks=clicks, prob=prob, roi=roi, opt=opt)

    def _prev_mask_view(self, prev: _State, roi: Roi, size: tuple[int, int]) -> torch.Tensor:
        source = prev.prob
        if source is None and not prev.clicks:  # the start state: the prior, if any
            source = self._prior
        if source is None:
            mask = torch.zeros((1, 1, *size), device=self.device)
        else:
            rows = reflect_indices(roi[0], roi[1], source.shape[0])
            cols = reflect_indices(roi[2], roi[3], source.shape[1])
            crop = torch.from_numpy(np.ascontiguousarray(source[np.ix_(rows, cols)]))
            mask = crop[None, None].to(self.device)
            if tuple(mask.shape[2:]) != size:
                mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=True)
        return torch.cat([mask, mask.flip(3)], dim=0) if self.with_flip else mask

    def _engine(self) -> InteractiveNet:
        # the network's folded, channels-last copy, shared by the predictors of one network
        return inference_network(self.net) if self.inference_copy else self.net

    def _points(self, lists: list[list[Click]]) -> torch.Tensor:
        return clicks_to_points(
            lists,
            limit=self.net_clicks_limit,
            with_index=self.net.uses_prev_mask,
            device=self.device,
        )

    def _upsample(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(logits.shape[2:]) == size:
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def _nobrs(self, image, lists, prev_mask, size) -> torch.Tensor:
        with torch.inference_mode():
            net = self._engine()
            maps = net.encode_clicks(image, self._points(lists), prev_mask)
            return self._upsample(net.logits_from_maps(image, maps), size)

    def _optimise(self, logits_fn, reg_fn, lists, size, x0: np.ndarray) -> tuple[Any, np.ndarray]:
        """Run L-BFGS-B if there are enough clicks; returns (best logits or None, x)."""
        if len(lists[0]) <= self.optimize_after_n_clicks:
            return None, x0
        pos, neg = click_disks(lists, size[0], size[1])
        objective = BrsObjective(
            logits_fn,
            reg_fn,
            pos,
            neg,
            self.prob_thresh,
            self.min_iou_diff,
            self.device,
            self._cancel,
        )
        x = run_lbfgs(objective, x0, self.lbfgs)
        best = objective.best_logits
        if self.trim_overshoot and not (self._cancel is not None and self._cancel()):
            trimmed = trim_overshoot(objective)
            if trimmed is not None:
                x, best = trimmed
        self.last_evaluations = objective.evaluations
        return best, x

    def _fbrs(self, image, lists, prev_mask, size, roi, prev_opt):
        net = self._engine()
        site = net.brs_sites[self.mode]
        channels = net.site_channels(site)
        limit = self.net_clicks_limit
        key = (site, roi, size, tuple(lists[0][:limit]), self.with_flip)
        if self._features is None or self._features[0] != key:
            with torch.no_grad():
                maps = net.encode_clicks(image, self._points(lists), prev_mask)
                self._features = (key, net.site_features(site, image, maps))
        features, context = self._features[1]

        def logits_fn(params: torch.Tensor) -> torch.Tensor:
            scale = (1 + params[:channels]).view(1, channels, 1, 1)
            bias = params[channels:].view(1, channels, 1, 1)
            return self._upsample(
                net.logits_from_site(site, features * scale + bias, context), size
            )

        def reg_fn(params: torch.Tensor) -> torch.Tensor:
            return self.reg_weight * (
                params[:channels].square().sum()
                + self.bias_reg_weight * params[channels:].square().sum()
            )

        x0 = (
            prev_opt
            if prev_opt is not None and prev_opt.size == 2 * channels
            else (np.zeros(2 * channels, dtype=np.float32))
        )
        best, x = self._optimise(logits_fn, reg_fn, lists, size, x0)
        if best is None:
            with torch.inference_mode():
                best = logits_fn(torch.from_numpy(np.asarray(x, np.float32)).to(self.device))
        return best, x

    def _input_brs(self, image, lists, prev_mask, size, changed, prev_opt):
        net = self._engine()
        on_image = self.mode == "RGB-BRS"
        shape = (1, 3 if on_image else 2, *size)
        flip = self.with_flip
        first = int(getattr(net, "distance_maps_channel", -2))
        # the click maps do not depend on the variables: encode them once per click
        with torch.no_grad():
            maps0 = net.encode_clicks(image, self._points(lists), prev_mask)
        first %= maps0.shape[1]  # channel of the positive distance map

        def unpack(params: torch.Tensor) -> torch.Tensor:
            v = params.view(shape)
            return torch.cat([v, v.flip(3)], dim=0) if flip else v

        def logits_fn(params: torch.Tensor) -> torch.Tensor:
            v = unpack(params)
            if on_image:
                img, maps = image + v, maps0
            else:  # only the two click distance maps, not a previous-mask channel
                img = image
                extra = maps0.shape[1] - 2
                maps = maps0 + (F.pad(v, (0, 0, 0, 0, first, extra - first)) if extra else v)
            return self._upsample(net.logits_from_maps(img, maps), size)

        def reg_fn(params: torch.Tensor) -> torch.Tensor:
            return self.reg_weight * unpack(params).square().sum()

        n = int(np.prod(shape))
        if prev_opt is None or changed or prev_opt.size != n:
            x0 = np.zeros(n, dtype=np.float32)
        else:
            x0 = prev_opt
        best, x = self._optimise(logits_fn, reg_fn, lists, size, x0)
        if best is None:
            with torch.inference_mode():
                best = logits_fn(torch.from_numpy(np.asarray(x, np.float32)).to(self.device))
        return best, x
