"""Registry of known architectures, building them, and loading checkpoints.

Architectures are registered by name with the dotted path of a builder function, so
nothing is imported until a model is actually built.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ArchSpec",
    "ARCHITECTURES",
    "CheckpointError",
    "architectures_of_family",
    "build_model",
    "identify_architecture",
    "load_model",
    "load_state_dict_file",
    "resolve_device",
]


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (unreadable, hostile, or of an unknown layout)."""


@dataclass(frozen=True)
class ArchSpec:
    """A known architecture.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"hrnet18_ocr64"``.
    builder : str
        ``"module:function"`` returning an untrained :class:`InteractiveNet`.
    family : str
        ``"fbrs"``, ``"ritm"`` or ``"lite"``.
    description : str
        One line for ``napari-fbrs models``.
    kwargs : dict
        Extra keyword arguments for the builder.
    """

    name: str
    builder: str
    family: str
    description: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any):
        module_name, func_name = self.builder.split(":")
        func: Callable[..., Any] = getattr(importlib.import_module(module_name), func_name)
        net = func(**{**self.kwargs, **overrides})
        net.arch_name = self.name
        return net


_M = "napari_fbrs.core.models"
ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in [
        ArchSpec(
            "resnet34_dh128",
            f"{_M}.deeplab:build_deeplab",
            "fbrs",
            "DeepLabV3+ ResNet-34, 128-channel head (f-BRS)",
            {"backbone": "resnet34", "head_channels": 128},
        ),
        ArchSpec(
            "resnet50_dh128",
            f"{_M}.deeplab:build_deeplab",
            "fbrs",
            "DeepLabV3+ ResNet-50, 128-channel head (f-BRS)",
            {"backbone": "resnet50", "head_channels": 128},
        ),
        ArchSpec(
            "resnet101_dh256",
            f"{_M}.deeplab:build_deeplab",
            "fbrs",
            "DeepLabV3+ ResNet-101, 256-channel head (f-BRS)",
            {"backbone": "resnet101", "head_channels": 256},
        ),
        ArchSpec(
            "hrnet18_ocr64",
            f"{_M}.hrnet:build_hrnet_ocr",
            "fbrs",
            "HRNetV2-W18 + OCR-64 (f-BRS)",
            {"width": 18, "ocr_width": 64},
        ),
        ArchSpec(
            "hrnet18s_ocr48",
            f"{_M}.hrnet:build_hrnet_ocr",
            "fbrs",
            "small HRNetV2-W18 + OCR-48 (f-BRS)",
            {"width": 18, "ocr_width": 48, "small": True},
        ),
        ArchSpec(
            "hrnet32_ocr128",
            f"{_M}.hrnet:build_hrnet_ocr",
            "fbrs",
            "HRNetV2-W32 + OCR-128 (f-BRS)",
            {"width": 32, "ocr_width": 128},
        ),
        ArchSpec(
            "hrnet48_ocr128",
            f"{_M}.hrnet:build_hrnet_ocr",
            "fbrs",
            "HRNetV2-W48 + OCR-128 (f-BRS)",
            {"width": 48, "ocr_width": 128},
        ),
        ArchSpec(
            "fbrs_lite",
            f"{_M}.lite:build_lite",
            "lite",
            "EfficientNet-Lite0 encoder + light DeepLabV3+-style decoder (bundled versions 1-2)",
        ),
        ArchSpec(
            "fbrs_lite2",
            f"{_M}.lite:build_lite",
            "lite",
            "EfficientNet-Lite2 encoder + the fbrs_lite decoder (the bundled fbrs-lite, version 3)",
            {"encoder": "lite2"},
        ),
        ArchSpec(
            "tiny_test",
            "napari_fbrs.core.testing:TinyNet",
            "test",
            "a tiny untrained network for tests only",
        ),
        # --- RITM release architectures (issue 8; models/ritm.py, models/ritm_config.py) ---
        ArchSpec(
            "ritm_hrnet18_itermask",
            f"{_M}.ritm:build_ritm_hrnet",
            "ritm",
            "RITM HRNetV2-W18 + OCR-64, previous-mask input (IT-M)",
            {"width": 18, "ocr_width": 64},
        ),
        ArchSpec(
            "ritm_hrnet18s_itermask",
            f"{_M}.ritm:build_ritm_hrnet",
            "ritm",
            "RITM small HRNetV2-W18 + OCR-48, previous-mask input (IT-M)",
            {"width": 18, "ocr_width": 48, "small": True},
        ),
        ArchSpec(
            "ritm_hrnet32_itermask",
            f"{_M}.ritm:build_ritm_hrnet",
            "ritm",
            "RITM HRNetV2-W32 + OCR-128, previous-mask input (IT-M)",
            {"width": 32, "ocr_width": 128},
        ),
        ArchSpec(
            "ritm_hrnet18_baseline",
            f"{_M}.ritm:build_ritm_hrnet",
            "ritm",
            "RITM HRNetV2-W18 + OCR-64, clicks only (baseline)",
            {"width": 18, "ocr_width": 64, "with_prev_mask": False},
        ),
        # --- end RITM ---
    ]
}


