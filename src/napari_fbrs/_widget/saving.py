"""Saving the finished objects from the dock widget ("Save objects..."): the objects
layer's labels written to a TIFF file, and beside it the clicks that made them (a CSV file
for ``napari-fbrs segment --clicks``); after which the autosave has nothing left to keep."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog

from napari_fbrs._widget import notify
from napari_fbrs._widget.layers import layer_source_path
from napari_fbrs.core.autosave.paths import safe_stem
from napari_fbrs.core.clicks_table import write_clicks_table
from napari_fbrs.core.labels_file import LABELS_SUFFIXES, save_labels

__all__ = ["SavingMixin"]


class SavingMixin:
    """Saving the objects layer to a file.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def save_objects(self, path: str | os.PathLike | None = None) -> Path | None:
        """Save the objects layer (the committed objects, the image's nD shape) to a TIFF.

        Beside it, ``<name>_clicks.csv`` gets the clicks of the objects that are still
        exactly what their clicks made (:meth:`SegmentationSession.reproducible_objects
        <napari_fbrs.core.session.SegmentationSession.reproducible_objects>`), so that
        ``napari-fbrs segment IMAGE --clicks <name>_clicks.csv`` makes them again; painted,
        loaded or changed objects are left out of it (the TIFF has them all). A failure to
        write it is a warning; the TIFF stays saved.

        After a successful write the autosave sidecar of this image is removed, unless
        some slice still has clicks of an unfinished object (the sidecar keeps them) or
        it holds an earlier session that was not restored; so "Restore previous session"
        is not offered again for work that is saved.

        Parameters
        ----------
        path : str or os.PathLike, optional
            A ``.tif``/``.tiff`` file. ``None`` asks with a file dialog, proposing
            ``<image file>_objects.tif`` beside the image's file (or ``<layer
            name>_objects.tif`` in the current folder), then the last file saved.

        Returns
        -------
        Path or None
            The file written; ``None`` when cancelled or when the write failed (with a
            warning; the labels, the file already there and the autosave stay as they
            were).
        """
        session = self._require_session()
        if session is None:
            return None
        self._adopt_objects_layer()
        if path is None:
            path = self._ask_objects_path()
            if path is None:
                return None
        try:
            written = save_labels(session.labels, path)
        except (OSError, ValueError) as exc:
            notify.warning(f"f-BRS could not save the objects to {path}: {exc}")
            return None
        self._objects_path = written
        unfinished = session.all_clicks()
        if unfinished:
            note = (
                f"; {len(unfinished)} slice(s) have clicks of unfinished objects, which the "
                "autosave keeps"
            )
        elif self._saver is not None and self._unclaimed:
            note = "; the autosave of an earlier session is kept (Restore previous session)"
        else:
            note = ""
            if self._saver is not None:
                self._autosave_timer.stop()
                self._saver.discard()
        n_objects = int(np.count_nonzero(np.unique(session.labels)))
        clicks_note = self._save_clicks(session, written)
        self._set_status(f"Saved {n_objects} object(s) to {written}{clicks_note}{note}.")
        return written

    def _save_clicks(self, session, labels_path: Path) -> str:
        """Write the clicks file beside ``labels_path``; the status line's note on it."""
        objects = session.reproducible_objects()
        if not objects:
            return ""
        path = labels_path.with_name(f"{labels_path.stem}_clicks.csv")
        try:
            write_clicks_table(path, objects)
        except ValueError as exc:  # objects with slice keys of different lengths
            return f" (their clicks were not saved: {exc})"
        except OSError as exc:
            notify.warning(f"f-BRS saved the objects but could not save their clicks: {exc}")
            return ""
        return f", the clicks of {len({o.label for o in objects})} of them to {path.name}"

    def _default_objects_path(self) -> Path:
        """Where the save dialog starts: the last file saved, else beside the image."""
        if self._objects_path is not None:
            return self._objects_path
        layer = self._image_layer
        source = layer_source_path(layer) if layer is not None else None
        if source is not None:
            return source.with_name(f"{source.stem}_objects.tif")
        return Path.cwd() / f"{safe_stem(str(getattr(layer, 'name', '')))}_objects.tif"

    def _ask_objects_path(self) -> Path | None:
        patterns = " ".join(f"*{suffix}" for suffix in LABELS_SUFFIXES)
        chosen, _ = QFileDialog.getSaveFileName(
            self, "Save objects", str(self._default_objects_path()), f"TIFF ({patterns})"
        )
        if not chosen:
            return None
        path = Path(chosen)
        # a name typed without a suffix gets one; another suffix is refused by save_labels
        return path if path.suffix else path.with_suffix(".tif")
