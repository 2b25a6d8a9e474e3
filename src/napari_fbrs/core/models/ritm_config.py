"""Reading the model configuration stored in RITM checkpoints, as data only.

A RITM release file is a dict ``{"state_dict": ..., "config": ...}``. The config describes
the model that was trained: the *name* of its class and the arguments of its constructor,
each as ``{"type": "builtin" | "class", "value": ..., "specified": bool}``, where a class
argument (e.g. the norm layer) is stored as its dotted name, a string. For example::

    {"class": "isegm.model.is_hrnet_model.HRNetModel",
     "params": {"width": {"type": "builtin", "value": 18, "specified": True},
                "norm_layer": {"type": "class",
                               "value": "torch.nn.modules.batchnorm.BatchNorm2d",
                               "specified": False},
                ...}}

The file is read with ``torch.load(..., weights_only=True)`` (plain dicts, strings, numbers,
tuples and tensors only: nothing in it can run). The names in the config are **never
imported or called**: :func:`parse_ritm_config` checks them against the short list of
classes and arguments napari-fbrs knows and maps them onto its own builder
(:func:`napari_fbrs.core.models.ritm.build_ritm_hrnet`); anything else is refused with a
:class:`RITMConfigError` that says what and why.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from napari_fbrs.core.image import IMAGENET_MEAN, IMAGENET_STD
from napari_fbrs.core.models.registry import (
    ARCHITECTURES,
    CheckpointError,
    identify_architecture,
    load_state_dict_file,
    resolve_device,
)

__all__ = [
    "RITMConfigError",
    "RITMModelConfig",
    "build_from_checkpoint",
    "build_ritm_model",
    "is_ritm_config",
    "load_ritm_model",
    "parse_ritm_config",
    "read_ritm_checkpoint",
]

# The one model class of the RITM release, by its dotted name (a vendored copy of the RITM
# package may sit under another parent package, hence the optional prefix).
_HRNET_MODEL = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*\.)*is_hrnet_model\.HRNetModel$")
_OTHER_RITM_MODELS = re.compile(r"(?:^|\.)(DeeplabModel|HRNetModel|ISModel)$")
_BATCHNORM_NAMES = ("torch.nn.modules.batchnorm.BatchNorm2d", "torch.nn.BatchNorm2d")

# What RITM's HRNetModel would use for an argument missing from the config (the defaults
# of its constructor): a file that omits an argument means that default.
_DEFAULTS: dict[str, Any] = {
    "width": 48,
    "ocr_width": 256,
    "small": False,
    "backbone_lr_mult": 0.1,
    "norm_layer": "torch.nn.modules.batchnorm.BatchNorm2d",
    "use_rgb_conv": True,
    "with_aux_output": False,
    "norm_radius": 260,
    "use_disks": False,
    "cpu_dist_maps": False,
    "clicks_groups": None,
    "with_prev_mask": False,
    "use_leaky_relu": False,
    "binary_prev_mask": False,
    "conv_extend": False,
    "norm_mean_std": (list(IMAGENET_MEAN), list(IMAGENET_STD)),
}
# arguments that only matter for training (learning-rate multipliers, auxiliary output,
# where distance maps are computed): checked for type, then ignored
_TRAINING_ONLY = ("backbone_lr_mult", "with_aux_output", "cpu_dist_maps")
_CLASS_PARAMS = ("norm_layer",)
# HRNetV2 widths (bounded, so that a file cannot make us build an enormous network)
_HRNET_WIDTHS = (18, 30, 32, 40, 44, 48, 64)
_MAX_OCR_WIDTH = 512


class RITMConfigError(CheckpointError):
    """A RITM checkpoint's config names something napari-fbrs does not know or support."""