def architectures_of_family(family: str) -> tuple[str, ...]:
    """Names of the registered architectures of ``family`` (``"lite"``: the trainable ones)."""
    return tuple(name for name, spec in ARCHITECTURES.items() if spec.family == family)


def resolve_device(device: str | Any = "auto"):
    """Turn ``"auto"``/``"cpu"``/``"cuda"``/``"mps"`` (or a torch.device) into a torch.device.

    ``"auto"`` picks CUDA, then Apple MPS, then the CPU. Asking for an unavailable device
    raises ``ValueError`` naming what is available.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu'")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' was requested but Apple MPS is not available; use 'cpu'")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps") from exc


def build_model(name: str, **overrides: Any):
    """Build an untrained network of a registered architecture.

    Parameters
    ----------
    name : str
        A key of :data:`ARCHITECTURES`.

    Returns
    -------
    InteractiveNet
        In eval mode, with the official state-dict layout of that architecture.
    """
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise KeyError(f"unknown architecture {name!r}; known: {known}")
    net = ARCHITECTURES[name].build(**overrides)
    net.eval()
    return net


def _expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an architecture's state dict, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        net = ARCHITECTURES[name].build()
    return {
        k: tuple(v.shape)
        for k, v in net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


_SHAPES_CACHE: dict[str, dict[str, tuple[int, ...]]] = {}


def expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    if name not in _SHAPES_CACHE:
        _SHAPES_CACHE[name] = _expected_shapes(name)
    return _SHAPES_CACHE[name]


def _shapes_of(state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the tensors of ``state_dict`` (``num_batches_tracked`` aside)."""
    return {
        k: tuple(getattr(v, "shape", ()))
        for k, v in state_dict.items()
        if not k.endswith("num_batches_tracked")
    }


def _fits(state_dict: Mapping[str, Any], name: str) -> bool:
    """Whether ``state_dict`` has exactly the keys and shapes of architecture ``name``."""
    got = _shapes_of(state_dict)
    try:
        return got == expected_shapes(name)
    except ImportError:
        return False


