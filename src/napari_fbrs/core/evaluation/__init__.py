"""Evaluation of interactive segmentation with the standard NoC protocol.

A simulated user (:mod:`.robot`) clicks on the worst error of the current prediction, the
runner (:mod:`.runner`) records the IoU after every click, :mod:`.metrics` turns the IoU
curves into NoC@80/85/90 and mIoU-per-click, :mod:`.datasets` reads the benchmark layouts
and microscopy label images, :mod:`.report` writes the table, the JSON and the plot, and
:mod:`.download` fetches the public benchmark archives.

Submodules are imported on demand; importing this package does no work.
"""
