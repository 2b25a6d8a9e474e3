"""Click-to-preview latency of the f-BRS napari widget, measured in a real viewer.

Opens napari (offscreen when there is no display), loads a sample image, docks the
``f-BRS`` widget through the plugin manifest and clicks programmatically (the same path as
a canvas click: the clicks layer, the session, a thread worker, the preview layer). For
each click it records

* **latency**: from the click to the preview layer holding that click's result;
* **compute**: the part of it spent in the predictor (on the worker thread), so
  ``overhead = latency - compute`` is what the widget, Qt and napari add;
* **event-loop gaps**: the longest interval between ticks of a 5 ms timer on the GUI
  thread while the prediction runs (a frozen GUI shows up here).

The first click of the run (which may load the model and import torch) is reported apart.
Output: one JSON object on stdout (and in ``--out``). Goals (issue 6): median latency
<= 0.3 s with the bundled model on 2 CPU cores, no gap over 0.15 s.

Examples
--------
::

    python benchmarks/gui_latency.py                          # bundled fbrs-lite
    python benchmarks/gui_latency.py --model arch:fbrs_lite   # same network, untrained
    python benchmarks/gui_latency.py --model hrnet18_ocr64_sbd --mode f-BRS-B --out r.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

GOAL_MEDIAN_S = 0.3
GOAL_MAX_GAP_S = 0.15
TICK_MS = 5


def _patch_gl_queries() -> None:
    """Let napari build layers without an OpenGL context (Qt offscreen, no display).

    Only napari's queries of GL limits need a context; nothing is drawn offscreen.
    """
    for name in (
        "napari._vispy.utils.gl",
        "napari._vispy.layers.image",
        "napari._vispy.layers.base",
        "napari._vispy.layers.labels",
        "napari._vispy.canvas",
    ):
        module = importlib.import_module(name)
        if hasattr(module, "get_gl_extensions"):
            module.get_gl_extensions = lambda: ""
        if hasattr(module, "get_max_texture_sizes"):
            module.get_max_texture_sizes = lambda: (16384, 2048)


class _Ticker:
    """Timestamps of a fast timer on the GUI thread: their gaps measure stalls."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def start(self) -> None:
        self.times.clear()
        self.times.append(time.perf_counter())
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        self.times.append(time.perf_counter())
        return list(np.diff(self.times)) if len(self.times) > 1 else [0.0]


def _wait_until(condition, timeout: float) -> bool:
    """Run the Qt event loop until ``condition()`` or ``timeout`` seconds."""
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            return False
        app.processEvents(QEventLoop.AllEvents, 2)
        time.sleep(0.0005)
    return True


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {
        "median": float(np.median(arr)),
        "mean": float(arr.mean()),
        "p90": float(np.percentile(arr, 90)),
        "max": float(arr.max()),
        "min": float(arr.min()),
    }


def _click_plan(
    shape: tuple[int, int], objects: int, per_object: int, seed: int
) -> list[list[tuple[float, float, bool]]]:
    """Click sequences: a positive click, then clicks around it of alternating polarity."""
    rng = np.random.default_rng(seed)
    h, w = shape
    plan = []
    for _ in range(objects):
        cy, cx = rng.uniform(0.25 * h, 0.75 * h), rng.uniform(0.25 * w, 0.75 * w)
        clicks = [(cy, cx, True)]
        for i in range(1, per_object):
            r = 0.08 * min(h, w) * (1 + i)
            angle = rng.uniform(0, 2 * np.pi)
            y = float(np.clip(cy + r * np.sin(angle), 0, h - 1))
            x = float(np.clip(cx + r * np.cos(angle), 0, w - 1))
            clicks.append((y, x, i % 2 == 0))
        plan.append(clicks)
    return plan


def _resolve_model(spec: str) -> tuple[Any, str]:
    """``arch:NAME`` -> an untrained network of that architecture; else a zoo name/file."""
    if spec.startswith("arch:"):
        from napari_fbrs.core.models.registry import build_model

        return build_model(spec[5:]), "untrained (same architecture, random weights)"
    return spec, "trained"


