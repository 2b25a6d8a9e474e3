"""Seconds per click of every BRS mode and architecture, on GrabCut images.

For each model, mode and image, a simulated user (the NoC robot of
:mod:`napari_fbrs.core.evaluation.robot`) clicks ``--clicks`` times into the predictor
with the reference settings (flip averaging, ZoomIn 400, threshold 0.49, L-BFGS-B
``maxfun=20``) and every :meth:`Predictor.add_click` is timed. An image's figure is the
mean over its clicks; a mode's figure is the **median over images**. The first click of
an object never optimises, so the mean over the later ("BRS") clicks is reported too, with
the number of objective evaluations per click.

Models: registered architectures (``resnet34_dh128``, ``hrnet18_ocr64``, ...) are built in
the official layout and, as no release checkpoint can be assumed to be present, filled
with the conformance fixtures' deterministic weights (``shared/conformance/README.md``);
a checkpoint file or a model-zoo name (``fbrs-lite``, the bundled trained model) is
loaded with :func:`napari_fbrs.load_model`. Untrained weights cost the same per network
pass as trained ones, but L-BFGS may take more (or fewer) evaluations per click than with
a trained model: the evaluation counts are in the output.

Goal (issue 3): an f-BRS-B click costs at most 1.5 times a NoBRS click on the same model
and image (``fbrs_b_over_nobrs`` in the output: median over images of the per-image
ratio).

Output: JSON to ``--out`` (and a Markdown table on stdout).

Examples
--------
::

    python benchmarks/click_latency.py --quick --out latency.json
    python benchmarks/click_latency.py --models resnet34_dh128 fbrs-lite --images 5 \\
        --clicks 5 --threads 2 --out latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODES = ["NoBRS", "f-BRS-A", "f-BRS-B", "f-BRS-C", "RGB-BRS", "DistMap-BRS"]
DEFAULT_MODELS = [
    "fbrs-lite",
    "resnet34_dh128",
    "resnet50_dh128",
    "resnet101_dh256",
    "hrnet18_ocr64",
    "hrnet32_ocr128",
]
QUICK_MODELS = ["resnet34_dh128", "hrnet18_ocr64"]
GOAL_FBRS_B_OVER_NOBRS = 1.5
# gain of the deterministic weight fill of the conformance fixtures (f-BRS archs)
FILL_GAIN = {"hrnet18_ocr64": 0.8, "hrnet32_ocr128": 0.8}


def _shared_root() -> Path:
    env = os.environ.get("NAPARI_FBRS_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def _fill_gain(arch: str) -> float:
    meta = _shared_root() / "conformance" / f"{arch}.meta.json"
    if meta.is_file():
        return float(json.loads(meta.read_text())["fill_gain"])
    return FILL_GAIN.get(arch, 1.0)


def load_net(spec: str, device: str) -> tuple[Any, str]:
    """``(network, weights description)`` for a registry name, zoo name or file."""
    import napari_fbrs as nf
    from napari_fbrs.core.testing import deterministic_fill_

    if spec in nf.ARCHITECTURES and nf.ARCHITECTURES[spec].family in ("fbrs", "ritm"):
        gain = _fill_gain(spec)
        net = deterministic_fill_(nf.build_model(spec), gain).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net, f"deterministic fill (gain {gain})"
    net = nf.load_model(spec, device=device)
    return net, "checkpoint"


def load_images(count: int, data_root: Path) -> list[Any]:
    """The first ``count`` GrabCut objects (sorted by name)."""
    from napari_fbrs.core.evaluation.datasets import open_dataset

    dataset = open_dataset("GrabCut", data_root)
    samples = sorted((dataset[i] for i in range(len(dataset))), key=lambda s: s.name)
    return samples[:count]


def run_object(predictor: Any, sample: Any, clicks: int) -> dict[str, Any]:
    """Click ``clicks`` times on one object; per-click seconds and evaluations."""
    from napari_fbrs.core.evaluation.robot import next_click

    predictor.set_image(sample.image)
    pred = np.zeros(sample.gt.shape, dtype=bool)
    clicked = np.zeros(sample.gt.shape, dtype=bool)
    seconds, evaluations = [], []
    for _ in range(clicks):
        click = next_click(pred, sample.gt, sample.ignore, clicked)
        if click is None:
            break
        clicked[click.y, click.x] = True
        t0 = time.perf_counter()
        predictor.add_click(click.y, click.x, positive=click.positive)
        seconds.append(time.perf_counter() - t0)
        evaluations.append(int(predictor.last_evaluations))
        pred = predictor.mask
    return {
        "name": sample.name,
        "shape": list(sample.gt.shape),
        "seconds": seconds,
        "evaluations": evaluations,
    }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(statistics.median(kept)) if kept else None


def benchmark(
    models: list[str],
    modes: list[str],
    samples: list[Any],
    clicks: int,
    device: str,
    inference_copy: bool = True,
) -> list[dict[str, Any]]:
    """Time every mode on every image; modes are interleaved image by image.

    Interleaving (image 1: all modes, image 2: all modes, ...) spreads any change of the
    machine's load over the modes evenly, so the per-image ratios stay comparable.
    """
    import torch

    import napari_fbrs as nf

    rows = []
    for spec in models:
        net, weights = load_net(spec, device)
        used = [m for m in modes if not (m.startswith("f-BRS") and m not in net.brs_sites)]
        predictors = {}
        for mode in used:
            predictors[mode] = nf.Predictor(
                net,
                mode=mode,
                device=device,
                with_flip=True,
                zoom_in=nf.ZoomIn(target_size=400),
                prob_thresh=0.49,
                lbfgs_maxfun=20,
                inference_copy=inference_copy,
            )
            # warm-up (kernel selection, first allocations): untimed clicks
            predictors[mode].set_image(samples[0].image)
            for frac in (0.5, 0.4):
                h, w = samples[0].gt.shape
                predictors[mode].add_click(int(h * frac), int(w * frac))
        per_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in used}
        for sample in samples:
            for mode in used:
                r = run_object(predictors[mode], sample, clicks)
                r["mean_s"] = _mean(r["seconds"])
                r["mean_brs_s"] = _mean(r["seconds"][1:])
                per_mode[mode].append(r)
        for mode in used:
            per_image = per_mode[mode]
            rows.append(
                {
                    "model": spec,
                    "arch": getattr(net, "arch_name", "") or spec,
                    "weights": weights,
                    "mode": mode,
                    "median_s_per_click": _median([r["mean_s"] for r in per_image]),
                    "median_s_per_brs_click": _median([r["mean_brs_s"] for r in per_image]),
                    "mean_evaluations_per_brs_click": _mean(
                        [e for r in per_image for e in r["evaluations"][1:]]
                    ),
                    "images": per_image,
                }
            )
            print(
                f"{spec:>16} {mode:>12}: {rows[-1]['median_s_per_click']:.3f} s/click",
                file=sys.stderr,
                flush=True,
            )
        del net, predictors
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: median over images of (f-BRS-B mean click) / (NoBRS mean click)."""
    out: dict[str, dict[str, Any]] = {}
    by_key = {(r["model"], r["mode"]): r for r in rows}
    for (model, mode), row in by_key.items():
        base = by_key.get((model, "NoBRS"))
        if mode != "f-BRS-B" or base is None:
            continue
        per_image = [
            b["mean_s"] / n["mean_s"]
            for b, n in zip(row["images"], base["images"], strict=True)
            if b["mean_s"] and n["mean_s"]
        ]
        ratio = _median(per_image)
        out[model] = {
            "fbrs_b_over_nobrs": ratio,
            "goal": GOAL_FBRS_B_OVER_NOBRS,
            "meets_goal": None if ratio is None else bool(ratio <= GOAL_FBRS_B_OVER_NOBRS),
        }
    return out