@dataclass(frozen=True)
class RITMModelConfig:
    """The hyperparameters of a RITM HRNet model, as napari-fbrs builds it.

    Attributes
    ----------
    width, ocr_width : int
        HRNet width and OCR key channels.
    small : bool
        Small ("18s") HRNet layout.
    with_prev_mask : bool
        Previous-mask input ("IT-M").
    norm_radius : float
        Disk radius (pixels) with ``use_disks``, else the distance-map normalisation.
    use_disks, use_leaky_relu, binary_prev_mask : bool
        See :class:`napari_fbrs.core.models.ritm.RITMHRNetNet`.
    """

    width: int = 18
    ocr_width: int = 64
    small: bool = False
    with_prev_mask: bool = True
    norm_radius: float = 5.0
    use_disks: bool = True
    use_leaky_relu: bool = True
    binary_prev_mask: bool = False

    def builder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`napari_fbrs.core.models.ritm.build_ritm_hrnet`."""
        return asdict(self)

    def registry_entry(self) -> tuple[str | None, dict[str, Any]]:
        """``(arch, overrides)``: the registered architecture with this layout and the
        builder arguments that differ from that entry's (``(None, all kwargs)`` if none)."""
        kwargs = self.builder_kwargs()
        base = RITMModelConfig()
        for name, spec in ARCHITECTURES.items():
            if spec.family != "ritm":
                continue
            want = asdict(RITMModelConfig(**{**asdict(base), **spec.kwargs}))
            layout = ("width", "ocr_width", "small", "with_prev_mask")
            if all(want[k] == kwargs[k] for k in layout):
                return name, {k: v for k, v in kwargs.items() if want[k] != v}
        return None, kwargs


def _refuse(reason: str) -> RITMConfigError:
    return RITMConfigError(
        f"the RITM model config was refused: {reason}. napari-fbrs reads these configs as "
        "data (nothing named in the file is imported or called) and supports the RITM "
        "release's HRNetModel (HRNet + OCR, coordinate features added after the first "
        "convolution, optional previous-mask input)."
    )


def is_ritm_config(obj: Any) -> bool:
    """Whether ``obj`` has the shape of a RITM model config (``{"class": ..., "params": ...}``)."""
    return isinstance(obj, Mapping) and "class" in obj and "params" in obj


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _param_value(name: str, entry: Any) -> Any:
    """The value of one serialised constructor argument, with its declared type checked."""
    if not isinstance(entry, Mapping) or "value" not in entry:
        raise _refuse(f"argument {name!r} is not a {{'type', 'value', 'specified'}} entry")
    extra = set(entry) - {"type", "value", "specified"}
    if extra:
        raise _refuse(f"argument {name!r} has unknown fields {sorted(map(str, extra))}")
    kind = entry.get("type", "builtin")
    expected = "class" if name in _CLASS_PARAMS else "builtin"
    if kind != expected:
        raise _refuse(f"argument {name!r} is declared as {kind!r}, expected {expected!r}")
    return entry["value"]


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _refuse(f"{name} must be true or false, got {value!r}")
    return value


