"""Inference panel: pick models (several = ensemble), TTA, tiling, device and backend, run over the slide.

Thin: the run is one ``predict_slide`` call, started by the shared :class:`.RunControls` in a napari
worker so the viewer stays responsive; its ``Progress`` events reach the GUI thread coalesced, so every
widget and layer is touched there only. The probability map appears as a layer as soon as its store exists and fills in as rows finish.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..inference.config import BACKENDS, BLENDS, DEVICES
from ..reader import slide_of
from ..stores.naming import probability_path, progress_path, slide_stem
from .background import emit_from_daemon
from .model_list import ModelChecklist, describe_card, describe_metrics
from .peers import ListsModels
from .probability_maps import probability_layer_kwargs
from .run_controls import RunControls, WorkerRun
from .viewer_layers import current_slide_layer

__all__ = ["InferencePanel", "describe_card", "describe_metrics"]  # the last two live in .model_list

TTA_CHOICES = ("none", "flips", "d4")
BLEND_CHOICES = BLENDS  # the engine's, as the command line offers them
DEVICE_CHOICES = DEVICES  # auto, cpu, cuda, mps: the one device list (defaults.DEVICES)
PREDICTIONS_FOLDER = "predictions"


# --- what runs in the worker thread (no Qt here) ------------------------------------------------


def list_models_slowly_once() -> list:
    """``registry.list_models()``: the first call imports torch, smp and timm and checks the cards
    (a few seconds), later ones take milliseconds. For a background thread; its warnings (broken
    model folders) take the process's usual route (napari's notifications)."""
    from ..registry import list_models

    return list_models()


def predict_work(slide_path, out, config: dict):
    """``work(progress, cancel)`` for :meth:`.RunControls.start_worker`: ``predict_slide`` with
    ``InferenceConfig(**config)``, returning its PredictionResult. The engine module imports torch, which
    takes seconds the first time, so it is imported when the work runs, off the GUI thread."""

    def work(progress, cancel):
        from ..inference.engine import InferenceConfig, predict_slide

        return predict_slide(slide_path, out, InferenceConfig(**config), progress=progress, cancel=cancel)

    return work


# --- formatting ---------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def describe_progress(progress) -> str:
    """``12/40 tiles · 3.1 tiles/s · ETA 9 s`` of the engine's Progress (its details hold rate and ETA)."""
    details = progress.details or {}
    return (
        f"{progress.done}/{progress.total} tiles · {details.get('tiles_per_s', 0.0):.1f} tiles/s · "
        f"ETA {format_seconds(details.get('eta_s', float('inf')))}"
    )


def describe_scale(slide) -> str:
    """The slide's µm/px as the run will use it (working scales follow it), with a hint when assumed."""
    if slide is None:
        return ""
    scale = slide.scale
    hint = " — set µm/px in the Slide panel if it differs" if scale.assumed else ""
    return f"Slide at {scale.describe()}{hint}"


def default_output_folder(slide_path) -> Path:
    """``predictions`` beside the slide file."""
    return Path(slide_path).resolve().parent / PREDICTIONS_FOLDER


def placement(slide_layer, downscale: float) -> tuple[tuple, tuple]:
    """(scale, translate) putting a map at ``downscale`` over the slide layer, pixel centres aligned.

    Map pixel i covers slide pixels [i*f, (i+1)*f): its centre sits at i*f + (f-1)/2.
    """
    scale = tuple(float(s) * downscale for s in slide_layer.scale[:2])
    translate = tuple(
        float(t) + (downscale - 1) / 2 * float(s) for t, s in zip(slide_layer.translate[:2], slide_layer.scale[:2])
    )
    return scale, translate


# --- the widget ---------------------------------------------------------------------------------


