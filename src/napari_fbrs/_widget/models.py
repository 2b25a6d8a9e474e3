"""The model of the dock widget: choosing it (zoo name, checkpoint file or network
object), showing its status, loading it once on a worker thread (downloading it when
needed), warming it up in the background, and making the session's predictors."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QFileDialog

from napari_fbrs.core import zoo

if TYPE_CHECKING:  # pragma: no cover
    from napari_fbrs.core.predictor import Predictor

__all__ = ["ModelMixin", "model_key"]


def model_key(model: Any) -> str:
    """The network cache key of ``model``: its name or path, or the network object's id."""
    if isinstance(model, (str, Path)):
        return str(model)
    return f"object:{id(model)}"


class ModelMixin:
    """The model choice, its loading and the predictor factory.

    A mixin of :class:`~napari_fbrs._widget.widget.FbrsWidget`: it uses the state
    that ``FbrsWidget.__init__`` sets up and the methods of the other mixins.
    """

    def set_model(self, model: str | os.PathLike | Any) -> None:
        """Use another model from the next object on.

        Parameters
        ----------
        model : str, path or InteractiveNet
            A model-zoo name, a checkpoint file, or a network object.
        """
        if isinstance(model, str) and model in zoo.CHECKPOINTS:
            index = self.model_combo.findData(model)
        else:
            if isinstance(model, (str, os.PathLike)):
                model = Path(model)
                text = f"file: {model.name}"
            else:
                text = f"network: {type(model).__name__}"
            index = -1
            for i in range(self.model_combo.count()):
                data = self.model_combo.itemData(i)
                if data is model or (isinstance(model, Path) and data == model):
                    index = i
            if index < 0:
                self.model_combo.addItem(text, model)
                index = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(index)

    def _make_predictor(self) -> Predictor:
        """Predictor factory of the session (runs on the worker thread)."""
        s = self._settings
        net = self._load_net(s.model, s.device)
        from napari_fbrs.core.predictor import Predictor
        from napari_fbrs.core.transforms import ZoomIn

        zoom = (
            ZoomIn(
                target_size=s.zoom_target_size,
                skip_clicks=s.zoom_skip_clicks,
                expansion_ratio=s.zoom_expansion_ratio,
                min_crop_size=s.zoom_min_crop,
                first_click_crop=s.zoom_first_click_crop or None,
                beyond_border=s.zoom_beyond_border,
            )
            if s.zoom_in
            else None
        )
        return Predictor(
            net,
            mode=s.mode,
            device=s.device,
            with_flip=s.with_flip,
            zoom_in=zoom,
            prob_thresh=s.prob_thresh,
            max_size=s.max_size or None,
            lbfgs_maxfun=s.lbfgs_maxfun,
            net_clicks_limit=s.net_clicks or None,
            min_size=s.min_size or None,
            trim_overshoot=s.trim_overshoot,
        )

    def _load_net(self, model: Any, device: str) -> Any:
        """The network for ``model`` on ``device``, loaded once (any thread)."""
        if not isinstance(model, (str, Path)):
            return model  # a network object
        cache_key = (model_key(model), device)
        with self._net_lock:
            net = self._nets.get(cache_key)
            if net is not None:
                return net
            from napari_fbrs.core.models.registry import load_model

            path: Any = model
            if isinstance(model, str) and model in zoo.CHECKPOINTS:
                info = zoo.CHECKPOINTS[model]

                def progress(done: int, total: int) -> None:
                    pct = f" {100 * done / total:.0f}%" if total else ""
                    self._bridge.model_message.emit(f"Downloading {model}...{pct}", False)

                path = zoo.checkpoint_path(model, download=True, progress=progress)
                if not info.bundled:
                    self._bridge.model_message.emit(f"{model}: cached at {path}", False)
            net = load_model(path, device=device)
            # part of loading, not of a later click: an import holds the GIL throughout
            # (scipy.optimize, first needed by the first optimising click, froze the GUI for
            # 0.2 s then), and the prediction copy is made once per network
            import scipy.optimize  # noqa: F401

            from napari_fbrs.core.models.inference import inference_network

            inference_network(net)
            self._nets.clear()  # keep one network in memory
            # loading left many new long-lived objects; Python's next full collection
            # (0.2 s over napari's objects, holding the GIL) comes now rather than during
            # a click a few seconds later
            gc.collect()
            self._nets[cache_key] = net
            return net

    def _on_model_choice(self, *_: Any) -> None:
        self._settings = self._read_settings()
        self._update_model_status()
        if not self.synchronous:
            self._warm_up()

    def _open_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open an f-BRS checkpoint",
            str(Path.home()),
            "Checkpoints (*.pth *.pt);;All files (*)",
        )
        if path:
            self.set_model(path)

    def _show_model_message(self, text: str, is_error: bool) -> None:
        self.model_status.setText(text)
        self.model_status.setStyleSheet("color: #e04040;" if is_error else "")

    def _model_problem(self) -> str | None:
        """Why the selected model cannot be used right now (``None``: it can, maybe after
        a download)."""
        model = self._settings.model
        if isinstance(model, Path):
            return None if model.is_file() else f"The checkpoint file {model} does not exist."
        if isinstance(model, str) and model in zoo.CHECKPOINTS:
            info = zoo.CHECKPOINTS[model]
            if info.bundled:
                try:
                    zoo.checkpoint_path(model, download=False)
                except FileNotFoundError as exc:
                    return (
                        f"The bundled model {model!r} is not installed: {exc}. Choose "
                        "another model, or open a checkpoint file."
                    )
        return None

    def _update_model_status(self, *_: Any) -> None:
        model = self._settings.model
        problem = self._model_problem()
        if problem is not None:
            self._show_model_message(problem, True)
            return
        if isinstance(model, str) and model in zoo.CHECKPOINTS:
            info = zoo.CHECKPOINTS[model]
            if info.bundled:
                text = f"{model}: {info.description}"
            else:
                try:
                    path = zoo.checkpoint_path(model, download=False)
                    text = f"{model}: cached at {path}"
                except FileNotFoundError:
                    text = (
                        f"{model}: downloaded on first use (~{info.size_mb:.0f} MB) into "
                        f"{zoo.cache_dir()} (set NAPARI_FBRS_CACHE to change it)."
                    )
        elif isinstance(model, Path):
            text = f"Checkpoint file {model}"
        else:
            text = f"In-memory network {type(model).__name__}"
        self._show_model_message(text, False)

    def _warm_up(self) -> None:
        """Import torch and load the model in the background, so the first click is fast."""
        if self.synchronous or self._closed or self._model_problem() is not None:
            return
        model = self._settings.model
        if isinstance(model, str) and model in zoo.CHECKPOINTS:
            if not zoo.CHECKPOINTS[model].bundled:
                try:
                    zoo.checkpoint_path(model, download=False)
                except FileNotFoundError:
                    return  # no download before the user clicks
        from napari.qt.threading import thread_worker

        def load() -> None:
            self._load_net(model, self._settings.device)
            import napari_fbrs.core.predictor  # noqa: F401

        worker = thread_worker(load, start_thread=False, ignore_errors=True)()
        worker.errored.connect(
            lambda exc: self._show_model_message(f"The model could not be loaded: {exc}", True)
        )
        worker.start()