def markdown_table(rows: list[dict[str, Any]], modes: list[str]) -> str:
    """Models as rows, modes as columns: median seconds per click (evaluations per BRS click)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    by_key = {(r["model"], r["mode"]): r for r in rows}
    lines = ["| model | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
    for model in models:
        cells = []
        for mode in modes:
            r = by_key.get((model, mode))
            if r is None or r["median_s_per_click"] is None:
                cells.append("–")
                continue
            ev = r["mean_evaluations_per_brs_click"]
            extra = f" ({ev:.1f})" if ev else ""
            cells.append(f"{r['median_s_per_click']:.2f}{extra}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON output file")
    parser.add_argument(
        "--quick", action="store_true", help=f"{', '.join(QUICK_MODELS)}; 2 images, 3 clicks"
    )
    parser.add_argument(
        "--models", nargs="+", default=None, help="architectures, zoo names or checkpoint files"
    )
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--images", type=int, default=None, help="GrabCut objects (default 5)")
    parser.add_argument("--clicks", type=int, default=None, help="clicks per object (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--plain-network",
        action="store_true",
        help="run the networks as loaded (Predictor(inference_copy=False)): no folded, "
        "channels-last copy",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder holding GrabCut/ (default ../shared/datasets)",
    )
    args = parser.parse_args(argv)

    import torch

    from napari_fbrs.core.models.registry import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = str(resolve_device(args.device))
    except ValueError as exc:  # e.g. --device cuda on a machine without a GPU
        parser.error(str(exc))
    models = args.models or (QUICK_MODELS if args.quick else DEFAULT_MODELS)
    n_images = args.images or (2 if args.quick else 5)
    n_clicks = args.clicks or (3 if args.quick else 5)
    data_root = args.data_root or _shared_root() / "datasets"
    samples = load_images(n_images, data_root)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = benchmark(
        models, args.modes, samples, n_clicks, device, inference_copy=not args.plain_network
    )
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "click_latency",
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": device,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": {"start": load_start, "end": load_end},
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        },
        "settings": {
            "dataset": "GrabCut",
            "images": [s.name for s in samples],
            "clicks_per_image": n_clicks,
            "with_flip": True,
            "zoom_in_target_size": 400,
            "prob_thresh": 0.49,
            "lbfgs_maxfun": 20,
            "inference_copy": not args.plain_network,
            "statistic": "median over images of the mean seconds per click",
            "order": "per model, images outer and modes inner (interleaved)",
        },
        "results": rows,
        "fbrs_b_vs_nobrs": ratios(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown_table(rows, args.modes))
    for model, r in result["fbrs_b_vs_nobrs"].items():
        print(
            f"{model}: f-BRS-B / NoBRS = {r['fbrs_b_over_nobrs']:.2f} "
            f"(goal <= {GOAL_FBRS_B_OVER_NOBRS})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
