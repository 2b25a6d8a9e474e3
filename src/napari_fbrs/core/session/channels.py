"""What the model sees: the image, its channels, the channel map and contrast limits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_fbrs.core.session.types import SliceKey


def _pair(value: Any) -> tuple[float, float] | None:
    """``(low, high)`` as floats, or ``None``."""
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    return (lo, hi)


class _ChannelsMixin:
    """Input handling of :class:`SegmentationSession` (which validates the image and sets
    ``_image``, ``_channel_axis``, ``_n_channels`` and the other channel state)."""

    @property
    def image(self) -> Any:
        """The image array the session segments (as given)."""
        return self._image

    @property
    def contrast_limits(self) -> tuple[float, float] | None:
        """``(low, high)`` intensity window of every channel, or ``None`` (see the class
        parameters); a change applies to predictors made from then on."""
        return self._contrast_limits

    @contrast_limits.setter
    def contrast_limits(self, value: Sequence[float] | None) -> None:
        self._contrast_limits = _pair(value)

    @property
    def channel_limits(self) -> tuple[tuple[float, float] | None, ...] | None:
        """Per-channel ``(low, high)`` windows (``None`` entries fall back to
        :attr:`contrast_limits`), or ``None``."""
        return self._channel_limits

    @channel_limits.setter
    def channel_limits(self, value: Sequence[Sequence[float] | None] | None) -> None:
        if value is None:
            self._channel_limits = None
            return
        limits = tuple(_pair(v) for v in value)
        if len(limits) != self.n_channels:
            raise ValueError(
                f"channel_limits needs one entry per channel ({self.n_channels}), got {len(limits)}"
            )
        self._channel_limits = limits

    @property
    def channel_axis(self) -> int | None:
        """The leading axis of :attr:`image` that holds channels (length 1 in
        :attr:`stack_shape`), or ``None``."""
        return self._channel_axis

    @property
    def n_channels(self) -> int:
        """Number of channels: along :attr:`channel_axis`, or separate arrays, or 1 for a
        grey image; 0 for an RGB image (its colours are used as they are)."""
        if self._channel_arrays is not None:
            return len(self._channel_arrays)
        return self._n_channels

    @property
    def channel_map(self) -> tuple[int | None, ...] | None:
        """Channels the model sees: ``(c,)`` grey, or ``(r, g[, b])`` with ``None`` for a
        black colour; ``None`` for an RGB image."""
        return self._channel_map

    @property
    def input_channels_shape(self) -> tuple[int, ...]:
        """Trailing shape of what the predictor gets: ``()`` grey, ``(3,)`` a mapped RGB,
        ``(C,)`` an RGB(A) image."""
        if self.rgb:
            return (int(self._image.shape[-1]),)
        return () if len(self._channel_map) == 1 else (3,)

    def set_channels(
        self,
        channel_map: Sequence[int | None] | None = None,
        *,
        channels: Sequence[Any] | None = None,
    ) -> list[SliceKey]:
        """Choose what the model sees (see the class parameters).

        The previews of unfinished objects are dropped when it changes: their next
        prediction makes a new predictor on the new input and replays their clicks (a
        running prediction becomes stale). Not an undo step.

        Parameters
        ----------
        channel_map : sequence of int or None, optional
            One channel index (grey) or two or three (red, green, blue; ``None``: black).
            Default: keep the current one, or ``(0,)`` when the channels change.
        channels : sequence of array-like, optional
            New separate channel arrays, each of :attr:`image`'s shape (only for a
            session without :attr:`channel_axis`). Default: keep them.

        Returns
        -------
        list of SliceKey
            Slices whose previews were dropped.

        Raises
        ------
        ValueError
            An RGB image, a wrong shape, or a map that is empty, too long, all ``None``
            or out of range. Nothing changes.
        """
        if self.rgb:
            raise ValueError("an RGB image is used as it is: it has no channels to map")
        arrays = self._channel_arrays
        if channels is not None:
            if self._channel_axis is not None:
                raise ValueError("this image has its channels along channel_axis")
            arrays = tuple(channels)
            if not arrays:
                raise ValueError("channels is empty")
            shape = tuple(int(s) for s in self._image.shape)
            for array in arrays:
                if tuple(int(s) for s in array.shape) != shape:
                    raise ValueError(
                        f"a channel of shape {tuple(array.shape)} does not match the image {shape}"
                    )
        n = len(arrays) if arrays is not None else self._n_channels
        if channel_map is None:
            channel_map = self._channel_map if channels is None else (0,)
        cmap = tuple(None if c is None else int(c) for c in channel_map)
        if not 1 <= len(cmap) <= 3 or all(c is None for c in cmap):
            raise ValueError(f"a channel map has one to three channels, got {channel_map}")
        if len(cmap) == 1 and cmap[0] is None:
            raise ValueError("a one-channel map needs a channel")
        for c in cmap:
            if c is not None and not 0 <= c < n:
                raise ValueError(f"channel {c} does not exist (the image has {n})")
        same_arrays = arrays is self._channel_arrays or (
            arrays is not None
            and self._channel_arrays is not None
            and len(arrays) == len(self._channel_arrays)
            and all(a is b for a, b in zip(arrays, self._channel_arrays, strict=True))
        )
        if same_arrays and cmap == self._channel_map:
            return []
        if arrays is not None and self._channel_limits is not None:
            if len(arrays) != len(self._channel_limits):
                self._channel_limits = None
        self._channel_arrays = arrays
        self._channel_map = cmap
        self._input_gen += 1
        dropped = []
        for key, obj in sorted(self._objects.items()):
            if obj.prob is not None:
                dropped.append(key)
            obj.prob, obj.prob_clicks = None, ()
        return dropped

    def _limits(self, channel: int | None) -> tuple[float, float] | None:
        if channel is not None and self._channel_limits is not None:
            limits = self._channel_limits[channel]
            if limits is not None:
                return limits
        return self._contrast_limits

    def _plane(self, channel: int, key: SliceKey) -> np.ndarray:
        """One ``(H, W)`` plane of one channel, read alone."""
        if self._channel_axis is not None:
            index = list(key)
            index[self._channel_axis] = channel
            return np.asarray(self._image[tuple(index)])
        source = self._image if self._channel_arrays is None else self._channel_arrays[channel]
        return np.asarray(source[key] if key else source)

    def input_slice(self, key: SliceKey = ()) -> tuple[np.ndarray, tuple[float, float] | None]:
        """What the predictor gets for slice ``key``: the image and its contrast limits.

        Returns
        -------
        image : numpy.ndarray
            ``(H, W)`` one channel (any dtype, as stored); ``(H, W, 3)`` float32 in
            ``[0, 1]`` for a map of two or three channels, each scaled by its own
            contrast limits (or the predictor's default rules), black for ``None``;
            ``(H, W, C)`` for an RGB(A) image.
        contrast_limits : (low, high) or None
            The window to pass with it (``(0.0, 1.0)`` for a mapped RGB).
        """
        key = self.check_key(key)
        if self.rgb:
            return np.asarray(self._image[key] if key else self._image), self._contrast_limits
        cmap = self._channel_map
        if len(cmap) == 1:
            return self._plane(cmap[0], key), self._limits(cmap[0])
        from napari_fbrs.core.image import to_unit_rgb

        out = np.zeros((*self.spatial_shape, 3), dtype=np.float32)
        for i, c in enumerate(cmap):
            if c is not None:
                out[..., i] = to_unit_rgb(self._plane(c, key), self._limits(c))[0]
        return out, (0.0, 1.0)

    def _input_limits(self) -> tuple[float, float] | None:
        """The contrast limits that go with :meth:`input_slice`'s images."""
        if self.rgb:
            return self._contrast_limits
        if len(self._channel_map) == 1:
            return self._limits(self._channel_map[0])
        return (0.0, 1.0)

    def image_slice(self, key: SliceKey = ()) -> np.ndarray:
        """The plane of :attr:`image` at slice ``key`` as stored, as a numpy array: ``(H, W)``
        or ``(H, W, C)`` RGB(A); with a :attr:`channel_axis`, its channel 0. See
        :meth:`input_slice` for what the model sees."""
        key = self.check_key(key)
        return np.asarray(self._image[key] if key else self._image)