def identify_architecture(state_dict: Mapping[str, Any]) -> str:
    """Name the registered architecture whose keys and shapes match ``state_dict`` exactly.

    Raises
    ------
    CheckpointError
        When nothing matches; the message names the closest architecture and the keys that
        differ (missing, unexpected, and wrong shapes with the found and expected shape).
    """
    got = _shapes_of(state_dict)
    best: tuple[float, str, list[str], list[str], list[str]] | None = None
    for name in ARCHITECTURES:
        try:
            want = expected_shapes(name)
        except ImportError:
            continue
        missing = sorted(set(want) - set(got))
        unexpected = sorted(set(got) - set(want))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        if not (missing or unexpected or wrong):
            return name
        score = (len(missing) + len(unexpected) + len(wrong)) / max(len(want), 1)
        if best is None or score < best[0]:
            best = (score, name, missing, unexpected, wrong)
    if best is None:
        raise CheckpointError("no architecture is registered")
    _, name, missing, unexpected, wrong = best

    if not set(got) & set(expected_shapes(name)):
        raise CheckpointError(
            "the checkpoint matches no known architecture: it shares no key with any f-BRS, "
            "RITM or napari-fbrs network, so it is not one of their checkpoints (its keys: "
            f"{_few(sorted(got))})"
        )

    want = expected_shapes(name)
    # a wrong shape is only actionable with both shapes (e.g. a 256-channel head in a
    # 128-channel slot means the other head width of the same family)
    shapes = [f"{k} {_shape(got[k])} instead of {_shape(want[k])}" for k in wrong]
    raise CheckpointError(
        "the checkpoint matches no known architecture; closest is "
        f"{name!r}: missing keys {_few(missing)}, unexpected keys {_few(unexpected)}, "
        f"wrong shapes {_few(shapes, sep='; ')}"
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def _few(items: list[str], sep: str = ", ", limit: int = 5) -> str:
    """``"N (a, b, ...)"``: how many items, and the first ``limit`` of them."""
    shown = sep.join(items[:limit]) + (f"{sep}..." if len(items) > limit else "")
    return f"{len(items)} ({shown})"


def load_state_dict_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint safely (``weights_only=True``): returns ``(state_dict, extra)``.

    Accepts a bare state dict or a dict holding one under ``"state_dict"`` (the official
    f-BRS/RITM files) or ``"model"``; ``extra`` holds the other top-level entries.

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupt or hostile (pickled code) files, with what to do.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    damaged = (
        f"{path} could not be read: the file is not a PyTorch checkpoint, or it is truncated "
        "or corrupt ({}). Delete it and download it again."
    )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        named = [line for line in lines if "GLOBAL" in line]
        with open(path, "rb") as fh:
            is_pickle = fh.read(1) == b"\x80"  # the PROTO opcode that starts a pickle
        if not (named or is_pickle):  # garbage that merely fails to unpickle
            raise CheckpointError(
                damaged.format(lines[0] if lines else type(exc).__name__)
            ) from exc
        # name what the file tried to load (e.g. "GLOBAL posix.system") when torch says it
        after = [i for i, line in enumerate(lines) if "WeightsUnpickler" in line]
        named = named or (lines[after[0] + 1 : after[0] + 2] if after else []) or lines[:1]
        raise CheckpointError(
            f"{path.name} was refused: it contains pickled code or objects that are not plain "
            "tensors (loaded with weights_only=True, nothing was executed). Only use "
            f"checkpoints from a source you trust. Detail: {named[0]}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(damaged.format(f"{type(exc).__name__}: {first}")) from exc
    if zipfile.is_zipfile(path):
        # torch does not verify the zip entries' CRC32: bit rot inside a tensor loads silently
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(damaged.format(f"{type(exc).__name__}: {exc}")) from exc
        if bad is not None:
            raise CheckpointError(damaged.format(f"checksum mismatch in entry {bad}"))
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a state dict")
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], dict):
            extra = {k: v for k, v in obj.items() if k != key}
            return dict(obj[key]), extra
    return dict(obj), {}


def load_model(path_or_name: str | os.PathLike, device: str = "auto"):
    """Load a network from a checkpoint file or a registered checkpoint name.

    Parameters
    ----------
    path_or_name : str or path
        A ``.pth``/``.pt`` file in an official (f-BRS/RITM) or napari-fbrs layout, or a
        name known to the model zoo (e.g. ``"fbrs-lite"``, ``"hrnet18_ocr64_sbd"``).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Returns
    -------
    InteractiveNet
        In eval mode with gradients off, on ``device``.
    """
    import torch

    from napari_fbrs.core import zoo

    dev = resolve_device(device)
    path = Path(path_or_name)
    if not path.is_file():
        path = zoo.checkpoint_path(str(path_or_name))
    state_dict, extra = load_state_dict_file(path)
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(
                    f"{path.name} holds NaN or infinite weights (first in {key!r}): it is "
                    "damaged or the training diverged; use another checkpoint"
                )
    from napari_fbrs.core.models.ritm_config import build_from_checkpoint

    # a RITM file carries its model config: built from it, read as data (or refused)
    net = build_from_checkpoint(state_dict, extra)
    if net is None:
        arch = extra.get("arch") if isinstance(extra.get("arch"), str) else None
        # the file's own label is trusted only when its tensors fit it; otherwise (a
        # mislabelled or edited file) the tensors decide, with the closest-match error
        if arch is None or arch not in ARCHITECTURES or not _fits(state_dict, arch):
            arch = identify_architecture(state_dict)
        net = build_model(arch)
    arch = getattr(net, "arch_name", None) or type(net).__name__
    missing, unexpected = net.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path.name} does not fit {arch!r}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    net = net.float().to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