def _private_autosave_dir() -> None:
    """Sidecars and the panel's remembered settings of this run go to temporary folders: a
    benchmark must neither write into the user's folders nor start from the user's
    sessions or settings."""
    import atexit
    import tempfile

    # sidecar_path looks autosave_dir up in the paths module
    from napari_fbrs.core.autosave import paths as autosave_paths

    folder = tempfile.TemporaryDirectory(prefix="fbrs-bench-autosave-")
    atexit.register(folder.cleanup)
    autosave_paths.autosave_dir = lambda: Path(folder.name)
    config = tempfile.TemporaryDirectory(prefix="fbrs-bench-config-")
    atexit.register(config.cleanup)
    os.environ["NAPARI_FBRS_CONFIG"] = config.name


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    offscreen = os.environ.get("QT_QPA_PLATFORM") == "offscreen"
    import napari
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if offscreen:
        _patch_gl_queries()
    _private_autosave_dir()

    from napari_fbrs._sample_data import load_sample

    image = load_sample(args.image)
    rgb = image.ndim == 3
    viewer = napari.Viewer(show=not offscreen)
    try:
        viewer.add_image(image, name=args.image, rgb=rgb)
        _, widget = viewer.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
        widget.synchronous = False
        model, weights = _resolve_model(args.model)
        widget.set_model(model)
        widget.configure(
            mode=args.mode,
            device=args.device,
            zoom_in=not args.no_zoom_in,
            max_size=args.max_size,
            lbfgs_maxfun=args.lbfgs_maxfun,
        )
        problem = widget._model_problem()
        if problem:
            raise SystemExit(
                f"error: {problem}\n(try --model arch:fbrs_lite to time the same "
                "architecture with untrained weights)"
            )

        def predict(y: float, x: float, positive: bool) -> float:
            n_before = len(widget.applied_log)
            n_clicks = len(widget.session.clicks(widget.current_key)) + 1
            t0 = time.perf_counter()
            widget.add_click(y, x, positive)
            ok = _wait_until(
                lambda: (
                    (len(widget.applied_log) > n_before and widget.applied_log[-1][1] == n_clicks)
                    or not (widget.busy or not widget.session.is_up_to_date(widget.current_key))
                ),
                args.timeout,
            )
            if not ok or len(widget.applied_log) == n_before:
                raise RuntimeError(
                    f"no preview within {args.timeout} s: {widget.status_label.text()}"
                )
            return widget.applied_log[-1][2] - t0, widget.applied_log[-1][3]

        h, w = image.shape[:2]
        # the first click imports torch / loads the model: timed apart
        first, _ = predict(h / 2, w / 2, True)
        widget.reset_clicks()
        _wait_until(lambda: not widget.busy, args.timeout)

        latencies: list[float] = []
        computes: list[float] = []
        gaps: list[float] = []
        per_click = []
        ticker = _Ticker()
        for obj, clicks in enumerate(_click_plan((h, w), args.objects, args.clicks, args.seed)):
            for i, (y, x, positive) in enumerate(clicks):
                ticker.start()
                latency, compute = predict(y, x, positive)
                intervals = ticker.stop()
                max_gap = float(max(intervals))
                latencies.append(latency)
                computes.append(compute)
                gaps.append(max_gap)
                per_click.append(
                    {
                        "object": obj,
                        "click": i + 1,
                        "positive": positive,
                        "latency_s": latency,
                        "compute_s": compute,
                        "max_gap_s": max_gap,
                        "evaluations": getattr(widget.predictor, "last_evaluations", None),
                    }
                )
            if widget.finish_object() is None:
                widget.reset_clicks()
            _wait_until(lambda: not widget.busy, args.timeout)

        net = widget._load_net(widget.settings.model, widget.settings.device)
        lat = _summary(latencies)
        result = {
            "benchmark": "gui_latency",
            "model": args.model,
            "weights": weights,
            "architecture": getattr(net, "arch_name", type(net).__name__),
            "mode": args.mode,
            "device": str(widget.predictor.device) if widget.predictor else args.device,
            "zoom_in": not args.no_zoom_in,
            "max_size": args.max_size,
            "image": {"name": args.image, "shape": list(image.shape), "dtype": str(image.dtype)},
            "clicks": len(latencies),
            "first_click_s": first,
            "latency_s": lat,
            "compute_s": _summary(computes),
            "overhead_s": _summary([a - b for a, b in zip(latencies, computes, strict=True)]),
            "max_event_loop_gap_s": float(max(gaps)) if gaps else 0.0,
            "event_loop_gap_median_s": float(statistics.median(gaps)) if gaps else 0.0,
            "tick_interval_s": TICK_MS / 1000.0,
            "goal": {"median_latency_s": GOAL_MEDIAN_S, "max_event_loop_gap_s": GOAL_MAX_GAP_S},
            "meets_goal": bool(
                lat and lat["median"] <= GOAL_MEDIAN_S and max(gaps) <= GOAL_MAX_GAP_S
            ),
            "environment": {
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "napari": napari.__version__,
                "qt_platform": os.environ.get("QT_QPA_PLATFORM", "default"),
                "machine": platform.machine(),
            },
            "per_click": per_click,
        }
        return result
    finally:
        viewer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="fbrs-lite",
        help="zoo name, checkpoint file, or arch:NAME for an untrained "
        "network of a registered architecture (default: fbrs-lite)",
    )
    parser.add_argument("--mode", default="f-BRS-B")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image", default="photo", choices=["photo", "nuclei"])
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=5, help="clicks per object")
    parser.add_argument("--lbfgs-maxfun", type=int, default=20)
    parser.add_argument("--max-size", type=int, default=0, help="longest side; 0: none")
    parser.add_argument("--no-zoom-in", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per click")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
