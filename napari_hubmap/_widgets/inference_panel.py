"""Inference panel: pick models (several = ensemble), TTA, tiling and device, run over the slide.

Thin: the run is one ``predict_slide`` call. It runs in a napari worker thread so the viewer stays
responsive; the worker's generator starts ``predict_slide`` in an inner thread and yields its
``Progress`` events (coalesced) from a queue, so every widget and layer is touched in the GUI thread
only. The probability map appears as a layer as soon as its store exists and fills in as rows finish.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
import warnings
from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..defaults import DEFAULT_MODEL
from ..errors import HubmapInputError
from ..progress import Cancelled
from ..stores.naming import probability_path, progress_path, slide_stem
from .background import YIELD_INTERVAL_S, emit_from_daemon, yield_progress
from .slide_panel import slide_of

TTA_CHOICES = ("none", "flips", "d4")
BLEND_CHOICES = ("gaussian", "centre")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PREDICTIONS_FOLDER = "predictions"
NAME_ROLE = Qt.ItemDataRole.UserRole + 1  # the card's name (UserRole: the model folder)


# --- what runs in the worker thread (no Qt here) ------------------------------------------------


def list_models_slowly_once() -> list:
    """``registry.list_models()``: the first call imports torch, smp and timm and checks the cards
    (a few seconds), later ones take milliseconds. For a background thread; its warnings (broken
    model folders) take the process's usual route (napari's notifications)."""
    from ..registry import list_models

    return list_models()


def predict_in_background(slide_path, out, config: dict, cancel: threading.Event, interval_s: float = YIELD_INTERVAL_S):
    """Generator for a napari worker: runs ``predict_slide`` in an inner thread, yields its Progress.

    ``config`` holds InferenceConfig's fields (the engine module imports torch, which takes seconds
    the first time, so it is imported here, off the GUI thread). Events are coalesced (see
    :func:`.background.yield_progress`). Returns the PredictionResult; re-raises the engine's error.
    """
    from ..inference.engine import InferenceConfig, predict_slide

    config = InferenceConfig(**config)
    return (yield from yield_progress(
        lambda progress: predict_slide(slide_path, out, config, progress=progress, cancel=cancel), cancel, interval_s
    ))


# --- formatting ---------------------------------------------------------------------------------


def describe_metrics(metrics: dict) -> str:
    """``val Dice 0.81, F1 0.77`` for a card the trainer wrote; flat numeric metrics as they are."""
    validation = metrics.get("validation")
    if isinstance(validation, dict):
        parts = [f"{label} {validation[key]:.3g}" for key, label in (("dice", "val Dice"), ("object_f1", "F1"))
                 if isinstance(validation.get(key), (int, float))]
        return ", ".join(parts)
    return ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if isinstance(v, (int, float)))


def describe_card(card, parent=None) -> str:
    """One line per model: name, network, working scale, tile, metrics (and its parent's beside them)."""
    text = f"{card.name} — {card.architecture}/{card.encoder}, ×{card.downscale:g}"
    if card.target_mpp is not None:
        text += f" ({card.target_mpp:g} µm/px)"
    text += f", tile {card.tile}/{card.overlap}"
    metrics = describe_metrics(card.metrics)
    if metrics:
        text += " · " + metrics
    if card.parent:
        before = describe_metrics(parent.metrics) if parent is not None else ""
        text += f" · from {card.parent}" + (f" ({before})" if before else "")
    return text


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


class InferencePanel(QWidget):
    """Dock widget: models, TTA, tiling, device, output folder; Run / Cancel with live progress."""

    models_listed = Signal(object)  # list_models() or its error, emitted from a daemon thread

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.cancel_event: threading.Event | None = None
        self.last_progress = None
        self.result = None
        self.error: BaseException | None = None
        self.prob_layer = None
        self._refreshed_rows = -1
        self._run_info: dict = {}
        self._run_once_listed: list[str] | None = None

        self.models = QListWidget()
        self.models.setMinimumHeight(80)
        self.refresh_button = QPushButton("Refresh")
        self.tta = QComboBox()
        self.tta.addItems(TTA_CHOICES)
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
        self.batch = QSpinBox()
        self.batch.setRange(1, 512)
        self.batch.setValue(4)
        self.out_folder = QLineEdit()
        self.out_folder.setPlaceholderText(f"{PREDICTIONS_FOLDER}/ beside the slide")
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
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
        form.addRow("Batch size", self.batch)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_folder, 1)
        out_row.addWidget(self.browse_button)
        form.addRow("Output folder", out_row)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
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
        self.models.addItem(QListWidgetItem("loading models…"))
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
        checked = set(self.checked_models())
        first = self.models.count() == 0 or self.models.item(0).data(Qt.ItemDataRole.UserRole) is None
        self.models.clear()
        by_name = {card.name: card for card, _ in models}
        for card, folder in models:
            item = QListWidgetItem(describe_card(card, by_name.get(card.parent)))
            item.setData(Qt.ItemDataRole.UserRole, str(folder))
            item.setData(NAME_ROLE, card.name)
            item.setToolTip(f"{folder}\n{card.notes}".strip())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            tick = str(folder) in checked or (first and (len(models) == 1 or card.name == DEFAULT_MODEL == folder.name))
            item.setCheckState(Qt.CheckState.Checked if tick else Qt.CheckState.Unchecked)
            self.models.addItem(item)
        if not models:
            item = QListWidgetItem("no models found (see NAPARI_HUBMAP_MODELS)")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.models.addItem(item)

    def model_items(self) -> list[QListWidgetItem]:
        items = (self.models.item(i) for i in range(self.models.count()))
        return [item for item in items if item.data(Qt.ItemDataRole.UserRole) is not None]

    def checked_models(self) -> list[str]:
        """Folders of the ticked models, in list order."""
        return [
            item.data(Qt.ItemDataRole.UserRole)
            for item in self.model_items()
            if item.checkState() == Qt.CheckState.Checked
        ]

    def set_checked(self, names_or_folders) -> None:
        """Tick exactly the models whose card name, folder name or folder path is given."""
        wanted = {str(n) for n in names_or_folders}
        for item in self.model_items():
            folder = item.data(Qt.ItemDataRole.UserRole)
            tick = bool({folder, Path(folder).name, item.data(NAME_ROLE)} & wanted)
            item.setCheckState(Qt.CheckState.Checked if tick else Qt.CheckState.Unchecked)

    # --- slide and output -----------------------------------------------------------------------

    def current_layer(self):
        active = self.viewer.layers.selection.active
        if slide_of(active) is not None:
            return active
        return next((layer for layer in reversed(self.viewer.layers) if slide_of(layer) is not None), None)

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
            batch=self.batch.value(),
        )

    # --- run ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.worker is not None

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
        from napari.qt.threading import create_worker

        out = probability_path(slide.path, self.output_folder(slide))
        self.cancel_event = threading.Event()
        self.last_progress = self.result = self.error = None
        self.prob_layer = None
        self._refreshed_rows = -1
        self._run_info = {"slide_layer": layer, "out": out, "name": f"{slide_stem(slide.path)} probability",
                          "started": time.perf_counter()}
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the plan is made
        self._update_placeholder()
        self.status.setText(f"Loading models and planning… → {out}\n{describe_scale(slide)}")
        self.worker = create_worker(
            predict_in_background,
            slide.path,
            out,
            {**self.config(), "mpp": slide.mpp_given},
            self.cancel_event,
            _start_thread=False,
            _connect={
                "yielded": self._on_progress,
                "returned": self._on_returned,
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )
        # quit() from napari's activity dock or at app exit: stop the engine too (runs in the worker thread)
        self.worker.aborted.connect(self.cancel_event.set, Qt.ConnectionType.DirectConnection)
        self.worker.start()
        return self.worker

    def cancel(self):
        """Stop after the current batch; the partial map stays readable."""
        if self.cancel_event is not None and self.running:
            self.cancel_event.set()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling after the current batch…")

    def _refuse(self, message: str):
        self.status.setText(message)
        self.viewer.status = message
        return None

    def _on_progress(self, progress):
        self.last_progress = progress
        self.progress.setRange(0, max(progress.total, 1))
        self.progress.setValue(progress.done)
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
            data,
            name=name,
            multiscale=len(levels) > 1,
            colormap="magma",
            blending="additive",
            opacity=0.6,
            contrast_limits=(0, 255),
            scale=scale,
            translate=translate,
            metadata={"napari_hubmap": {"probability": str(out), "downscale": float(meta["downscale"])}},
        )
        return self.prob_layer

    def _on_returned(self, result):
        self.result = result
        layer = self._show_probability()
        if layer is not None:
            layer.refresh()
        self.progress.setRange(0, max(result.tiles, 1))
        self.progress.setValue(result.tiles)
        resumed = f", resumed after row {result.resumed_rows}" if result.resumed_rows else ""
        message = (
            f"Done: {result.tiles} tiles ({result.skipped} skipped as background, {result.computed} computed) "
            f"in {result.seconds:.1f} s{resumed} → {result.path}\n"
            f"map at ×{result.downscale:g}, slide at {result.scale.describe()}"
        )
        self.status.setText(message)
        self.viewer.status = message

    def _on_cancelled(self):
        """The engine stopped after a batch (Cancelled): the partial map stays, shown, and the next run resumes it."""
        layer = self._show_probability()
        if layer is not None:
            layer.refresh()
        done, total = (self.last_progress.done, self.last_progress.total) if self.last_progress else (0, 0)
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        seconds = time.perf_counter() - self._run_info["started"]
        out = self._run_info["out"]
        message = (f"Cancelled after {done}/{total} tiles" if self.last_progress else "Cancelled before the first batch")
        message += f" ({seconds:.1f} s)" + (f"; partial map kept in {out}" if progress_path(out).exists() else "")
        self.status.setText(message)
        self.viewer.status = message

    def _on_error(self, error):
        self.error = error
        if isinstance(error, Cancelled):
            self._on_cancelled()
            return
        if not isinstance(error, HubmapInputError):  # a bug, not bad input: keep the traceback
            traceback.print_exception(type(error), error, error.__traceback__)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._show_error(error)

    def _show_error(self, error):
        message = f"Inference failed: {error}"
        self.status.setText(message)
        from napari.utils.notifications import show_error

        show_error(message)

    def _show_warning(self, message):
        from napari.utils.notifications import show_warning

        show_warning(str(message))

    def _on_finished(self):
        if self.result is None and self.error is None and self.cancel_event is not None:
            self.cancel_event.set()  # quit from outside (activity dock): make sure the engine stops
            self.status.setText("Stopped")
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
