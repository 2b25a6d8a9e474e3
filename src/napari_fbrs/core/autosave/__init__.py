"""Sidecar autosave of a segmentation session, so that a crash never loses work.

What is saved, after every change the caller chooses (each commit, undo, redo, and a few
seconds after the last click):

* the clicks of every slice's unfinished object;
* every committed object with the clicks that made it (its *provenance*: slice, label id,
  clicks, whether it was propagated, the predictor settings in effect), so that it can be
  replayed (:func:`replay`) or audited;
* the labels array itself (a compressed ``.npz`` beside the JSON, written only when the
  labels changed);
* what the session was about: the image's name, path, shape, dtype and a fingerprint of
  its pixels, the settings, the threshold and the contrast limits.

Files
-----
``<base>.json`` is the sidecar (plain JSON, never pickle); ``<base>.<digest>.labels.npz``
holds the labels, named after the BLAKE2b digest of their bytes, which the JSON records.
Both are written atomically (a temporary file in the same folder, ``fsync``, then
``os.replace``), the ``.npz`` first: whenever the process dies, the JSON on disk is the
previous or the new one, complete, and the ``.npz`` it names exists and matches its digest.

Where: :func:`sidecar_path` puts ``<image file>.fbrs-autosave.json`` beside an image that
was opened from a file (when that folder is writable), and otherwise, e.g. for a layer
that only lives in napari, ``<cache>/autosave/<layer name>-<hash>.fbrs-autosave.json`` in
:func:`autosave_dir` (``napari_fbrs.core.zoo.cache_dir() / "autosave"``, which
``NAPARI_FBRS_CACHE`` moves).

Use from a GUI (the napari widget) or a script::

    from napari_fbrs.core.autosave import Autosave

    saver = Autosave.for_image(layer.source.path or layer.name)
    if saver.exists():                       # a previous session crashed
        state = saver.load()                 # AutosaveError if unusable, with why
        state.restore(session)               # clicks and labels back into the session
        labels_layer.data = session.labels   # the widget shows them
    ...
    saver.write_session(session, name=layer.name, path=path, settings=settings_dict)
    ...
    saver.discard()                          # once the user saved their labels

Loading never runs code from the files (``json`` and ``numpy.load(allow_pickle=False)``),
refuses labels files outside the sidecar's folder, and checks every value before anything
in the session changes. Nothing here imports napari, Qt or torch.

The package's modules, one job each: ``records`` (the layout's name and version, the
error, the image and object records), ``fingerprint`` (recognising an image), ``state``
(:class:`SessionState`: snapshot and restore), ``document`` (the JSON document, written
and read), ``checks`` (of the values read), ``labels`` (the labels ``.npz``), ``paths``
(where sidecars live, and listing them), ``store`` (the :class:`Autosave` class) and
``provenance`` (:func:`replay`). Files are written with
:func:`napari_fbrs.core.atomic.atomic_write`.
"""

from __future__ import annotations

from napari_fbrs.core.autosave.fingerprint import image_fingerprint
from napari_fbrs.core.autosave.paths import SUFFIX, autosave_dir, list_autosaves, sidecar_path
from napari_fbrs.core.autosave.provenance import replay
from napari_fbrs.core.autosave.records import (
    FORMAT,
    VERSION,
    AutosaveError,
    ImageInfo,
    ObjectRecord,
)
from napari_fbrs.core.autosave.state import SessionState
from napari_fbrs.core.autosave.store import Autosave

__all__ = [
    "FORMAT",
    "SUFFIX",
    "VERSION",
    "Autosave",
    "AutosaveError",
    "ImageInfo",
    "ObjectRecord",
    "SessionState",
    "autosave_dir",
    "image_fingerprint",
    "list_autosaves",
    "replay",
    "sidecar_path",
]
