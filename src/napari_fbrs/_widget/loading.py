"""Loading objects from a clicks file in the dock widget ("Load objects..."): each object
is segmented again from its clicks (and propagated again with its settings) on a worker,
in a blank copy of the session, then written into the objects layer as commits, each an
undo step, with ids that do not collide with the layer's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog

from napari_fbrs._widget import notify
from napari_fbrs.core.session import Change

__all__ = ["LoadingMixin"]

_LOAD_TEXT = "Load objects..."


class LoadingMixin:
    """Making a clicks file's objects again in the objects layer.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def load_objects(self, path: str | os.PathLike | None = None) -> list[int] | None:
        """Make the objects of a clicks file again and add them to the objects layer.

        The file is what *Save objects...* writes beside the TIFF (``<name>_clicks.csv``),
        or any file ``napari-fbrs segment --clicks`` reads. Each object is segmented from
        its clicks on its slice with the current model and settings (a propagated one is
        propagated again with the axis, direction and stop rules in the file), on a
        worker with progress; the load button cancels it meanwhile. Then each object is
        written as one commit (one undo step each), only over background unless
        "overwrite existing labels" is ticked, with the file's id where the layer does
        not use it yet and a new id otherwise. Loaded objects are like finished ones:
        *Edit object* brings their clicks back, and *Save objects...* writes them again.

        Parameters
        ----------
        path : str or os.PathLike, optional
            The clicks file (CSV). ``None`` asks with a file dialog.

        Returns
        -------
        list of int or None
            When it ran synchronously, the ids written; ``None`` when it runs on a worker
            (the result arrives later), was cancelled, or could not start (a busy panel,
            unfinished objects, a file that cannot be read or does not fit the image:
            a warning says which; nothing is changed).
        """
        session = self._require_session()
        if session is None:
            return None
        if self._running:
            notify.info("f-BRS: wait for the running prediction, then load objects.")
            return None
        unfinished = sorted(session.all_clicks())
        if unfinished:
            where = ", ".join(str(k) for k in unfinished) if unfinished != [()] else "the image"
            notify.warning(
                f"f-BRS: finish or reset the unfinished object first (clicks on {where}), "
                "then load objects."
            )
            return None
        if path is None:
            path = self._ask_clicks_path()
            if path is None:
                return None
        from napari_fbrs.core.clicks_file import read_clicks_file
        from napari_fbrs.core.clicks_replay import check_objects, object_ids, replay_objects

        path = Path(path)
        try:
            objects = read_clicks_file(path)
            check_objects(objects, session.stack_shape, path.name)
        except ValueError as exc:
            notify.warning(f"f-BRS could not load objects from {path.name}: {exc}")
            self._set_status(f"Nothing loaded: {exc}")
            return None
        copy = session.blank_copy()
        ids = object_ids(objects)
        bridge = self._bridge
        made: list[Any] = []

        def progress(outcome: Any, total: int) -> None:
            made.append(outcome)
            bridge.progress.emit(len(made), total)

        def cancel() -> bool:
            return self._closed or self._cancel_requested or self._session is not session

        def work() -> list[Any]:
            return replay_objects(copy, objects, ids, progress=progress, cancel=cancel)

        self._running = True
        self._loading = True
        self._cancel_requested = False
        self._set_busy(True)
        self._set_status(f"Loading {len(objects)} object(s) from {path.name}...")
        self.load_button.setText("Cancel loading")
        self._update_buttons()
        return self._run_job(
            work,
            lambda outcomes: self._finish_load(session, path, copy, outcomes, len(objects)),
            self._on_load_error,
            self._on_load_done,
        )

    def _on_load_button(self) -> None:
        if self._loading:
            self._cancel_requested = True
            self._set_status("Cancelling the load...")
        else:
            self.load_objects()

    def _finish_load(
        self, session: Any, path: Path, copy: Any, outcomes: list[Any], total: int
    ) -> list[int] | None:
        """Write the objects made in ``copy`` into the session (main thread)."""
        if self._closed or self._session is not session:
            return None
        if self._cancel_requested or len(outcomes) < total:
            self._set_status("Loading cancelled: nothing was written.")
            return None
        self._adopt_objects_layer()
        made = copy.commits()
        new_ids = session.free_ids(m.label for m in made)
        overwrite = self.overwrite_check.isChecked()
        written: list[int] = []
        keys: list[Any] = []
        notes = [f"{o.name}: {note}" for o in outcomes for note in o.notes]
        for obj in made:
            label = new_ids[obj.label]
            try:
                session.commit_object(obj, copy.labels, label=label, overwrite=overwrite)
            except (ValueError, OverflowError) as exc:
                notes.append(f"id {label}: {exc}")
                continue
            if label not in written:
                written.append(label)
            keys.extend(obj.keys or (obj.key,))
        if written:
            self._after_change(Change(tuple(dict.fromkeys(keys)), True, "load"))
        renumbered = sum(1 for old, new in new_ids.items() if old != new)
        parts = [f"Loaded {len(written)} of {total} object(s) from {path.name}"]
        if renumbered:
            parts.append(f"{renumbered} with a new id (the file's was in use)")
        if notes:
            parts.append(f"not written: {'; '.join(notes)}")
            notify.warning(f"f-BRS: some objects of {path.name} were not written: {notes[0]}")
        self._set_status("; ".join(parts) + ".")
        return written

    def _on_load_error(self, exc: BaseException) -> None:
        message = notify.error_message(exc)
        self._set_status(f"Loading failed: {message}; nothing was written.")
        notify.error(f"f-BRS could not load the objects: {message}")

    def _on_load_done(self) -> None:
        self._loading = False
        self.load_button.setText(_LOAD_TEXT)
        self._on_done()

    def _ask_clicks_path(self) -> Path | None:
        start = self._default_objects_path()
        start = start.with_name(f"{start.stem}_clicks.csv")
        chosen, _ = QFileDialog.getOpenFileName(
            self, "Load objects", str(start), "Clicks (*.csv *.tsv *.txt);;All files (*)"
        )
        return Path(chosen) if chosen else None
