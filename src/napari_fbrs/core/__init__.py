"""The Qt-free core of napari-fbrs: networks, click encoding, predictor, evaluation, training.

Nothing here imports napari or Qt (a test enforces it).
"""
