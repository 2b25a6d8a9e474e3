"""The napari dock widget of napari-fbrs (``f-BRS`` in *Plugins*).

Importing this package imports Qt and napari but neither torch nor the networks: they are
loaded on a worker thread when the first prediction (or the model warm-up) needs them.
"""

from napari_fbrs._widget.widget import (
    CLICKS_LAYER,
    CURRENT_LAYER,
    OBJECTS_LAYER,
    FbrsWidget,
    PredictorSettings,
)

__all__ = ["CLICKS_LAYER", "CURRENT_LAYER", "OBJECTS_LAYER", "FbrsWidget", "PredictorSettings"]
