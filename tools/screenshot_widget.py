"""Screenshot of the f-BRS widget docked in napari (run under xvfb-run)."""
# ruff: noqa: E402  (a script: imports follow the viewer setup on purpose)

import os
import sys
import time

import napari
from qtpy.QtWidgets import QApplication

from napari_fbrs._sample_data import load_sample

out = sys.argv[1]
# the screenshot must not show (or write) the user's autosaved sessions (sidecar_path looks
# autosave_dir up in the paths module)
import tempfile
from pathlib import Path

from napari_fbrs.core.autosave import paths as autosave_paths

_autosave_tmp = tempfile.TemporaryDirectory(prefix="fbrs-shot-autosave-")
autosave_paths.autosave_dir = lambda: Path(_autosave_tmp.name)
# ... nor the panel's remembered settings: the defaults, and nothing written for the user
_config_tmp = tempfile.TemporaryDirectory(prefix="fbrs-shot-config-")
os.environ["NAPARI_FBRS_CONFIG"] = _config_tmp.name
from napari.settings import get_settings

get_settings().application.gui_notification_level = "none"
viewer = napari.Viewer(title="napari f-BRS")
viewer.window.resize(1500, 950)
viewer.add_image(load_sample("photo"), name="photo", rgb=True)
dock, w = viewer.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
w.synchronous = True
w.configure(device="cpu")
app = QApplication.instance()
for _ in range(20):
    app.processEvents()
    time.sleep(0.05)
# object 1: the cup, finished
w.add_click(110, 215)
w.add_click(245, 110, positive=False)
w.add_click(215, 265, positive=False)  # the spoon
print("cup", w.current_mask.sum())
print("saucer", None if w.current_mask is None else w.current_mask.sum())
viewer.layers.selection.active = viewer.layers["photo"]
viewer.reset_view()
for _ in range(40):
    app.processEvents()
    time.sleep(0.05)
from napari._qt.dialogs.qt_notification import NapariQtNotification

for t in viewer.window._qt_window.findChildren(NapariQtNotification):
    t.close()
for _ in range(10):
    app.processEvents()
    time.sleep(0.05)
img = viewer.screenshot(canvas_only=False, flash=False)
from PIL import Image

Image.fromarray(img).save(out)
print(img.shape)
viewer.close()
