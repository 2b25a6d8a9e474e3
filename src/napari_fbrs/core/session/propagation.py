"""Propagation glue: snapshot an object, carry it through the stack, commit the result.

The walk itself is :func:`napari_fbrs.core.propagation.propagate`, imported when used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fbrs.core.propagation_settings import check_setting
from napari_fbrs.core.session.types import CommitInfo, PropagationRequest, SliceKey

if TYPE_CHECKING:  # pragma: no cover
    from napari_fbrs.core.session.segmentation import SegmentationSession

#: ``regrowth`` of the "convex objects" stop rule of the widget and the CLI: the best of
#: 0.05-0.3 on nuclei3d (docs/benchmarks.md). Here, not in ``core.propagation``, because
#: the widget imports it and must not import torch at import time.
CONVEX_REGROWTH = 0.1


class _WalkVolume:
    """The model input along one line of slices, read one slice at a time.

    What :func:`napari_fbrs.core.propagation.propagate` walks: ``shape`` is ``(n, H, W)``
    or ``(n, H, W, C)`` and ``numpy.take(volume, k, axis=0)`` (which calls :meth:`take`)
    reads slice ``k`` only, through :meth:`SegmentationSession.input_slice`.
    """

    def __init__(self, session: SegmentationSession, key: SliceKey, axis: int):
        self._session = session
        self._key = key
        self._axis = axis
        n = session.stack_shape[axis]
        self.shape = (n, *session.spatial_shape, *session.input_channels_shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def take(self, index: Any, axis: int | None = 0, out: Any = None, mode: str = "raise"):
        if axis not in (0, -self.ndim) or out is not None or np.ndim(index) != 0:
            raise NotImplementedError("only one slice along the walked axis can be read")
        key = list(self._key)
        key[self._axis] = int(index)
        return self._session.input_slice(tuple(key))[0]


class _PropagationMixin:
    """Propagation of :class:`SegmentationSession` through its stack."""

    def propagation_request(
        self,
        key: SliceKey = (),
        axis: int | None = None,
        direction: int = 0,
        stop_iou: float = 0.5,
        stop_slices: Iterable[int] | None = None,
        regrowth: float | None = None,
        min_contrast: float | None = None,
    ) -> PropagationRequest:
        """Snapshot slice ``key``'s object for :meth:`compute_propagation` (main thread).

        Parameters
        ----------
        key : SliceKey
            The slice whose current mask starts the propagation.
        axis : int, optional
            The leading axis to walk (an index into :attr:`stack_shape`); default
            :attr:`default_axis` (z of ``(t, z, y, x)``).
        direction : int
            ``0`` both ways, ``+1`` towards higher indices only, ``-1`` lower only.
        stop_iou : float
            Stop where the IoU between consecutive slices' masks drops below this.
        stop_slices : iterable of int, optional
            Indices along ``axis`` not to enter; default :meth:`stop_slices` (the slices
            of the line whose clicks are all negative).
        regrowth : float, optional
            Stop where a convex object's area grows again (see
            :func:`napari_fbrs.core.propagation.propagate`); ``None``: off.
        min_contrast : float, optional
            Stop where the object's brightness above the background falls below this
            fraction of the start slice's; ``None``: off.

        Raises
        ------
        ValueError
            A 2D image, an axis that is not a slice axis, a bad direction, stop_iou,
            regrowth or min_contrast, or no up-to-date non-empty mask on ``key``.
        """
        key = self.check_key(key)
        if not self.stack_shape:
            raise ValueError("propagation needs a stack: this image has no slices")
        axis = self._check_axis(axis)
        direction, stop_iou = int(direction), float(stop_iou)
        check_setting("direction", direction)
        check_setting("stop_iou", stop_iou)
        for name, rule in (("regrowth", regrowth), ("min_contrast", min_contrast)):
            if rule is not None:
                check_setting(name, float(rule))
        if stop_slices is None:
            stops = self.stop_slices(key, axis)
        else:
            stops = tuple(sorted({int(k) for k in stop_slices} - {key[axis]}))
        obj, mask = self._finished_mask(key)
        return PropagationRequest(
            key,
            obj.clicks,
            obj,
            axis,
            mask.copy(),
            direction,
            stop_iou,
            stops,
            self._input_gen,
            regrowth=None if regrowth is None else float(regrowth),
            min_contrast=None if min_contrast is None else float(min_contrast),
        )

    def compute_propagation(
        self,
        request: PropagationRequest,
        *,
        stop_iou: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray | None:
        """Carry the object through the stack (any thread; slow).

        A fresh predictor from ``predictor_factory`` segments each next slice from clicks
        derived from the previous slice's mask (:func:`napari_fbrs.core.propagation.
        propagate`), along ``request.axis`` with the other leading indices fixed, in
        ``request.direction``, not entering ``request.stop_slices``. Each slice is read
        alone (:meth:`input_slice`), when it is reached.

        Parameters
        ----------
        request : PropagationRequest
            From :meth:`propagation_request`.
        stop_iou : float, optional
            Overrides ``request.stop_iou``.
        progress : callable, optional
            ``progress(done, total)`` after each slice.
        cancel : callable, optional
            ``cancel() -> bool``, polled before each slice.

        Returns
        -------
        numpy.ndarray or None
            ``(n, H, W)`` bool, ``n = stack_shape[request.axis]``: the object on every
            slice reached (``request.mask`` on the start slice); ``None`` when ``cancel``
            stopped it (nothing is to be written).
        """
        from napari_fbrs.core.propagation import propagate

        if self.predictor_factory is None:
            raise RuntimeError("no predictor factory: set session.predictor_factory")
        predictor = self.predictor_factory()
        volume = _WalkVolume(self, request.key, request.axis)
        limits = self._input_limits()
        result = propagate(
            predictor,
            volume,
            request.key[request.axis],
            request.mask,
            axis=0,
            direction=request.direction,
            stop_iou=request.stop_iou if stop_iou is None else float(stop_iou),
            stop_slices=request.stop_slices,
            regrowth=request.regrowth,
            min_contrast=request.min_contrast,
            contrast_limits=limits,
            progress=progress,
            cancel=cancel,
        )
        if cancel is not None and cancel():
            return None
        return result

    def commit_propagation(
        self,
        request: PropagationRequest,
        volume: np.ndarray,
        label: int | None = None,
        overwrite: bool = False,
        replace: bool | None = None,
    ) -> CommitInfo:
        """Write a propagated object into the labels as one undo step (main thread).

        Parameters
        ----------
        request : PropagationRequest
            What was propagated.
        volume : numpy.ndarray
            ``(n, H, W)`` bool from :meth:`compute_propagation`.
        label, overwrite
            As in :meth:`commit` (default id: the start object's pinned one, else the
            next free one).
        replace : bool, optional
            First clear the id's old pixels on every slice the object was written on (a
            re-propagation of a corrected object). Default: when the id is the start
            object's pinned one.

        Raises
        ------
        ValueError
            The object changed meanwhile (stale request), a volume of the wrong shape, an
            empty result, or nothing left to write without ``overwrite``.
        """
        if self.is_stale(request):
            raise ValueError("the object changed while it was being propagated; try again")
        n = self.stack_shape[request.axis]
        if volume is None or volume.shape != (n, *self.spatial_shape):
            got = None if volume is None else volume.shape
            raise ValueError(f"expected a volume of shape {(n, *self.spatial_shape)}, got {got}")
        steps, rows, cols = np.nonzero(volume)
        if steps.size == 0:
            raise ValueError("the propagated object is empty: nothing to commit")
        label, replace = self._resolve_label(request.obj, label, replace)
        where = tuple(
            steps if i == request.axis else np.full(steps.size, k, dtype=np.intp)
            for i, k in enumerate(request.key)
        ) + (rows, cols)
        base = request.key
        keys = [
            base[: request.axis] + (int(s),) + base[request.axis + 1 :] for s in np.unique(steps)
        ]
        return self._commit_where(
            request.key,
            request.obj,
            where,
            label,
            overwrite,
            propagated=True,
            keys=keys,
            replace=replace,
            propagation={
                "axis": request.axis,
                "direction": request.direction,
                "stop_iou": request.stop_iou,
                "stop_slices": request.stop_slices,
                "regrowth": request.regrowth,
                "min_contrast": request.min_contrast,
            },
        )
