"""Previews: prediction requests, their computation on any thread, applying and rollback."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fbrs.core.session.entries import _ClicksEdit
from napari_fbrs.core.session.types import (
    Change,
    Clicks,
    PredictionRequest,
    PredictionResult,
    PropagationRequest,
    SessionClick,
    SliceKey,
    _Object,
)

if TYPE_CHECKING:  # pragma: no cover
    from napari_fbrs.core.predictor import Predictor


def _clamped(click: SessionClick, shape: tuple[int, int]) -> tuple[float, float, bool]:
    """The click as the predictor stores it (clamped onto the pixel grid)."""
    h, w = shape
    return (
        min(max(float(click.y), 0.0), h - 1.0),
        min(max(float(click.x), 0.0), w - 1.0),
        bool(click.positive),
    )


class _CancelProbe:
    """Cancel callback for one request that remembers whether it ever fired."""

    def __init__(self, stale: Callable[[], bool]):
        self._stale = stale
        self.fired = False

    def __call__(self) -> bool:
        if self._stale():
            self.fired = True
        return self.fired


class _PredictionMixin:
    """Prediction of :class:`SegmentationSession` (which sets ``_lock``, ``_live`` and
    ``predictor_factory``)."""

    @property
    def prob_thresh(self) -> float:
        """Threshold of the masks (``prob >= prob_thresh``), in ``(0, 1)``."""
        return self._prob_thresh

    @prob_thresh.setter
    def prob_thresh(self, value: float) -> None:
        value = float(value)
        if not 0.0 < value < 1.0:
            raise ValueError(f"prob_thresh must lie in (0, 1), got {value}")
        self._prob_thresh = value

    def prob(self, key: SliceKey = ()) -> np.ndarray | None:
        """Last computed ``(H, W)`` float32 probability map of slice ``key`` (or ``None``).

        It belongs to the clicks of the last applied prediction; see :meth:`is_up_to_date`.
        """
        obj = self._objects.get(self.check_key(key))
        return None if obj is None or not obj.clicks else obj.prob

    def mask(self, key: SliceKey = ()) -> np.ndarray | None:
        """``(H, W)`` bool preview mask of slice ``key`` (``prob >= prob_thresh``) or ``None``."""
        prob = self.prob(key)
        return None if prob is None else prob >= self._prob_thresh

    def preview_keys(self) -> list[SliceKey]:
        """Slices that have a preview (clicks and a computed probability map)."""
        return [k for k, o in sorted(self._objects.items()) if o.clicks and o.prob is not None]

    def is_up_to_date(self, key: SliceKey = ()) -> bool:
        """Whether slice ``key``'s preview belongs to its current clicks."""
        obj = self._objects.get(self.check_key(key))
        return (
            obj is None
            or not obj.clicks
            or (obj.prob is not None and obj.prob_clicks == obj.clicks)
        )

    def predictor(self, key: SliceKey = ()) -> Predictor | None:
        """The predictor of slice ``key``'s current object (``None`` until its first prediction).

        Do not call it while a :meth:`compute` runs on another thread.
        """
        obj = self._objects.get(self.check_key(key))
        return None if obj is None else obj.predictor

    def request(self, key: SliceKey = ()) -> PredictionRequest | None:
        """Snapshot what slice ``key`` needs predicted (main thread).

        Returns
        -------
        PredictionRequest or None
            ``None`` when the preview is up to date; a slice without clicks gets its
            preview cleared and needs nothing.
        """
        key = self.check_key(key)
        obj = self._obj(key)
        if not obj.clicks:
            obj.prob, obj.prob_clicks = None, ()
            return None
        if obj.prob is not None and obj.prob_clicks == obj.clicks:
            return None
        return PredictionRequest(key, obj.clicks, obj, self._input_gen)

    def is_stale(self, request: PredictionRequest | PropagationRequest) -> bool:
        """Whether ``request`` no longer describes its slice (clicks changed or committed,
        or the channels the model sees changed)."""
        return (
            self._objects.get(request.key) is not request.obj
            or request.obj.clicks != request.clicks
            or request.gen != self._input_gen
        )

    def compute(self, request: PredictionRequest) -> PredictionResult | None:
        """Run the predictor for ``request``; safe to call from a worker thread.

        The object's predictor is made on first use (``predictor_factory`` then
        ``set_image`` with the slice) and brought to the requested clicks by undo, redo
        and ``add_click``, so a click costs one prediction and an undo none.

        Returns
        -------
        PredictionResult or None
            ``None`` when the request went stale meanwhile (nothing to apply); the
            predictor is then left at a state of fully optimised clicks only.

        Raises
        ------
        Exception
            Whatever making the predictor or predicting raised (model missing, click
            rejected, out of memory...); the session's clicks and previews are untouched,
            see :meth:`rollback`.
        """
        started = time.perf_counter()
        with self._lock:
            if self.is_stale(request):
                return None
            obj = request.obj
            pred = obj.predictor
            if pred is None or obj.pred_gen != request.gen:
                if self.predictor_factory is None:
                    raise RuntimeError("no predictor factory: set session.predictor_factory")
                pred = self.predictor_factory()
                image, limits = self.input_slice(request.key)
                pred.set_image(image, contrast_limits=limits)
                obj.predictor, obj.redo_dirty, obj.pred_gen = pred, False, request.gen
            self._touch(obj)
            probe = _CancelProbe(lambda: self.is_stale(request))
            pred.set_cancel_callback(probe)
            try:
                done = self._sync(pred, obj, request.clicks, probe)
            finally:
                pred.set_cancel_callback(None)
            if not done or self.is_stale(request):
                return None
            prob = np.array(pred.prob, dtype=np.float32, copy=True)
            return PredictionResult(request, prob, time.perf_counter() - started)

    def _sync(self, pred: Any, obj: _Object, target: Clicks, probe: _CancelProbe) -> bool:
        """Bring ``pred`` to the clicks ``target``; False when cancelled on the way."""
        shape = self.spatial_shape
        want = [_clamped(c, shape) for c in target]
        have = [(c.y, c.x, c.positive) for c in pred.clicks]
        common = 0
        while common < min(len(want), len(have)) and want[common] == have[common]:
            common += 1
        while len(pred.clicks) > common:
            pred.undo()
        for i in range(common, len(want)):
            if probe():
                return False
            if not obj.redo_dirty and pred.can_redo:
                pred.redo()
                last = pred.clicks[-1]
                if (last.y, last.x, last.positive) == want[i]:
                    continue
                pred.undo()
            probe.fired = False
            pred.add_click(target[i].y, target[i].x, target[i].positive)
            obj.redo_dirty = False
            if probe.fired:  # the optimisation was cut short: do not keep that state
                pred.undo()
                obj.redo_dirty = True
                return False
        return True

    def _touch(self, obj: _Object) -> None:
        if obj in self._live:
            self._live.remove(obj)
        self._live.append(obj)
        while len(self._live) > self.max_live_predictors:
            old = self._live.pop(0)
            old.predictor, old.redo_dirty = None, False

    def apply(self, result: PredictionResult | None) -> bool:
        """Store a computed result as its slice's preview (main thread).

        Returns
        -------
        bool
            ``False`` for ``None`` or a stale result (dropped).
        """
        if result is None or self.is_stale(result.request):
            return False
        obj = result.request.obj
        obj.prob, obj.prob_clicks = result.prob, result.request.clicks
        obj.prob_gen = result.request.gen
        return True

    def predict(self, key: SliceKey = ()) -> np.ndarray | None:
        """Request, compute and apply in the calling thread; returns the preview's prob map.

        Returns
        -------
        numpy.ndarray or None
            ``(H, W)`` float32 for the current clicks, ``None`` without clicks.
        """
        key = self.check_key(key)
        request = self.request(key)
        if request is not None:
            self.apply(self.compute(request))
        return self.prob(key)

    def rollback(self, request: PredictionRequest) -> Change | None:
        """Undo the click edits that led to a failed ``request`` (main thread).

        The slice's clicks go back to those of its last successful prediction, and the
        undo entries that added the failing clicks are dropped, so everything is as it
        was before them. Nothing happens if the request is already stale.

        Returns
        -------
        Change or None
            What changed.
        """
        if self.is_stale(request):
            return None
        key, obj = request.key, request.obj
        good = obj.prob_clicks if obj.prob is not None else ()
        if obj.clicks == good:
            return None
        cut = None
        for i in range(len(self._done) - 1, -1, -1):
            entry = self._done[i]
            if not (isinstance(entry, _ClicksEdit) and entry.key == key):
                break
            if entry.before == good:
                cut = i
                break
        if cut is not None:
            del self._done[cut:]
            self._undone.clear()
            obj.clicks = good
        else:
            self._record(_ClicksEdit(key, obj.clicks, good))
        return Change((key,), False, "rollback of the failed clicks")
