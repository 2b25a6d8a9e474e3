"""Clicks and their encodings for the networks.

Coordinates are ``(y, x)`` = napari ``(row, col)`` in pixels of the image the clicks are
given for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Click", "clicks_to_points", "distance_maps"]


@dataclass(frozen=True)
class Click:
    """One user click.

    Parameters
    ----------
    y, x : float
        Row and column in pixels (napari's ``(row, col)``).
    positive : bool
        ``True`` for "this is the object", ``False`` for "this is background".
    """

    y: float
    x: float
    positive: bool = True

    @property
    def coords(self) -> tuple[float, float]:
        return (self.y, self.x)


def clicks_to_points(
    clicks_lists: Sequence[Sequence[Click]],
    limit: int | None = None,
    with_index: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Pack click lists into the networks' point tensor.

    Parameters
    ----------
    clicks_lists : sequence of sequences of Click
        One list per batch item.
    limit : int or None
        Only the first ``limit`` clicks of each list are given to the network.
    with_index : bool
        Add a third column with the click's order in its list (RITM), else 2 columns.

    Returns
    -------
    torch.Tensor
        ``(B, 2N, 2|3)`` float32: ``N`` positive rows, then ``N`` negative rows, padded with
        ``-1``; ``N >= 1`` is the largest per-polarity count over the batch.
    """
    used = [list(cl[:limit]) if limit is not None else list(cl) for cl in clicks_lists]
    counts = [sum(c.positive for c in cl) for cl in used] + [
        sum(not c.positive for c in cl) for cl in used
    ]
    n = max([1, *counts])
    ncol = 3 if with_index else 2
    out = torch.full((len(used), 2 * n, ncol), -1.0, dtype=torch.float32)
    for b, cl in enumerate(used):
        npos = nneg = 0
        for i, c in enumerate(cl):
            row = [c.y, c.x, float(i)][:ncol]
            if c.positive:
                out[b, npos] = torch.tensor(row)
                npos += 1
            else:
                out[b, n + nneg] = torch.tensor(row)
                nneg += 1
    return out.to(device)


_CLICK_CHUNK = 4  # clicks per polarity and chunk of the distance-map minimum


def distance_maps(
    points: torch.Tensor, height: int, width: int, norm_radius: float = 260.0
) -> torch.Tensor:
    """Encode clicks as the f-BRS distance maps.

    For each polarity, the map is ``tanh(2 * d / norm_radius)`` where ``d`` is the Euclidean
    distance to the nearest click of that polarity (1 far away from any click, 0 on a click).

    Parameters
    ----------
    points : torch.Tensor
        ``(B, 2N, 2|3)`` as made by :func:`clicks_to_points`; rows with a negative
        coordinate are padding.
    height, width : int
        Size of the maps.
    norm_radius : float
        Distance normalisation (260 in the paper).

    Returns
    -------
    torch.Tensor
        ``(B, 2, height, width)`` float32: channel 0 positive, channel 1 negative.
    """
    bsz, n2, _ = points.shape
    n = n2 // 2
    yx = points[..., :2].to(torch.float32).view(bsz, 2, n, 2)
    invalid = yx.max(dim=-1).values < 0  # (B, 2, N)
    rows = torch.arange(height, dtype=torch.float32, device=points.device)
    cols = torch.arange(width, dtype=torch.float32, device=points.device)
    # running minimum over chunks of clicks: memory O(B H W) whatever the number of clicks,
    # and the same values as one big minimum
    d2 = torch.full((bsz, 2, height, width), 1e6, dtype=torch.float32, device=points.device)
    for start in range(0, n, _CLICK_CHUNK):
        part = yx[:, :, start : start + _CLICK_CHUNK]  # (B, 2, c, 2)
        c = part.shape[2]
        dy = (rows.view(1, 1, 1, height, 1) - part[..., 0].view(bsz, 2, c, 1, 1)) / norm_radius
        dx = (cols.view(1, 1, 1, 1, width) - part[..., 1].view(bsz, 2, c, 1, 1)) / norm_radius
        chunk = (dy * dy + dx * dx).masked_fill(
            invalid[:, :, start : start + c].view(bsz, 2, c, 1, 1), 1e6
        )
        d2 = torch.minimum(d2, chunk.amin(dim=2))
    return torch.tanh(2.0 * torch.sqrt(d2))
