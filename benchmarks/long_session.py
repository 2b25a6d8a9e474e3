"""Memory and time of long sessions: 1,000 clicks, many commits, a 500-slice propagation.

Each scenario runs in a fresh Python process (so that its peak resident memory is its
own) and reports, as JSON:

* ``rss_mb``: resident memory at checkpoints (after setup, then every ``--every`` steps),
  ``peak_rss_mb`` (the process's high-water mark, ``resource.getrusage``) and the growth
  per step from the first checkpoint after warm-up (step ``--every``) to the last one
  (``growth_kb_per_step``): what "bounded memory" is judged on;
* ``tracemalloc_peak_mb``: the peak of Python-level allocations (numpy arrays included;
  torch's own allocations are not traced) during the steps;
* ``held_mb``: bytes of the numpy arrays and torch tensors reachable from the predictor
  (or session) at each checkpoint: what its undo history keeps;
* ``seconds_per_step``: median wall time of a step.

Scenarios
---------
``predictor-clicks``
    ``--clicks`` clicks (default 1,000) on one object with :class:`napari_fbrs.Predictor`,
    at random positions (70 % positive), then undo of all of them.
``session-clicks``
    The same through :class:`SegmentationSession` (what the napari widget does).
``session-commits``
    ``--commits`` small objects (default 300) committed one after another on a
    ``--size`` image: what the session's undo history keeps per commit.
``propagation``
    A ``--slices`` x ``--prop-size`` x ``--prop-size`` uint8 stack (default 500 slices; a memory-
    mapped file, so it is read one slice at a time) holding a slowly moving disk; the
    disk is segmented on the middle slice and carried through the whole stack with
    :meth:`SegmentationSession.compute_propagation`, then committed.
``large-image``
    ``Predictor.set_image`` on a ``--large`` x ``--large`` uint8 grey image: bytes per
    image pixel at the peak and held afterwards, extrapolated to 20000 x 20000.

Usage::

    python benchmarks/long_session.py --out long_session.json
    python benchmarks/long_session.py --scenarios predictor-clicks --model fbrs-lite \\
        --mode f-BRS-B --clicks 200

``--model`` is a model-zoo name or checkpoint (``fbrs-lite``), or ``disk`` (the tiny test
network with hand-set weights that segments a disk around the clicks: the session's own
cost, without a real network's).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
from pathlib import Path
from typing import Any

import numpy as np

SCENARIOS = ["predictor-clicks", "session-clicks", "session-commits", "propagation", "large-image"]


# ------------------------------------------------------------------------------ measuring
def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):  # not Linux
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """High-water mark of the resident set size of this process, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def held_mb(root: Any) -> float:
    """MiB of numpy arrays and torch tensors reachable from ``root`` (each buffer once;
    functions, modules, classes and networks are not followed)."""
    import torch

    skip = (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
            types.ModuleType, type, torch.nn.Module)  # fmt: skip
    seen: set[int] = set()
    buffers: dict[int, int] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            buffers[id(base)] = base.nbytes if base.base is None else obj.nbytes
        elif isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            buffers[storage.data_ptr()] = storage.nbytes()
        else:
            stack.extend(gc.get_referents(obj))
    return sum(buffers.values()) / 2**20


class Recorder:
    """Checkpoints of memory and the time of each step."""

    def __init__(self, every: int, root: Any = None):
        self.every = every
        self.root = root
        self.times: list[float] = []
        self.points: list[dict[str, float]] = []
        self._t = 0.0

    def checkpoint(self, step: int) -> None:
        gc.collect()
        point = {"step": step, "rss_mb": round(rss_mb(), 1)}
        if self.root is not None:
            point["held_mb"] = round(held_mb(self.root), 2)
        self.points.append(point)

    def start(self) -> None:
        self._t = time.perf_counter()

    def stop(self, step: int) -> None:
        self.times.append(time.perf_counter() - self._t)
        if step % self.every == 0:
            self.checkpoint(step)

    def report(self) -> dict[str, Any]:
        # growth from the first checkpoint after warm-up (the first steps allocate the
        # working buffers once) to the last one
        first = self.points[1] if len(self.points) > 2 else self.points[0]
        last = self.points[-1]
        steps = max(last["step"] - first["step"], 1)
        out = {
            "checkpoints": self.points,
            "growth_kb_per_step": round((last["rss_mb"] - first["rss_mb"]) * 1024 / steps, 1),
            "seconds_per_step": round(statistics.median(self.times), 4) if self.times else None,
            "total_seconds": round(sum(self.times), 1),
        }
        if "held_mb" in first:
            out["held_growth_kb_per_step"] = round(
                (last["held_mb"] - first["held_mb"]) * 1024 / steps, 1
            )
        return out


