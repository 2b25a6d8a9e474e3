"""Slice geometry: validating slice keys, mapping coordinates to them, walking the stack."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from napari_fbrs.core.session.types import SliceKey


class _SlicesMixin:
    """Slice keys and navigation of :class:`SegmentationSession` (which sets
    ``stack_shape``, ``spatial_shape`` and ``_channel_axis``)."""

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of the labels array: ``stack_shape + (H, W)``."""
        return self.stack_shape + self.spatial_shape

    def check_key(self, key: Iterable[int]) -> SliceKey:
        """Validate a slice key and return it as a tuple of ints.

        Raises
        ------
        ValueError
            Wrong length or an index outside the stack.
        """
        key = tuple(int(k) for k in key)
        if len(key) != len(self.stack_shape):
            raise ValueError(
                f"a slice key needs {len(self.stack_shape)} indices for a stack of shape "
                f"{self.stack_shape}, got {key}"
            )
        for k, n in zip(key, self.stack_shape, strict=True):
            if not 0 <= k < n:
                raise ValueError(f"slice {key} lies outside the stack of shape {self.stack_shape}")
        return key

    def click_inside(self, y: float, x: float) -> bool:
        """Whether ``(y, x)`` is finite and inside the image as napari draws it.

        Pixel ``i`` covers ``[i - 0.5, i + 0.5)``.
        """
        h, w = self.spatial_shape
        y, x = float(y), float(x)
        return bool(
            np.isfinite(y) and np.isfinite(x) and -0.5 <= y < h - 0.5 and -0.5 <= x < w - 0.5
        )

    def key_at(self, coords: Sequence[float], clip: bool = False) -> SliceKey | None:
        """The slice at data coordinates of the image's leading axes.

        Parameters
        ----------
        coords : sequence of float
            One coordinate per leading axis of :attr:`image` (``len(stack_shape)``),
            e.g. from napari's ``layer.world_to_data``; rounded to the nearest index. The
            coordinate along :attr:`channel_axis` is ignored (every channel is one slice).
        clip : bool
            Clip to the stack instead of returning ``None`` outside it.

        Returns
        -------
        SliceKey or None
            ``None`` when a coordinate lies outside the stack (without ``clip``) or is
            not finite.
        """
        coords = [float(v) for v in coords]
        if len(coords) != len(self.stack_shape) or not all(np.isfinite(coords)):
            return None
        key = []
        for i, (v, n) in enumerate(zip(coords, self.stack_shape, strict=True)):
            k = 0 if i == self._channel_axis else int(np.round(v))
            if clip:
                k = min(max(k, 0), n - 1)
            elif not 0 <= k < n:
                return None
            key.append(k)
        return tuple(key)

    @property
    def slice_axes(self) -> tuple[int, ...]:
        """Leading axes with more than one slice (z, t, ...): those one can walk along
        (indices into :attr:`stack_shape`)."""
        return tuple(i for i, n in enumerate(self.stack_shape) if n > 1)

    @property
    def default_axis(self) -> int | None:
        """The axis walked by default: the last of :attr:`slice_axes` (z of
        ``(t, z, y, x)``), or ``None`` without slices."""
        return self.slice_axes[-1] if self.slice_axes else None

    def _check_axis(self, axis: int | None) -> int:
        axis = self.default_axis if axis is None else int(axis)
        if axis is None or not 0 <= axis < len(self.stack_shape) or axis == self._channel_axis:
            raise ValueError(f"axis {axis} is not a slice axis of the stack {self.stack_shape}")
        return axis

    def neighbour(self, key: SliceKey, axis: int | None = None, step: int = 1) -> SliceKey | None:
        """The slice ``step`` slices from ``key`` along ``axis`` (default
        :attr:`default_axis`), or ``None`` past the end of the stack.

        Raises
        ------
        ValueError
            A bad key, or an axis that is not a slice axis.
        """
        key = self.check_key(key)
        axis = self._check_axis(axis)
        k = key[axis] + int(step)
        if not 0 <= k < self.stack_shape[axis]:
            return None
        return key[:axis] + (k,) + key[axis + 1 :]
