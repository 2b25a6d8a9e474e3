"""Evaluation reports: the JSON record, the markdown NoC table and the mIoU-per-click plot.

The JSON holds every object's IoU curve; the NoC numbers in it and in the table are
computed from those stored curves by :func:`metrics.summarize`, so they always agree.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_fbrs.core.evaluation.metrics import (
    DEFAULT_THRESHOLDS,
    OVER_MAX_THRESHOLDS,
    miou_curve,
    summarize,
    threshold_key,
)
from napari_fbrs.core.evaluation.runner import DatasetResult

__all__ = [
    "IOU_DECIMALS",
    "build_report",
    "dumps_report",
    "entry_summary",
    "markdown_table",
    "plot_miou",
    "read_report",
    "write_report",
]

#: IoUs are stored rounded; all numbers are computed from the rounded values.
IOU_DECIMALS = 6


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def entry_summary(entry: dict[str, Any], max_clicks: int) -> dict[str, dict[str, float | int]]:
    """NoC means and never-reached counts recomputed from a JSON entry's ``per_image`` curves.

    Parameters
    ----------
    entry : dict
        One value of a report's ``"datasets"``.
    max_clicks : int
        The report's click budget.

    Returns
    -------
    dict
        As :func:`metrics.summarize`.
    """
    return summarize([obj["ious"] for obj in entry["per_image"]], max_clicks)


def build_report(
    model: str, results: Sequence[DatasetResult], key_by_mode: bool | None = None
) -> dict[str, Any]:
    """The JSON-ready report of several dataset evaluations.

    Parameters
    ----------
    model : str
        Model name or checkpoint path, as given.
    results : sequence of DatasetResult
        All with the same ``max_clicks`` and ``target_iou``.
    key_by_mode : bool or None
        Key datasets as ``NAME/MODE``; default: when more than one mode was evaluated.

    Returns
    -------
    dict
        ``{"model", "max_clicks", "target_iou", "datasets": {KEY: {"dataset", "mode",
        "noc": {"80", "85", "90"}, "over_max": {"85", "90"}, "spc", "num_objects", "miou",
        "per_image": [{"name", "ious", "clicks"}]}}}``. ``KEY`` is the dataset's name, or
        ``NAME/MODE`` with ``key_by_mode``; ``ious`` are rounded to :data:`IOU_DECIMALS`
        and every other number is computed from them; ``miou`` has ``max_clicks`` values
        (mean IoU after 1, 2, ... clicks, curves carried forward); ``clicks`` rows are
        ``[y, x, positive]``; ``spc`` (and NoC, ``miou`` of an empty dataset) is ``None``
        when undefined.
    """
    if not results:
        raise ValueError("no results to report")
    max_clicks = results[0].max_clicks
    target_iou = results[0].target_iou
    if any(r.max_clicks != max_clicks or r.target_iou != target_iou for r in results):
        raise ValueError("all results of one report need the same max_clicks and target_iou")
    if key_by_mode is None:
        key_by_mode = len({r.mode for r in results}) > 1
    datasets: dict[str, Any] = {}
    for r in results:
        key = f"{r.dataset}/{r.mode}" if key_by_mode else r.dataset
        if key in datasets:
            raise ValueError(f"dataset {key!r} appears twice in the report")
        per_image = [
            {
                "name": o.name,
                "ious": [round(float(v), IOU_DECIMALS) for v in o.ious],
                "clicks": [[int(y), int(x), bool(p)] for y, x, p in o.clicks],
            }
            for o in r.objects
        ]
        entry: dict[str, Any] = {"dataset": r.dataset, "mode": r.mode, "per_image": per_image}
        summary = entry_summary(entry, max_clicks)
        miou = miou_curve([o["ious"] for o in per_image], max_clicks)
        entry.update(
            noc={k: _finite_or_none(v) for k, v in summary["noc"].items()},
            over_max=summary["over_max"],
            spc=_finite_or_none(r.spc),
            num_objects=len(per_image),
            miou=[_finite_or_none(round(float(v), IOU_DECIMALS)) for v in miou],
        )
        # A fixed key order keeps the files readable: numbers first, curves last.
        order = ("dataset", "mode", "noc", "over_max", "spc", "num_objects", "miou", "per_image")
        datasets[key] = {k: entry[k] for k in order}
    return {
        "model": model,
        "max_clicks": max_clicks,
        "target_iou": target_iou,
        "datasets": datasets,
    }


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(report: dict[str, Any], title: bool = True) -> str:
    """The paper-style NoC table of a report, recomputed from its per-image curves.

    Parameters
    ----------
    report : dict
        From :func:`build_report` or :func:`read_report`.
    title : bool
        Start with a ``Model: ...`` line.

    Returns
    -------
    str
        Markdown: one row per dataset (and mode) with the number of objects, NoC@80/85/90,
        the objects that never reach 85 % / 90 % IoU within ``max_clicks``, and seconds per
        click; preceded by a ``Model: ...`` line when ``title``.
    """
    max_clicks = int(report["max_clicks"])
    header = ["Dataset", "Mode", "Objects"]
    header += [f"NoC@{threshold_key(t)}" for t in DEFAULT_THRESHOLDS]
    header += [f"≥{max_clicks}@{threshold_key(t)}" for t in OVER_MAX_THRESHOLDS]
    header += ["SPC, s"]
    lines = []
    if title:
        lines += [f"Model: `{report['model']}`", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for entry in report["datasets"].values():
        summary = entry_summary(entry, max_clicks)
        row = [entry["dataset"], entry["mode"], str(len(entry["per_image"]))]
        row += [_fmt(summary["noc"][threshold_key(t)], 2) for t in DEFAULT_THRESHOLDS]
        row += [str(summary["over_max"][threshold_key(t)]) for t in OVER_MAX_THRESHOLDS]
        row += [_fmt(entry.get("spc"), 3)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_miou(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save a PNG of mIoU against the number of clicks, one line per report entry.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change), imported
    only here.

    Parameters
    ----------
    report : dict
        From :func:`build_report` or :func:`read_report`; the curves are recomputed from
        each entry's ``per_image`` IoUs (:func:`metrics.miou_curve`).
    path : path
        The PNG file to write.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    max_clicks = int(report["max_clicks"])
    clicks = range(1, max_clicks + 1)
    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, entry in report["datasets"].items():
        curve = miou_curve([o["ious"] for o in entry["per_image"]], max_clicks)
        label = key if "/" in key else f"{key} ({entry['mode']})"
        ax.plot(clicks, curve, marker="o", markersize=3, label=label)
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mIoU")
    ax.set_xlim(1, max(max_clicks, 2))
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(range(1, max_clicks + 1, 2 if max_clicks > 10 else 1))
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{report['model']} (stop at IoU {report['target_iou']:g})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def dumps_report(report: dict[str, Any]) -> str:
    """JSON text of a report: nested objects indented, one line per object of ``per_image``.

    Raises
    ------
    ValueError
        A NaN or infinite number in the report (:func:`build_report` writes ``None``).
    """

    def encode(value: Any, depth: int) -> str:
        pad = " " * depth
        if isinstance(value, dict) and value:
            items = [f"{pad} {json.dumps(k)}: {encode(v, depth + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = [f"{pad} {json.dumps(v, allow_nan=False)}" for v in value]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        return json.dumps(value, allow_nan=False)

    return encode(report, 0)


def write_report(
    report: dict[str, Any], out_dir: str | os.PathLike[str], plot: bool = True
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and (with ``plot``) ``miou.png`` into ``out_dir``.

    Returns
    -------
    dict
        ``{"json": path, "markdown": path, "plot": path}`` of the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(dumps_report(report) + "\n")
    paths["markdown"].write_text(markdown_table(report))
    if plot:
        paths["plot"] = plot_miou(report, out / "miou.png")
    return paths


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``results.json`` written by :func:`write_report`."""
    return json.loads(Path(path).read_text())
