"""Autosave glue of the dock widget: the session saved to a sidecar file
(:mod:`napari_fbrs.core.autosave`) after every commit, undo and redo and shortly after
click edits, and "Restore previous session" when an image's sidecar is found again.
Autosave errors never stop segmenting."""

from __future__ import annotations

import contextlib
import os
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_fbrs._widget import notify
from napari_fbrs._widget.layers import layer_source_path
from napari_fbrs.core.autosave import (
    SUFFIX,
    Autosave,
    AutosaveError,
    ImageInfo,
    SessionState,
    image_fingerprint,
)
from napari_fbrs.core.session import Change, SegmentationSession

if TYPE_CHECKING:  # pragma: no cover
    from napari.layers import Image

__all__ = ["AutosaveMixin"]


class AutosaveMixin:
    """Autosaving the session and restoring an earlier one.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    #: Autosave the session to a sidecar file (see :mod:`napari_fbrs.core.autosave`).
    autosave: bool = True
    #: Milliseconds after the last click edit before the session is autosaved (commits,
    #: undo and redo are saved at once).
    autosave_delay_ms: int = 1500

    @property
    def autosave_path(self) -> Path | None:
        """The sidecar file the session is autosaved to (``None`` without an image)."""
        return None if self._saver is None else self._saver.path

    def save_autosave(self) -> bool:
        """Autosave the session now (it also happens by itself after every change).

        Returns
        -------
        bool
            Whether the sidecar was written. A failure (disk full, no permission) is
            shown once as a warning and never interrupts segmentation.
        """
        self._autosave_timer.stop()
        session, saver = self._session, self._saver
        if session is None or saver is None or not self.autosave:
            return False
        try:
            if self._unclaimed:
                self._keep_old_sidecar(saver)
            layer = self._image_layer
            path = layer_source_path(layer) if layer is not None else None
            settings = {f.name: getattr(self._settings, f.name) for f in fields(self._settings)}
            if self._image_info is None or self._image_info[0] is not session:
                info = ImageInfo(
                    name=layer.name if layer is not None else "",
                    path=None if path is None else str(path),
                    shape=tuple(int(n) for n in session.image.shape),
                    dtype=str(getattr(session.image, "dtype", "")),
                    rgb=session.rgb,
                    fingerprint=self._fingerprint(session),
                )
                self._image_info = (session, info)
            state = SessionState.from_session(
                session, settings=settings, previous=saver.last_state, image=self._image_info[1]
            )
            saver.write(state)
        except Exception as exc:  # autosave must never break segmentation
            if not self._autosave_warned:
                self._autosave_warned = True
                notify.warning(
                    f"f-BRS could not autosave to {saver.path}: {exc}. Segmentation goes "
                    "on; save your labels layer yourself (File > Save Selected Layers)."
                )
            return False
        return True

    def restore_autosave(self) -> bool:
        """Restore the objects and clicks of the autosave found for the current image
        (what "Restore previous session" does).

        The objects layer's data is replaced by the autosaved labels and each slice's
        clicks by the autosaved ones; previews are then recomputed. Both are undo steps:
        undo brings back what the layer held, e.g. objects committed before restoring.

        Returns
        -------
        bool
            Whether anything was restored (``False`` without an autosave, or when it does
            not fit the image, with a warning saying why; nothing is changed then).
        """
        session, state = self._require_session(), self._restorable
        if session is None or state is None:
            self._set_status("There is no autosaved session to restore.")
            return False
        self._finish_pending = False
        try:
            state.restore(session, pixels=False)
        except (AutosaveError, TypeError, ValueError) as exc:
            notify.warning(f"f-BRS: {exc}")
            return False
        self._restorable = None
        self._show_restore_offer(False)
        if self._saver is not None:
            self._saver.last_state = state  # the objects' provenance carries over
        self._unclaimed = False
        keys = tuple(state.clicks) or (self._key,)
        self._after_change(Change(keys, True, "restore"))
        self._render_all()
        self._set_status(
            f"Restored {len(state.objects)} object(s) and "
            f"{sum(len(c) for c in state.clicks.values())} click(s) from {state.saved_at}."
        )
        return True

    def dismiss_autosave(self) -> bool:
        """Decline the restore on offer ("Dismiss"): the earlier session is kept aside as
        ``<name>.previous.fbrs-autosave.json`` (not deleted) and not offered again when
        the image is opened next.

        Returns
        -------
        bool
            Whether an offer was dismissed (``False`` without one, or when keeping it
            aside failed, with a warning; the offer stays then).
        """
        saver = self._saver
        if self._restorable is None or saver is None:
            return False
        if self._unclaimed:  # the sidecar is still the earlier session's, not this one's
            try:
                self._keep_old_sidecar(saver)
                saver.discard()
            except Exception as exc:  # the earlier work must survive a failed dismissal
                notify.warning(f"f-BRS could not set the autosaved session aside: {exc}")
                return False
        self._restorable = None
        self._show_restore_offer(False)
        self._set_status(
            "The earlier session was not restored; it is kept aside as a "
            "*.previous.fbrs-autosave.json file beside this image's autosave."
        )
        return True

    def _show_restore_offer(self, visible: bool) -> None:
        self.restore_button.setVisible(visible)
        self.dismiss_button.setVisible(visible)

    def _open_autosave(self, layer: Image) -> None:
        """Find the sidecar of ``layer``; offer to restore one left by an earlier session."""
        self._saver, self._restorable, self._unclaimed = None, None, False
        self._show_restore_offer(False)
        if not self.autosave or self._session is None:
            return
        try:
            path = layer_source_path(layer)
            saver = Autosave.for_image(path if path is not None else str(layer.name))
        except Exception as exc:  # never stop segmenting over the autosave
            self._autosave_failed(exc)
            return
        self._saver = saver
        if not saver.exists():
            return
        self._unclaimed = True  # kept aside before this session's first write
        try:
            state = saver.load()
            state.check_matches(self._session, pixels=self._fingerprint(self._session) is not None)
        except AutosaveError as exc:
            notify.warning(f"f-BRS: {exc}. It is kept beside this session's autosave.")
            return
        except Exception as exc:
            self._autosave_failed(exc)
            return
        saver.last_state = None  # nothing restored yet: provenance starts afresh
        n_objects = len(state.objects)
        n_clicks = sum(len(c) for c in state.clicks.values())
        if not n_objects and not n_clicks and (state.labels is None or not state.labels.any()):
            return
        self._restorable = state
        self.restore_button.setText(f"Restore previous session ({_count(n_objects, 'object')})")
        self._show_restore_offer(True)
        notify.info(
            f"f-BRS found an autosaved session of {layer.name!r} from {state.saved_at} "
            f"({_count(n_objects, 'object')}, {_count(n_clicks, 'click')}): click 'Restore "
            "previous session' "
            "in the f-BRS panel to bring it back."
        )

    @staticmethod
    def _fingerprint(session: SegmentationSession) -> str | None:
        """:func:`image_fingerprint` of the first slice of an in-memory image; ``None`` for
        a lazy one (dask, zarr), whose slices are read only when segmented."""
        if not isinstance(session.image, np.ndarray):
            return None
        return image_fingerprint(session.image_slice(tuple(0 for _ in session.stack_shape)))

    def _autosave_soon(self, immediate: bool = False) -> None:
        """Autosave now (commits, undo, redo) or after :attr:`autosave_delay_ms` (clicks)."""
        if self._saver is None or self._session is None or not self.autosave:
            return
        if immediate:
            self.save_autosave()
        else:
            self._autosave_timer.start(max(0, int(self.autosave_delay_ms)))

    def _flush_autosave(self) -> None:
        """Write a pending (debounced) autosave at once."""
        if self._autosave_timer.isActive():
            self.save_autosave()

    def _keep_old_sidecar(self, saver: Autosave) -> None:
        """Move a sidecar left by an earlier session (not restored) aside, so that this
        session's autosave never overwrites it: ``<name>.previous.fbrs-autosave.json``."""
        base = saver.path.name[: -len(SUFFIX)] if saver.path.name.endswith(SUFFIX) else ""
        backup = saver.path.with_name(f"{base or saver.path.stem}.previous{SUFFIX}")
        state = self._restorable
        if state is None:
            with contextlib.suppress(AutosaveError):
                state = Autosave.read(saver.path)
        if state is not None:
            Autosave(backup).write(state)
        elif saver.exists():  # unreadable: keep the file as it is, under another name
            os.replace(saver.path, backup.with_suffix(".damaged"))
        self._unclaimed = False

    def _autosave_failed(self, exc: BaseException) -> None:
        if not self._autosave_warned:
            self._autosave_warned = True
            notify.warning(f"f-BRS autosave is off for this image: {exc}")


def _count(n: int, noun: str) -> str:
    """``"1 object"``, ``"2 objects"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