# ------------------------------------------------------------------------------ models
def make_factory(args: argparse.Namespace, radius: float = 8.0, neg_gain: float = 20.0):
    import napari_fbrs as nf
    from napari_fbrs.core.testing import disk_net

    if args.model == "disk":
        net = disk_net(radius, neg_gain)
    else:
        net = nf.load_model(args.model, device="cpu")
    zoom = nf.ZoomIn() if args.zoom_in else None

    def factory():
        return nf.Predictor(net, mode=args.mode, device="cpu", zoom_in=zoom)

    return factory


def random_clicks(n: int, size: int, seed: int = 0) -> list[tuple[float, float, bool]]:
    rng = np.random.default_rng(seed)
    centre = size / 2
    ys = np.clip(rng.normal(centre, size / 6, n), 0, size - 1)
    xs = np.clip(rng.normal(centre, size / 6, n), 0, size - 1)
    return [
        (float(y), float(x), bool(p)) for y, x, p in zip(ys, xs, rng.random(n) < 0.7, strict=True)
    ]


def test_image(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2
    noise = np.random.default_rng(1).integers(0, 40, (size, size))
    return (np.where(disk, 180, 60) + noise).astype(np.uint8)


# ------------------------------------------------------------------------------ scenarios
def predictor_clicks(args: argparse.Namespace) -> dict[str, Any]:
    predictor = make_factory(args)()
    predictor.set_image(test_image(args.size))
    rec = Recorder(args.every, predictor)
    rec.checkpoint(0)
    tracemalloc.start()
    for i, (y, x, positive) in enumerate(random_clicks(args.clicks, args.size), start=1):
        rec.start()
        predictor.add_click(y, x, positive)
        rec.stop(i)
    _, trace_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t0 = time.perf_counter()
    while predictor.can_undo:
        predictor.undo()
    return {
        **rec.report(),
        "tracemalloc_peak_mb": round(trace_peak / 2**20, 1),
        "undo_all_seconds": round(time.perf_counter() - t0, 3),
    }


def session_clicks(args: argparse.Namespace) -> dict[str, Any]:
    from napari_fbrs.core.session import SegmentationSession

    session = SegmentationSession(test_image(args.size), predictor_factory=make_factory(args))
    rec = Recorder(args.every, session)
    session.add_click(args.size / 2, args.size / 2)
    session.predict()
    rec.checkpoint(0)
    tracemalloc.start()
    for i, (y, x, positive) in enumerate(random_clicks(args.clicks, args.size), start=1):
        rec.start()
        session.add_click(y, x, positive)
        session.predict()
        rec.stop(i)
    _, trace_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {**rec.report(), "tracemalloc_peak_mb": round(trace_peak / 2**20, 1)}


def session_commits(args: argparse.Namespace) -> dict[str, Any]:
    from napari_fbrs.core.session import SegmentationSession

    size = args.size
    session = SegmentationSession(
        np.zeros((size, size), np.uint8),
        predictor_factory=make_factory(args, radius=4.0),
        labels=np.zeros((size, size), np.uint16),
    )
    rec = Recorder(args.every, session)
    rec.checkpoint(0)
    rng = np.random.default_rng(0)
    done = 0
    tracemalloc.start()
    while done < args.commits:
        y, x = rng.uniform(8, size - 8, 2)
        rec.start()
        session.add_click(y, x)
        session.predict()
        try:
            session.commit(overwrite=True)
        except ValueError:
            session.reset_clicks()
            continue
        done += 1
        rec.stop(done)
    _, trace_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {**rec.report(), "tracemalloc_peak_mb": round(trace_peak / 2**20, 1)}


def propagation(args: argparse.Namespace) -> dict[str, Any]:
    from napari_fbrs.core.session import SegmentationSession

    n, size = args.slices, args.prop_size
    radius = size / 10
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.u8"
        stack = np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, size, size))
        yy, xx = np.mgrid[:size, :size]
        for z in range(n):  # a disk drifting slowly across the stack
            cy = size / 2 + (size / 8) * np.sin(2 * np.pi * z / n)
            cx = size / 2 + (size / 8) * np.cos(2 * np.pi * z / n)
            stack[z] = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2, 200, 40)
        stack.flush()
        del stack
        stack = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, size, size))
        labels = np.zeros((n, size, size), np.uint16)
        session = SegmentationSession(
            stack, predictor_factory=make_factory(args, radius=radius, neg_gain=2.0), labels=labels
        )
        z = n // 2
        cy = size / 2 + (size / 8) * np.sin(2 * np.pi * z / n)
        cx = size / 2 + (size / 8) * np.cos(2 * np.pi * z / n)
        session.add_click(cy, cx, key=(z,))
        session.predict((z,))
        gc.collect()
        base = rss_mb()
        done: list[float] = []
        t0 = time.perf_counter()

        def progress(i: int, total: int) -> None:
            done.append(time.perf_counter())
            if i % args.every == 0:
                points.append({"step": i, "rss_mb": round(rss_mb(), 1)})

        points = [{"step": 0, "rss_mb": round(base, 1)}]
        tracemalloc.start()
        request = session.propagation_request((z,))
        volume = session.compute_propagation(request, progress=progress, stop_iou=0.3)
        _, trace_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        seconds = time.perf_counter() - t0
        info = session.commit_propagation(request, volume)
        slices = int(np.count_nonzero(volume.reshape(n, -1).any(axis=1)))
        steps = np.diff([t0, *done])
        first = points[1] if len(points) > 2 else points[0]
        last = points[-1]
        return {
            "slices": n,
            "size": size,
            "slices_reached": slices,
            "pixels_committed": info.n_pixels,
            "checkpoints": points,
            "growth_kb_per_step": round(
                (last["rss_mb"] - first["rss_mb"]) * 1024 / max(last["step"] - first["step"], 1),
                1,
            ),
            "seconds_per_step": round(float(np.median(steps)), 4) if len(steps) else None,
            "total_seconds": round(seconds, 1),
            "tracemalloc_peak_mb": round(trace_peak / 2**20, 1),
            "fixed_arrays_mb": {
                "labels_uint16": round(labels.nbytes / 2**20, 1),
                "result_bool": round(volume.nbytes / 2**20, 1),
            },
        }


