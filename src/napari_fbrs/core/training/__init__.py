"""Training and fine-tuning of the bundled ``fbrs_lite`` network.

``train`` runs (or resumes) a training run and writes resumable checkpoints;
``export`` turns a checkpoint into the fp16 file that ships with the package. Submodules:
``data`` (dataset folders + synthetic mix), ``synthetic`` (procedural scenes), ``augment``,
``paste`` (copy-paste composites), ``clicks_sim`` (simulated users), ``loss`` (normalized
focal loss), ``checkpoint``, ``loop``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainProgress", "export", "init_model", "normalized_focal_loss", "train"]

_LAZY = {
    "train": "napari_fbrs.core.training.loop",
    "TrainProgress": "napari_fbrs.core.training.loop",
    "export": "napari_fbrs.core.training.checkpoint",
    "init_model": "napari_fbrs.core.training.checkpoint",
    "normalized_focal_loss": "napari_fbrs.core.training.loss",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
