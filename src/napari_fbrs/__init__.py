"""napari-fbrs: interactive click segmentation with f-BRS, in napari and in scripts.

The public API is imported lazily, so ``import napari_fbrs`` imports neither torch nor Qt::

    import napari_fbrs as nf
    net = nf.load_model("fbrs-lite")
    p = nf.Predictor(net, mode="f-BRS-B")
    p.set_image(image)
    prob = p.add_click(120, 200, positive=True)
"""

from __future__ import annotations

import importlib
from typing import Any

from napari_fbrs._version import __version__

# public name -> module that defines it
_LAZY = {
    "Click": "napari_fbrs.core.clicks",
    "Predictor": "napari_fbrs.core.predictor",
    "ZoomIn": "napari_fbrs.core.transforms",
    "MODES": "napari_fbrs.core.predictor",
    "build_model": "napari_fbrs.core.models.registry",
    "load_model": "napari_fbrs.core.models.registry",
    "ARCHITECTURES": "napari_fbrs.core.models.registry",
    "CheckpointError": "napari_fbrs.core.models.registry",
    "propagate": "napari_fbrs.core.propagation",
    "save_labels": "napari_fbrs.core.labels_file",
    "train": "napari_fbrs.core.training",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562), then cache the name here."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_fbrs' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, including those not imported yet."""
    return sorted(__all__)