def parse_ritm_config(config: Any) -> RITMModelConfig:
    """Map a RITM checkpoint's config onto :class:`RITMModelConfig`, or refuse it.

    Parameters
    ----------
    config : mapping
        The ``"config"`` entry of a RITM checkpoint, as read with ``weights_only=True``.

    Returns
    -------
    RITMModelConfig

    Raises
    ------
    RITMConfigError
        Not a config; a model class other than the release's ``HRNetModel``; an unknown
        argument; a value of the wrong type or out of range; or a supported class with an
        option napari-fbrs does not implement (``use_rgb_conv``, ``conv_extend``,
        ``clicks_groups``, no OCR, a norm layer other than BatchNorm2d, a normalisation
        other than ImageNet's). The message says which.
    """
    if not is_ritm_config(config):
        raise _refuse("it is not a {'class': ..., 'params': ...} mapping")
    unknown_top = set(config) - {"class", "params"}
    if unknown_top:
        raise _refuse(f"unknown top-level entries {sorted(map(str, unknown_top))}")
    cls = config["class"]
    if not isinstance(cls, str):
        raise _refuse(f"the model class must be a dotted name, got a {type(cls).__name__}")
    if not _HRNET_MODEL.match(cls):
        if _OTHER_RITM_MODELS.search(cls):
            raise _refuse(f"model class {cls!r} is a RITM model napari-fbrs does not build")
        raise _refuse(f"unknown model class {cls!r}")
    params = config["params"]
    if not isinstance(params, Mapping):
        raise _refuse("'params' is not a mapping")
    unknown = sorted(str(k) for k in params if k not in _DEFAULTS)
    if unknown:
        raise _refuse(f"unknown arguments {unknown}")
    values = dict(_DEFAULTS)
    for name, entry in params.items():
        values[name] = _param_value(name, entry)

    # -- options napari-fbrs does not implement -----------------------------------------
    if values["use_rgb_conv"] is not False:
        raise _refuse(
            "use_rgb_conv=True (clicks mixed into the image by a 1x1 conv) is not "
            "supported; the RITM release uses the coordinate-feature branch"
        )
    if values["conv_extend"] is not False:
        raise _refuse("conv_extend=True is not supported")
    if values["clicks_groups"] is not None:
        raise _refuse("clicks_groups (separate maps per click order) is not supported")
    if values["norm_layer"] not in _BATCHNORM_NAMES:
        raise _refuse(f"norm_layer {values['norm_layer']!r} is not supported (BatchNorm2d only)")
    mean_std = values["norm_mean_std"]
    try:
        mean, std = (tuple(float(v) for v in seq) for seq in mean_std)
        ok = (
            len(mean) == 3
            and len(std) == 3
            and all(abs(a - b) <= 1e-6 for a, b in zip(mean, IMAGENET_MEAN, strict=True))
            and all(abs(a - b) <= 1e-6 for a, b in zip(std, IMAGENET_STD, strict=True))
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _refuse(f"norm_mean_std {mean_std!r} is not the ImageNet mean and std")

    # -- types and ranges -------------------------------------------------------------------
    width, ocr_width = values["width"], values["ocr_width"]
    if not isinstance(width, int) or isinstance(width, bool) or width not in _HRNET_WIDTHS:
        raise _refuse(f"width must be one of {_HRNET_WIDTHS}, got {width!r}")
    if not isinstance(ocr_width, int) or isinstance(ocr_width, bool):
        raise _refuse(f"ocr_width must be an integer, got {ocr_width!r}")
    if ocr_width == 0:
        raise _refuse("ocr_width=0 (HRNet without the OCR head) is not supported")
    if not 0 < ocr_width <= _MAX_OCR_WIDTH:
        raise _refuse(f"ocr_width must lie in 1..{_MAX_OCR_WIDTH}, got {ocr_width}")
    radius = values["norm_radius"]
    if not _is_number(radius) or not 0 < radius <= 10_000:
        raise _refuse(f"norm_radius must be a positive number, got {radius!r}")
    if not _is_number(values["backbone_lr_mult"]):
        raise _refuse(f"backbone_lr_mult must be a number, got {values['backbone_lr_mult']!r}")
    flags = {
        name: _check_bool(name, values[name])
        for name in (
            "small",
            "use_disks",
            "with_prev_mask",
            "use_leaky_relu",
            "binary_prev_mask",
            "with_aux_output",
            "cpu_dist_maps",
        )
    }
    return RITMModelConfig(
        width=width,
        ocr_width=ocr_width,
        small=flags["small"],
        with_prev_mask=flags["with_prev_mask"],
        norm_radius=float(radius),
        use_disks=flags["use_disks"],
        use_leaky_relu=flags["use_leaky_relu"],
        binary_prev_mask=flags["binary_prev_mask"],
    )


def build_ritm_model(config: RITMModelConfig):
    """Build the untrained network ``config`` describes (a registered one where possible).

    Returns
    -------
    RITMHRNetNet
        In eval mode; ``arch_name`` is the registered name, or a descriptive one for a
        layout that is not registered.
    """
    from napari_fbrs.core.models.registry import build_model
    from napari_fbrs.core.models.ritm import build_ritm_hrnet

    arch, overrides = config.registry_entry()
    if arch is not None:
        return build_model(arch, **overrides)
    net = build_ritm_hrnet(**config.builder_kwargs()).eval()
    net.arch_name = "ritm_hrnet{}{}_ocr{}_{}".format(
        config.width,
        "s" if config.small else "",
        config.ocr_width,
        "itermask" if config.with_prev_mask else "baseline",
    )
    return net


def build_from_checkpoint(state_dict: Mapping[str, Any], extra: Mapping[str, Any]):
    """Build the (untrained) network a RITM checkpoint's config describes, or ``None``.

    Meant for :func:`~napari_fbrs.core.models.registry.load_model`: a file whose
    ``"config"`` entry has the RITM shape (``{"class": ..., "params": ...}``) is built from
    that config, read as data; any other file gives ``None`` and is identified by its keys.

    Parameters
    ----------
    state_dict : mapping
        The checkpoint's weights (not used; for symmetry with the loader).
    extra : mapping
        The checkpoint's other top-level entries (from
        :func:`~napari_fbrs.core.models.registry.load_state_dict_file`).

    Returns
    -------
    RITMHRNetNet or None

    Raises
    ------
    RITMConfigError
        The config has the RITM shape but is refused (see :func:`parse_ritm_config`).
    """
    config = extra.get("config")
    if not is_ritm_config(config):
        return None
    return build_ritm_model(parse_ritm_config(config))


def read_ritm_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, Any], RITMModelConfig | None]:
    """Read a RITM checkpoint safely: ``(state_dict, config)``.

    The file is read with ``torch.load(..., weights_only=True)``; ``config`` is ``None``
    when the file holds no config (a bare state dict).

    Raises
    ------
    CheckpointError
        Unreadable or hostile file (see
        :func:`~napari_fbrs.core.models.registry.load_state_dict_file`).
    RITMConfigError
        The config is refused.
    """
    state_dict, extra = load_state_dict_file(path)
    config = extra.get("config")
    if config is None or (isinstance(config, Mapping) and not config):
        return state_dict, None
    return state_dict, parse_ritm_config(config)


