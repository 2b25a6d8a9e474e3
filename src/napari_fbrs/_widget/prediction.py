"""Running predictions: one job at a time on a napari thread worker (or synchronously),
results that a newer click made stale dropped, and errors rolled back and reported."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

from napari_fbrs._widget import notify
from napari_fbrs.core.session import PredictionRequest, PredictionResult

__all__ = ["Bridge", "PredictionMixin"]


class Bridge(QObject):
    """Carries messages from worker threads to the GUI thread (queued signals)."""

    model_message = Signal(str, bool)  # text, is_error
    status_message = Signal(str)
    progress = Signal(int, int)  # done, total (propagation)


class PredictionMixin:
    """Scheduling predictions of the current slice and applying their results.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def _run_job(
        self,
        work: Callable[[], Any],
        on_result: Callable[[Any], Any],
        on_error: Callable[[BaseException], None],
        on_done: Callable[[], None],
    ) -> Any:
        """Run ``work`` on a napari thread worker, then ``on_result(value)`` or
        ``on_error(exc)``, then ``on_done()``, on the GUI thread; in :attr:`synchronous`
        mode all of it now. Returns what ``on_result`` returned when synchronous, else
        ``None``."""
        if self.synchronous:
            try:
                value = work()
            except Exception as exc:
                on_error(exc)
                result = None
            else:
                result = on_result(value)
            on_done()
            return result
        from napari.qt.threading import thread_worker

        worker = thread_worker(work, start_thread=False, ignore_errors=True)()
        worker.returned.connect(on_result)
        worker.errored.connect(on_error)
        worker.finished.connect(on_done)
        self._worker = worker
        worker.start()
        return None

    def _schedule(self) -> None:
        """Predict the current slice if its preview is out of date (one job at a time)."""
        session = self._session
        if session is None or self._closed:
            return
        if self._running:
            self._rerun = True  # a stale running job stops through its cancel callback
            return
        request = session.request(self._key)
        if request is None:
            if self._finish_pending and session.is_up_to_date(self._key):
                self._commit_now()
            self._render([self._key])
            self._update_buttons()
            return
        self._running = True
        self._set_busy(True)
        self._run_job(
            lambda: session.compute(request),
            self._on_result,
            lambda exc: self._on_error(request, exc),
            self._on_done,
        )

    def _on_result(self, result: PredictionResult | None) -> None:
        session = self._session
        if session is None or result is None or self._closed:
            return
        if not session.apply(result):
            return
        self._render([result.key])
        self.applied_log.append(
            (result.key, len(result.request.clicks), time.perf_counter(), result.seconds)
        )
        n = len(result.request.clicks)
        stop = (
            " Only background clicks: a stop mark that propagation does not enter."
            if session.is_stop(result.key)
            else ""
        )
        self._set_status(
            f"{n} click{'s' if n != 1 else ''}: "
            f"{int(session.mask(result.key).sum())} pixels in the preview.{stop}"
        )
        if self._finish_pending and result.key == self._key and session.is_up_to_date(self._key):
            self._commit_now()
        self._update_buttons()

    def _on_error(self, request: PredictionRequest, exc: BaseException) -> None:
        self._finish_pending = False
        self._step_pending = 0
        session = self._session
        if session is not None and not self._closed:
            try:
                change = session.rollback(request)
            except Exception:  # pragma: no cover - never leave an error unreported
                change = None
            if change is not None:
                self._write_points()
                self._render(change.keys)
                self._update_buttons()
        message = notify.error_message(exc)
        self._set_status(f"Prediction failed: {message}")
        notify.error(f"f-BRS prediction failed: {message}")

    def _on_done(self) -> None:
        self._running = False
        self._propagating = False
        self._cancel_requested = False
        self._worker = None
        self._set_busy(False)
        self._rerun = False
        self._update_buttons()
        if not self._closed:
            self._schedule()
