"""Run the NoC protocol: a predictor, a simulated user, and a dataset of objects."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from napari_fbrs.core.evaluation.datasets import Sample
from napari_fbrs.core.evaluation.metrics import iou as compute_iou
from napari_fbrs.core.evaluation.metrics import summarize
from napari_fbrs.core.evaluation.robot import next_click

__all__ = [
    "DatasetResult",
    "InteractivePredictor",
    "ObjectResult",
    "ProgressCallback",
    "evaluate_dataset",
    "evaluate_object",
]

#: ``progress(done, total)``: called after every object.
ProgressCallback = Callable[[int, int], None]


@runtime_checkable
class InteractivePredictor(Protocol):
    """What the runner needs from a predictor (``napari_fbrs.Predictor`` has it).

    ``set_image`` starts a new image with no clicks, ``add_click`` adds one click and returns
    the ``(H, W)`` float probability map, ``mask`` is the ``(H, W)`` bool prediction for all
    clicks so far, ``reset`` removes the clicks and keeps the image.
    """

    def set_image(self, image: np.ndarray) -> None: ...

    def add_click(self, y: float, x: float, positive: bool = True) -> np.ndarray: ...

    def reset(self) -> None: ...

    @property
    def mask(self) -> np.ndarray: ...


@dataclass
class ObjectResult:
    """The protocol's record of one object.

    Attributes
    ----------
    name : str
        The sample's name.
    ious : list of float
        IoU after clicks 1, 2, ...; stops at the target IoU, at ``max_clicks``, or when no
        unclicked error pixel is left.
    clicks : list of (int, int, bool)
        ``(y, x, positive)`` of every click.
    seconds : float
        Predictor time (``set_image`` when the image changed, and every ``add_click``).
    """

    name: str
    ious: list[float] = field(default_factory=list)
    clicks: list[tuple[int, int, bool]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class DatasetResult:
    """All objects of one dataset evaluated with one predictor configuration."""

    dataset: str
    mode: str
    max_clicks: int
    target_iou: float
    objects: list[ObjectResult] = field(default_factory=list)

    @property
    def curves(self) -> list[list[float]]:
        return [o.ious for o in self.objects]

    @property
    def num_clicks(self) -> int:
        return sum(len(o.clicks) for o in self.objects)

    @property
    def spc(self) -> float:
        """Seconds per click: total predictor time over the total number of clicks."""
        n = self.num_clicks
        return sum(o.seconds for o in self.objects) / n if n else float("nan")

    def summary(self) -> dict[str, dict[str, float | int]]:
        """``{"noc": {...}, "over_max": {...}}`` from :func:`metrics.summarize`."""
        return summarize(self.curves, self.max_clicks)


def evaluate_object(
    predictor: InteractivePredictor,
    sample: Sample,
    max_clicks: int = 20,
    target_iou: float = 0.90,
    new_image: bool = True,
) -> ObjectResult:
    """Click on one object like the simulated user until it is good enough.

    Parameters
    ----------
    predictor : InteractivePredictor
        Its clicks are reset here.
    sample : Sample
        ``image`` ``(H, W[, C])``, ``gt`` ``(H, W)`` bool, optional ``ignore`` ``(H, W)`` bool.
    max_clicks : int
        Click budget.
    target_iou : float
        Stop once the IoU reaches it (use a value above 1 to always spend every click).
    new_image : bool
        ``False`` when the predictor already holds ``sample.image`` (only ``reset`` is called).

    Returns
    -------
    ObjectResult

    Raises
    ------
    ValueError
        ``max_clicks < 1``, an object without pixels (outside the ignored ones), or a
        predictor mask of the wrong shape.
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be at least 1, not {max_clicks}")
    result = ObjectResult(sample.name)
    gt = np.asarray(sample.gt, dtype=bool)
    ignore = None if sample.ignore is None else np.asarray(sample.ignore, dtype=bool)
    if ignore is not None and ignore.shape != gt.shape:
        raise ValueError(f"{sample.name}: ignore mask {ignore.shape} differs from {gt.shape}")
    if not (gt if ignore is None else gt & ~ignore).any():
        raise ValueError(f"{sample.name}: the object has no pixel (outside the ignored ones)")
    pred = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    start = time.perf_counter()
    if new_image:
        predictor.set_image(sample.image)
    else:
        predictor.reset()
    result.seconds += time.perf_counter() - start
    for _ in range(max_clicks):
        click = next_click(pred, gt, ignore, clicked)
        if click is None:
            break  # nothing left to correct; the curve's last IoU carries forward
        clicked[click.y, click.x] = True
        start = time.perf_counter()
        predictor.add_click(click.y, click.x, positive=click.positive)
        pred = np.asarray(predictor.mask, dtype=bool)
        result.seconds += time.perf_counter() - start
        if pred.shape != gt.shape:
            raise ValueError(f"predictor returned a {pred.shape} mask for a {gt.shape} object")
        result.clicks.append((click.y, click.x, click.positive))
        result.ious.append(compute_iou(pred, gt, ignore))
        if result.ious[-1] >= target_iou:
            break
    return result


def evaluate_dataset(
    predictor: InteractivePredictor,
    samples: Sequence[Sample] | Iterable[Sample],
    *,
    dataset: str = "",
    mode: str = "",
    max_clicks: int = 20,
    target_iou: float = 0.90,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
) -> DatasetResult:
    """Evaluate every object of a dataset with the NoC protocol.

    Parameters
    ----------
    predictor : InteractivePredictor
        Used for all objects; consecutive objects sharing one image array (objects of a
        label image) reuse the predictor's image.
    samples : sequence of Sample
        E.g. a reader from :mod:`.datasets`.
    dataset, mode : str
        Recorded in the result (for reports).
    max_clicks, target_iou : int, float
        See :func:`evaluate_object`.
    limit : int or None
        Only the first ``limit`` objects.
    progress : callable or None
        ``progress(done, total)`` after every object (``total`` is ``-1`` when ``samples``
        has no length).

    Returns
    -------
    DatasetResult
    """
    result = DatasetResult(dataset, mode, max_clicks, target_iou)
    try:
        total = len(samples)  # type: ignore[arg-type]
    except TypeError:
        total = -1
    if limit is not None and total >= 0:
        total = min(total, limit)
    last_image = None
    for i, sample in enumerate(itertools.islice(samples, limit)):
        new_image = sample.image is not last_image
        result.objects.append(
            evaluate_object(predictor, sample, max_clicks, target_iou, new_image=new_image)
        )
        last_image = sample.image
        if progress is not None:
            progress(i + 1, total)
    return result