def load_ritm_model(path: str | os.PathLike, device: str = "auto"):
    """Load a RITM release checkpoint (or a bare state dict in its layout).

    Parameters
    ----------
    path : str or path
        e.g. ``coco_lvis_h18_itermask.pth``.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Returns
    -------
    RITMHRNetNet
        Built from the file's config (read as data), weights loaded with strict key and
        shape matching (``num_batches_tracked`` aside), eval mode, gradients off.

    Raises
    ------
    CheckpointError
        Unreadable, hostile, refused config, or weights that do not fit the config.
    """
    from napari_fbrs.core.models.registry import build_model

    state_dict, config = read_ritm_checkpoint(path)
    if config is not None:
        net = build_ritm_model(config)
    else:
        arch = identify_architecture(state_dict)
        if ARCHITECTURES[arch].family != "ritm":
            raise CheckpointError(f"{os.fspath(path)!s} is a {arch!r} checkpoint, not a RITM one")
        net = build_model(arch)
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()}
    skip = "num_batches_tracked"
    missing = sorted(k for k in set(want) - set(got) if not k.endswith(skip))
    unexpected = sorted(k for k in set(got) - set(want) if not k.endswith(skip))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k] and not k.endswith(skip))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"the weights of {os.path.basename(os.fspath(path))} do not fit the model its "
            f"config describes ({net.arch_name}): missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shapes {wrong[:5]}"
        )
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise CheckpointError(
                f"{os.path.basename(os.fspath(path))} holds non-finite values (NaN or Inf) in "
                f"{key!r}: the file is damaged or the training diverged"
            )
    net.load_state_dict(state_dict, strict=False)
    net = net.float().to(resolve_device(device)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
