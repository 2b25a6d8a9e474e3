"""Screenshot of the widget propagating a nucleus through the nuclei3d stack (xvfb-run).

Usage: ``xvfb-run -a python tools/screenshot_stack.py OUT.png [../shared/datasets/microscopy]``
"""
# ruff: noqa: E402  (a script: imports follow the viewer setup on purpose)

import os
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import tifffile
from qtpy.QtWidgets import QApplication

from napari_fbrs.core.autosave import paths as autosave_paths

out = sys.argv[1]
data = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/datasets/microscopy")
# the screenshot must not show (or write) the user's autosaved sessions (sidecar_path looks
# autosave_dir up in the paths module)
_autosave_tmp = tempfile.TemporaryDirectory(prefix="fbrs-shot-autosave-")
autosave_paths.autosave_dir = lambda: Path(_autosave_tmp.name)
# ... nor the panel's remembered settings: the defaults, and nothing written for the user
_config_tmp = tempfile.TemporaryDirectory(prefix="fbrs-shot-config-")
os.environ["NAPARI_FBRS_CONFIG"] = _config_tmp.name
from napari.settings import get_settings

get_settings().application.gui_notification_level = "none"
volume = tifffile.imread(data / "nuclei3d_image.tif")
labels = tifffile.imread(data / "nuclei3d_labels.tif")
viewer = napari.Viewer(title="napari f-BRS")
viewer.window.resize(1500, 1000)
layer = viewer.add_image(volume, name="nuclei3d", colormap="gray")
layer.contrast_limits = tuple(float(v) for v in np.percentile(volume, (0.5, 99.5)))
dock, w = viewer.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
w.synchronous = True
w.configure(device="cpu")
app = QApplication.instance()


def settle(n: int = 20) -> None:
    for _ in range(n):
        app.processEvents()
        time.sleep(0.05)


settle()
# the nucleus of 6+ slices nearest the field's centre: one click on its middle slice, then
# propagation with both stop rules


def _distance_to_centre(obj: int) -> float:
    zz, yy, xx = np.nonzero(labels == obj)
    if np.ptp(zz) < 5:
        return np.inf
    return float(np.hypot(yy.mean() - labels.shape[1] / 2, xx.mean() - labels.shape[2] / 2))


nucleus = min((int(i) for i in np.unique(labels) if i), key=_distance_to_centre)
zs = np.flatnonzero((labels == nucleus).any(axis=(1, 2)))
z = int((zs[0] + zs[-1]) // 2)
ys, xs = np.nonzero(labels[z] == nucleus)
viewer.dims.set_current_step(0, z)
settle(5)
w.add_click(float(np.median(ys)), float(np.median(xs)))
w.convex_check.setChecked(True)
w.min_contrast_spin.setValue(0.8)
label = w.propagate_object()
objects = w.objects_layer.data
reached = [int(k) for k in np.flatnonzero((objects == label).any(axis=(1, 2)))]
print("nucleus", nucleus, "true slices", zs.min(), "-", zs.max(), "propagated", reached)
viewer.dims.set_current_step(0, z + 1)
viewer.layers.selection.active = layer
viewer.reset_view()
settle(40)
from napari._qt.dialogs.qt_notification import NapariQtNotification

for t in viewer.window._qt_window.findChildren(NapariQtNotification):
    t.close()
settle(10)
img = viewer.screenshot(canvas_only=False, flash=False)
from PIL import Image

Image.fromarray(img).save(out)
print(img.shape)
viewer.close()