class InferencePanel(QWidget, ListsModels, WorkerRun):
    """Dock widget: models, TTA, tiling, device, output folder; Run / Cancel with live progress."""

    models_listed = Signal(object)  # list_models() or its error, emitted from a daemon thread

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.last_progress = None
        self.result = None
        self.error: BaseException | None = None
        self.prob_layer = None
        self._refreshed_rows = -1
        self._run_info: dict = {}
        self._run_once_listed: list[str] | None = None

        self.models = ModelChecklist()
        self.refresh_button = QPushButton("Refresh")
        self.tta = QComboBox()
        self.tta.addItems(TTA_CHOICES)
        self.tta.setToolTip("Test-time augmentation: the mean of the flipped / rotated passes (2x-8x the time). Its map is "
                            "cut at the threshold each model's card picked for that average (tta_picks), else at its "
                            "one-pass threshold; measured on held-out images it does not beat one pass (models/README.md)")
        self.tile = QSpinBox()
        self.tile.setRange(0, 16384)
        self.tile.setSingleStep(32)
        self.tile.setSpecialValueText("from card")
        self.tile.setToolTip("Tile side in working-scale pixels (lowest value: each model's card)")
        self.overlap = QSpinBox()
        self.overlap.setRange(-1, 8192)  # -1 = from card; 0 is a real overlap
        self.overlap.setSingleStep(16)
        self.overlap.setValue(-1)
        self.overlap.setSpecialValueText("from card")
        self.overlap.setToolTip("Overlap between tiles (lowest value: each model's card)")
        self.blend = QComboBox()
        self.blend.addItems(BLEND_CHOICES)
        self.device = QComboBox()
        self.device.addItems(DEVICE_CHOICES)
        self.backend = QComboBox()
        self.backend.addItems(BACKENDS)
        self.backend.setToolTip("What runs the network: auto is ONNX Runtime on the CPU (with the shipped model a whole slide "
                                "in two thirds of torch's time) "
                                "when onnxruntime is installed, else torch; a GPU always runs torch. onnx-int8: the ONNX "
                                "graph quantised to 8 bits, faster on CPUs with VNNI, its map a little off the float one")
        self.batch = QSpinBox()
        self.batch.setRange(1, 512)
        self.batch.setValue(4)
        self.out_folder = QLineEdit()
        self.out_folder.setPlaceholderText(f"{PREDICTIONS_FOLDER}/ beside the slide")
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.controls = RunControls(self.viewer, "Run")
        self.run_button, self.cancel_button = self.controls.run_button, self.controls.cancel_button
        self.progress, self.status = self.controls.progress, self.controls.status
        self.scale_label = QLabel("")  # the slide's µm/px the run follows (given, the file's or assumed)
        self.scale_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        header = QHBoxLayout()
        header.addWidget(QLabel("Models (check several for an ensemble)"))
        header.addStretch(1)
        header.addWidget(self.refresh_button)
        layout.addLayout(header)
        layout.addWidget(self.models)
        layout.addWidget(self.scale_label)
        form = QFormLayout()
        form.addRow("TTA", self.tta)
        form.addRow("Tile", self.tile)
        form.addRow("Overlap", self.overlap)
        form.addRow("Blend", self.blend)
        form.addRow("Device", self.device)
        form.addRow("Backend", self.backend)
        form.addRow("Batch size", self.batch)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_folder, 1)
        out_row.addWidget(self.browse_button)
        form.addRow("Output folder", out_row)
        layout.addLayout(form)
        layout.addWidget(self.controls)
        layout.addStretch(1)

        self.refresh_button.clicked.connect(self.refresh_models)
        self.browse_button.clicked.connect(self._choose_folder)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.models_listed.connect(self._on_models_listed)
        self.viewer.layers.selection.events.active.connect(self._update_placeholder)
        self.viewer.layers.events.inserted.connect(self._update_placeholder)
        self._update_placeholder()
        self._load_models_in_background()

    # --- models ---------------------------------------------------------------------------------

    def _load_models_in_background(self):
        """List the models in a daemon thread the first time (torch import), handing them to the GUI thread."""
        self.models.show_placeholder("loading models…")
        emit_from_daemon(list_models_slowly_once, self.models_listed, "napari-hubmap-list-models")

    def _on_models_listed(self, outcome):
        if isinstance(outcome, Exception):
            self._show_error(outcome)
        else:
            self._fill_models(outcome)
            self._start_requested_run()

    def run_when_listed(self, names) -> None:
        """Tick ``names`` and run as soon as the model list is loaded (``napari-hubmap view --predict``)."""
        self._run_once_listed = [str(n) for n in names]
        if self.model_items():
            self._start_requested_run()

    def _start_requested_run(self) -> None:
        names, self._run_once_listed = self._run_once_listed, None
        if names is None:
            return
        self.set_checked(names)
        if not self.checked_models():
            return self._refuse(f"Model {', '.join(names)} not found (see NAPARI_HUBMAP_MODELS)")
        self.run()

    def refresh_models(self):
        """Re-read the model search path (keeps the ticks of models still there)."""
        from ..registry import list_models

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            models = list_models()
        for warning in caught:
            self._show_warning(warning.message)
        self._fill_models(models)

    def _fill_models(self, models):
        self.models.fill(models)

    def model_items(self) -> list[QListWidgetItem]:
        return self.models.model_items()

    def checked_models(self) -> list[str]:
        """Folders of the ticked models, in list order."""
        return self.models.checked()

    def set_checked(self, names_or_folders) -> None:
        """Tick exactly the models whose card name, folder name or folder path is given."""
        self.models.set_checked(names_or_folders)

    # --- slide and output -----------------------------------------------------------------------

    def current_layer(self):
        return current_slide_layer(self.viewer)

    def _update_placeholder(self, *_):
        slide = slide_of(self.current_layer())
        self.scale_label.setText(describe_scale(slide))
        if slide is not None:
            self.out_folder.setPlaceholderText(str(default_output_folder(slide.path)))

    def showEvent(self, event):  # noqa: N802 (Qt) - shown again, e.g. after the Slide tab changed the µm/px
        self._update_placeholder()
        super().showEvent(event)

    def output_folder(self, slide) -> Path:
        text = self.out_folder.text().strip()
        return Path(text).expanduser() if text else default_output_folder(slide.path)

    def _choose_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.out_folder.text() or "")
        if folder:
            self.out_folder.setText(folder)

    def config(self) -> dict:
        """The InferenceConfig fields the controls describe."""
        return dict(
            models=self.checked_models(),
            tta=self.tta.currentText(),
            tile=self.tile.value() or None,
            overlap=None if self.overlap.value() < 0 else self.overlap.value(),
            blend=self.blend.currentText(),
            device=self.device.currentText(),
            backend=self.backend.currentText(),
            batch=self.batch.value(),
        )

    # --- run ------------------------------------------------------------------------------------

    def run(self):
        """Start inference on the selected slide; returns the napari worker (None if nothing to run)."""
        if self.running:
            return self.worker
        layer = self.current_layer()
        slide = slide_of(layer)
        if slide is None:
            return self._refuse("Select a slide layer opened with napari-hubmap first")
        if not self.checked_models():
            return self._refuse("Check at least one model")
        out = probability_path(slide.path, self.output_folder(slide))
        self.last_progress = self.result = self.error = None
        self.prob_layer = None
        self._refreshed_rows = -1
        self._run_info = {"slide_layer": layer, "out": out, "name": f"{slide_stem(slide.path)} probability",
                          "started": time.perf_counter()}
        self._update_placeholder()
        return self.controls.start_worker(
            predict_work(slide.path, out, {**self.config(), "mpp": slide.mpp_given}),
            f"Loading models and planning… → {out}\n{describe_scale(slide)}",
            on_progress=self._on_progress, on_returned=self._on_returned, on_cancelled=self._on_cancelled,
            on_failed=self._on_failed,
        )

    def cancel(self):
        """Stop after the current batch; the partial map stays readable."""
        self.controls.cancel("Cancelling after the current batch…")

    def _refuse(self, message: str):
        self.controls.refuse(message)
        return None

    def _on_progress(self, progress):
        self.last_progress = progress
        if not self.cancel_event.is_set():
            self.status.setText(describe_progress(progress))
        layer = self._show_probability()
        rows_done = (progress.details or {}).get("rows_done")
        if layer is not None and rows_done != self._refreshed_rows:
            # the store changes only when rows become final: re-read (and redraw) only then
            self._refreshed_rows = rows_done
            layer.refresh()

    def _show_probability(self):
        """The probability layer of this run: added once its store exists, else None."""
        if self.prob_layer is not None:
            return self.prob_layer
        out = self._run_info["out"]
        if not progress_path(out).exists():
            return None
        from ..stores.probability import open_probability

        levels, meta = open_probability(out)
        slide_layer = self._run_info["slide_layer"]
        scale, translate = placement(slide_layer, float(meta["downscale"]))
        name = self._run_info["name"]
        if name in self.viewer.layers:  # a re-run replaces the old map
            self.viewer.layers.remove(name)
        data = levels if len(levels) > 1 else levels[0]
        self.prob_layer = self.viewer.add_image(
            data, name=name, multiscale=len(levels) > 1,
            **probability_layer_kwargs(out, float(meta["downscale"]), scale, translate),
        )
        return self.prob_layer

    def _on_returned(self, result):
        self.result = result
        layer = self._show_probability()
        if layer is not None:
            layer.refresh()
        self.controls.set_bar(result.tiles, result.tiles)
        resumed = f", resumed after row {result.resumed_rows}" if result.resumed_rows else ""
        message = (
            f"Done: {result.tiles} tiles ({result.skipped} skipped as background, {result.computed} computed) "
            f"in {result.seconds:.1f} s{resumed} → {result.path}\n"
            f"map at ×{result.downscale:g}, slide at {result.scale.describe()}"
        )
        self.controls.announce(message)

    def _on_cancelled(self, error):
        """The engine stopped after a batch (Cancelled): the partial map stays, shown, and the next run resumes it."""
        self.error = error
        layer = self._show_probability()
        if layer is not None:
            layer.refresh()
        done, total = (self.last_progress.done, self.last_progress.total) if self.last_progress else (0, 0)
        self.controls.set_bar(done, total)
        seconds = time.perf_counter() - self._run_info["started"]
        out = self._run_info["out"]
        message = (f"Cancelled after {done}/{total} tiles" if self.last_progress else "Cancelled before the first batch")
        message += f" ({seconds:.1f} s)" + (f"; partial map kept in {out}" if progress_path(out).exists() else "")
        self.controls.announce(message)

    def _on_failed(self, error):
        self.error = error
        self._show_error(error)

    def _show_error(self, error):
        self.controls.fail(f"Inference failed: {error}")

    def _show_warning(self, message):
        from napari.utils.notifications import show_warning

        show_warning(str(message))