def large_image(args: argparse.Namespace) -> dict[str, Any]:
    import napari_fbrs as nf
    from napari_fbrs.core.testing import disk_net

    size = args.large
    net = disk_net(8.0) if args.model == "disk" else nf.load_model(args.model, device="cpu")
    predictor = nf.Predictor(net, mode="NoBRS", device="cpu", max_size=1024)
    image = np.full((size, size), 128, np.uint8)
    image[::7, ::5] = 30  # not constant
    gc.collect()
    base = rss_mb()
    t0 = time.perf_counter()
    predictor.set_image(image)
    seconds = time.perf_counter() - t0
    gc.collect()
    after = rss_mb()
    peak = peak_rss_mb()
    t1 = time.perf_counter()
    predictor.add_click(size / 2, size / 2)
    click_seconds = time.perf_counter() - t1
    pixels = size * size
    per_px_peak = (peak - base) * 2**20 / pixels
    per_px_held = (after - base) * 2**20 / pixels
    return {
        "size": size,
        "image_mb": round(image.nbytes / 2**20, 1),
        "set_image_seconds": round(seconds, 2),
        "first_click_seconds": round(click_seconds, 2),
        "peak_bytes_per_pixel": round(per_px_peak, 1),
        "held_bytes_per_pixel": round(per_px_held, 1),
        "held_by_predictor_mb": round(held_mb(predictor), 1),
        "extrapolated_20000_peak_gb": round(per_px_peak * 20000**2 / 2**30, 1),
        "extrapolated_20000_held_gb": round(per_px_held * 20000**2 / 2**30, 1),
    }


RUNNERS = {
    "predictor-clicks": predictor_clicks,
    "session-clicks": session_clicks,
    "session-commits": session_commits,
    "propagation": propagation,
    "large-image": large_image,
}


# ------------------------------------------------------------------------------ driver
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=SCENARIOS)
    ap.add_argument("--model", default="disk", help="zoo name, checkpoint file, or 'disk'")
    ap.add_argument("--mode", default="NoBRS")
    ap.add_argument("--zoom-in", action="store_true", help="use ZoomIn (default off)")
    ap.add_argument("--size", type=int, default=256, help="image side (pixels)")
    ap.add_argument("--clicks", type=int, default=1000)
    ap.add_argument("--commits", type=int, default=300)
    ap.add_argument("--slices", type=int, default=500)
    ap.add_argument("--prop-size", type=int, default=128, help="slice side, propagation")
    ap.add_argument("--large", type=int, default=4096, help="side of the large-image scenario")
    ap.add_argument("--every", type=int, default=100, help="steps between checkpoints")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child:  # one scenario, in this fresh process
        import torch

        torch.set_num_threads(args.threads)
        result = RUNNERS[args.child](args)
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        print(json.dumps(result))
        return
    report: dict[str, Any] = {
        "benchmark": "long_session",
        "model": args.model,
        "mode": args.mode,
        "zoom_in": args.zoom_in,
        "size": args.size,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "scenarios": {},
    }
    passthrough = list(argv if argv is not None else sys.argv[1:])
    for name in args.scenarios:
        cmd = [sys.executable, __file__, *passthrough, "--child", name]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            report["scenarios"][name] = {"error": proc.stderr.strip().splitlines()[-1:]}
        else:
            report["scenarios"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
        report["scenarios"][name]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(report["scenarios"][name])[:400], flush=True)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
