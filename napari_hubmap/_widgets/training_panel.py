"""Training panel: train a new model (from a preset or by fine-tuning a registry model) on a data folder.

Thin: the run is ``napari-hubmap train ... --events`` in a child process (a :class:`QProcess`), so the
viewer stays responsive and a crash of the trainer cannot take napari down. Its stdout carries one
JSON event per line (start, step, epoch, done, cancelled, error); they drive a progress bar, a status
line and the loss and validation Dice curves (matplotlib). Other output lines go to a small log.
Cancel sends SIGTERM: the trainer stops at the next step and saves a checkpoint that the next Start
with the same output name resumes from; a trainer still alive after :data:`KILL_AFTER_S` is killed.
When a model is done, its validation metrics are shown beside its parent's and every docked
*Inference* panel re-reads the registry. Closing the viewer's window stops the trainer the same way
(the panel watches the window's Close event).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
import time
from collections import deque
from pathlib import Path

from qtpy.QtCore import QEvent, QProcess, QProcessEnvironment, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import HubmapInputError
from .background import emit_from_daemon

KILL_AFTER_S = 10.0
"""After Cancel (SIGTERM), a trainer still running this long is killed."""
STEP_REDRAW_S = 0.3
"""Step events redraw the loss curve at most this often; epoch events always redraw."""
STDERR_LINES = 20
"""Last stderr lines kept for the message of a crash."""
PRESET_KIND, MODEL_KIND = "preset", "model"
BASE_ROLE = Qt.ItemDataRole.UserRole  # (kind, name) of a base combo item
CANCELLED_MESSAGE = "cancelled (checkpoint saved, Start resumes)"


# --- no Qt here: the trainer's command line and its events -------------------------------------


def list_bases() -> tuple[list, list]:
    """``(presets, models)``: ``[(name, about)]`` of ``training.PRESETS`` (empty when the trainer is
    not installed) and ``registry.list_models()``. Imports torch the first time: for a thread."""
    from ..registry import list_models

    try:
        from ..training import PRESETS
    except ImportError:
        PRESETS = {}
    presets = [(name, getattr(preset, "about", "")) for name, preset in PRESETS.items()]
    return presets, list_models()


def train_command(data: list[str], kind: str, base: str, epochs: int, out, *, lr: float | None = None,
                  folds: int = 1, fold: int = 0, batch: int | None = None, samples_per_epoch: int | None = None,
                  tile: int | None = None, workers: int | None = None) -> list[str]:
    """``python -m napari_hubmap.cli train ... --events``; ``None`` options are the trainer's defaults."""
    command = [sys.executable, "-m", "napari_hubmap.cli", "train"]
    for folder in data:
        command += ["--data", str(folder)]
    command += ["--preset" if kind == PRESET_KIND else "--base", base, "--epochs", str(epochs), "--out", str(out)]
    if folds > 1:
        command += ["--folds", str(folds), "--fold", str(fold)]
    options = {"--lr": lr, "--batch": batch, "--samples-per-epoch": samples_per_epoch, "--tile": tile,
               "--workers": workers}
    for flag, value in options.items():
        if value is not None:
            command += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return command + ["--events"]


def parse_event(line: str) -> dict | None:
    """The event of one stdout line (a JSON object with an ``"event"`` string), else None."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


def split_lines(buffer: str, text: str, separators: str = r"\r?\n") -> tuple[list[str], str]:
    """``(complete lines, rest)`` of ``buffer + text``: a read may end in the middle of a line."""
    *lines, rest = re.split(separators, buffer + text)
    return lines, rest


METRIC_LABELS = {"dice": "Dice", "object_f1": "object F1", "iou": "IoU", "threshold": "threshold"}


def headline_metrics(metrics: dict) -> dict:
    """A card's top-level numbers plus the Dice, object F1 and threshold of its ``validation`` entry
    (the trainer's layout); bools and nested entries left out."""
    flat = {key: value for key, value in metrics.items() if _is_number(value)}
    validation = metrics.get("validation")
    if isinstance(validation, dict):
        flat.update({key: validation[key] for key in ("dice", "object_f1", "threshold") if _is_number(validation.get(key))})
    return flat


def format_metrics(metrics: dict) -> str:
    """``Dice 0.812 · object F1 0.7`` for a card's metrics."""
    flat = headline_metrics(metrics)
    return " · ".join(f"{METRIC_LABELS.get(key, key)} {value:.3g}" for key, value in flat.items()) or "no metrics"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_models(model_folder, parent: str | None) -> str:
    """The new model's metrics beside its parent's (both read from their cards)."""
    from ..registry import find_model, read_card

    card = read_card(model_folder)
    text = f"{card.name}: {format_metrics(card.metrics)}"
    parent = parent or card.parent
    if not parent:
        return text + " (no parent: trained from a preset)"
    try:
        parent_card = read_card(find_model(parent))
    except HubmapInputError:
        return text + f" (parent {parent}: not found)"
    return text + f" | parent {parent_card.name}: {format_metrics(parent_card.metrics)}"


def checkpoint_of(model_folder: Path) -> Path:
    """Where the trainer keeps a run's resume checkpoint: ``<model folder>.checkpoint`` beside it."""
    return model_folder.with_name(model_folder.name + ".checkpoint")


def free_model_name(folder: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... whichever the trainer can write: no such folder yet, or
    one with a resume checkpoint (a cancelled run, which the next Start resumes)."""
    name, n = stem, 1
    while (folder / name).exists() and not checkpoint_of(folder / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def progress_value(epoch: int, step: int, steps_per_epoch: int) -> int:
    """Steps done over all epochs (``epoch`` is 1-based)."""
    return (max(epoch, 1) - 1) * steps_per_epoch + step


# --- the curves ---------------------------------------------------------------------------------


class TrainingCurves:
    """One small figure: training loss (per step and per epoch) and validation Dice / object F1."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.4, 2.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setMinimumHeight(170)
        self.loss_axes, self.val_axes = figure.subplots(1, 2)
        self.step_line, = self.loss_axes.plot([], [], "-", linewidth=0.8, alpha=0.6, label="step")
        self.epoch_loss_line, = self.loss_axes.plot([], [], "o-", markersize=3, label="epoch")
        self.dice_line, = self.val_axes.plot([], [], "o-", markersize=3, label="Dice")
        self.f1_line, = self.val_axes.plot([], [], "s--", markersize=3, label="object F1")
        self.loss_axes.set_title("train loss", fontsize=8)
        self.val_axes.set_title("validation", fontsize=8)
        self.val_axes.set_ylim(0, 1.02)
        for axes in (self.loss_axes, self.val_axes):
            axes.set_xlabel("epoch", fontsize=8)
            axes.tick_params(labelsize=7)
        self.val_axes.legend(fontsize=6, loc="lower right")
        self.clear()

    def clear(self):
        self.steps: tuple[list, list] = ([], [])
        self.epochs: list[dict] = []
        self._last_draw = 0.0
        self._update_lines()

    def add_step(self, x: float, loss) -> None:
        """A step's loss at fractional epoch ``x``; redraws at most every :data:`STEP_REDRAW_S`."""
        if loss is None:
            return
        self.steps[0].append(x)
        self.steps[1].append(float(loss))
        if time.monotonic() - self._last_draw >= STEP_REDRAW_S:
            self._update_lines()

    def add_epoch(self, event: dict) -> None:
        self.epochs.append(event)
        self._update_lines()

    def _update_lines(self) -> None:
        self.step_line.set_data(*self.steps)
        self._set_line(self.epoch_loss_line, "train_loss")
        self._set_line(self.dice_line, "val_dice")
        self._set_line(self.f1_line, "val_object_f1")
        self.loss_axes.relim()
        self.loss_axes.autoscale_view()
        self.val_axes.relim()
        self.val_axes.autoscale_view(scaley=False)
        self._last_draw = time.monotonic()
        self.canvas.draw_idle()

    def _set_line(self, line, key: str) -> None:
        points = [(e["epoch"], e[key]) for e in self.epochs if isinstance(e.get(key), (int, float))]
        line.set_data([p[0] for p in points], [p[1] for p in points])


# --- the widget ---------------------------------------------------------------------------------


class TrainingPanel(QWidget):
    """Dock widget: base (preset or model), data folder, settings, output name; Start / Cancel, curves."""

    bases_listed = Signal(object)  # list_bases() or its error, emitted from a daemon thread

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.process: QProcess | None = None
        self.models_folder: Path | None = None
        self.events: list[dict] = []
        self.last_error: str | None = None
        self.result: dict | None = None
        self._stdout = self._stderr = ""
        self._stderr_tail: deque = deque(maxlen=STDERR_LINES)
        self._steps_per_epoch = 1
        self._cancel_requested = False
        self._run_out: Path | None = None
        self._watched_window = None

        self.base = QComboBox()
        self.base.addItem("loading presets and models…")
        self.data = QLineEdit()
        self.data.setPlaceholderText("project folder (project.json) or data folder (images/ + masks/ or annotations/)")
        self.data.setToolTip(f"Several folders: separate them with {os.pathsep!r}")
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.epochs = _spin(1, 10_000, 30)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(0, 1)
        self.lr.setSingleStep(1e-4)
        self.lr.setSpecialValueText("default")
        self.folds = _spin(1, 20, 1, tip="Cross-validation folds (1: one validation split)")
        self.fold = _spin(0, 0, 0, tip="Which fold validates (0-based)")
        self.batch = _spin(0, 1024, 0, special="default")
        self.samples = _spin(0, 1_000_000, 0, special="default", step=64, tip="Training tiles drawn per epoch")
        self.tile = _spin(0, 4096, 0, special="default", step=32, tip="Training tile side (a multiple of 32)")
        self.workers = _spin(0, 64, 1, tip="Data-loader worker processes (0: load tiles in the trainer itself)")
        self.name = QLineEdit()
        self.out_label = QLabel("")
        self.out_label.setWordWrap(True)
        self.start_button = QPushButton("Start")
        self.start_button.setEnabled(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.curves = TrainingCurves()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setMaximumHeight(90)
        self.log.setPlaceholderText("trainer output")
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

        self._lay_out()
        self.browse_button.clicked.connect(self._choose_folder)
        self.base.currentIndexChanged.connect(self._update_output)
        self.name.textChanged.connect(self._update_output)
        self.folds.valueChanged.connect(lambda k: self.fold.setMaximum(k - 1))
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.bases_listed.connect(self._on_bases_listed)
        self.data.setText(self._review_project() or "")
        self._list_bases_in_background()

    def _lay_out(self):
        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.addRow("Start from", self.base)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data, 1)
        data_row.addWidget(self.browse_button)
        form.addRow("Data", data_row)
        form.addRow("Epochs", self.epochs)
        form.addRow("Learning rate", self.lr)
        folds_row = QHBoxLayout()
        folds_row.addWidget(self.folds)
        folds_row.addWidget(QLabel("fold"))
        folds_row.addWidget(self.fold)
        form.addRow("Folds", folds_row)
        form.addRow("Batch size", self.batch)
        form.addRow("Tiles per epoch", self.samples)
        form.addRow("Tile", self.tile)
        form.addRow("Loader workers", self.workers)
        form.addRow("New model name", self.name)
        layout.addLayout(form)
        layout.addWidget(self.out_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.curves.canvas)
        layout.addWidget(self.log)
        layout.addStretch(1)

    # --- bases, data and output -------------------------------------------------------------------

    def _list_bases_in_background(self):
        """Presets and registry models from a daemon thread (the first import of torch takes seconds)."""

        def work():
            from ..registry.store import user_models_folder

            return (*list_bases(), user_models_folder())

        emit_from_daemon(work, self.bases_listed, "napari-hubmap-list-bases")

    def _on_bases_listed(self, outcome):
        if isinstance(outcome, Exception):
            self._show_error(f"Cannot list presets and models: {outcome}")
            return
        presets, models, self.models_folder = outcome
        self._fill_bases(presets, models)

    def _fill_bases(self, presets, models):
        chosen = self.base.currentData(BASE_ROLE)
        self.base.blockSignals(True)
        self.base.clear()
        for name, about in presets:
            self.base.addItem(f"preset: {name}", (PRESET_KIND, name))
            self.base.setItemData(self.base.count() - 1, about, Qt.ItemDataRole.ToolTipRole)
        for card, folder in models:
            self.base.addItem(f"fine-tune: {folder.name}", (MODEL_KIND, folder.name))
            self.base.setItemData(self.base.count() - 1, f"{folder}\n{format_metrics(card.metrics)}",
                                  Qt.ItemDataRole.ToolTipRole)
        self.base.setCurrentIndex(max(self.base_index(*chosen) if chosen else 0, 0))
        self.base.blockSignals(False)
        if not presets:
            self.status.setText("The trainer (napari_hubmap.training) is not installed: fine-tuning only")
        self.start_button.setEnabled(self.base.count() > 0 and not self.running)
        self._update_output()

    def refresh_bases(self):
        """Re-list presets and models (in a thread), e.g. after a new model was trained."""
        self._list_bases_in_background()

    def base_index(self, kind: str, name: str) -> int:
        """The combo row of a preset or model, else -1 (``findData`` compares Python objects by identity)."""
        rows = (i for i in range(self.base.count()) if self.base.itemData(i, BASE_ROLE) == (kind, name))
        return next(rows, -1)

    def set_base(self, kind: str, name: str) -> bool:
        index = self.base_index(kind, name)
        if index >= 0:
            self.base.setCurrentIndex(index)
        return index >= 0

    def _review_project(self) -> str | None:
        """The root of the project open in a docked Review panel, if any."""
        from .review_panel import ReviewPanel

        for widget in self._docked(ReviewPanel):
            if widget.project is not None:
                return str(widget.project.root)
        return None

    def _docked(self, cls) -> list:
        """The docked widgets of this viewer that are ``cls`` instances."""
        try:
            widgets = list(self.viewer.window.dock_widgets.values())
        except (AttributeError, RuntimeError):  # no window (headless viewer) or already closed
            return []
        return [widget for widget in widgets if isinstance(widget, cls)]

    def data_folders(self) -> list[str]:
        text = self.data.text().strip() or self._review_project() or ""
        return [str(Path(part.strip()).expanduser()) for part in text.split(os.pathsep) if part.strip()]

    def model_name(self) -> str:
        return self.name.text().strip() or self.name.placeholderText()

    def output_folder(self) -> Path | None:
        name = self.model_name()
        return self.models_folder / name if self.models_folder is not None and name else None

    def _update_output(self, *_):
        base = self.base.currentData(BASE_ROLE)
        if base is not None and self.models_folder is not None:
            self.name.setPlaceholderText(free_model_name(self.models_folder, f"{base[1]}-trained"))
        out = self.output_folder()
        self.out_label.setText(f"→ {out}" if out else "")

    def _choose_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Project or data folder", self.data.text() or "")
        if folder:
            self.data.setText(folder)

    def command(self) -> list[str] | None:
        """The trainer's command line for the current settings, or None (and a message) if incomplete."""
        base, data, out = self.base.currentData(BASE_ROLE), self.data_folders(), self.output_folder()
        if base is None:
            return self._refuse("Choose a preset or a model to start from")
        if not data:
            return self._refuse("Choose a project or data folder")
        if out is None:
            return self._refuse("Give the new model a name")
        return train_command(
            data, base[0], base[1], self.epochs.value(), out, lr=self.lr.value() or None,
            folds=self.folds.value(), fold=self.fold.value(), batch=self.batch.value() or None,
            samples_per_epoch=self.samples.value() or None, tile=self.tile.value() or None,
            workers=self.workers.value(),
        )

    # --- the run ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def start(self) -> QProcess | None:
        """Start the trainer (resuming a cancelled run of the same name); None if nothing to start."""
        if self.running:
            return self.process
        command = self.command()
        if command is None:
            return None
        self.events, self.result, self.last_error = [], None, None
        self._stdout = self._stderr = ""
        self._decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}
        self._stderr_tail.clear()
        self._cancel_requested = False
        self._run_out = Path(command[command.index("--out") + 1])
        self.curves.clear()
        self.log.clear()
        self.progress.setRange(0, 0)  # busy until the start event
        self.status.setText(f"Starting the trainer → {self._run_out}")
        if self.process is not None:
            self.process.deleteLater()  # the previous run's, finished
        self.process = process = QProcess(self)  # a child: deleted with the panel (which kills the trainer)
        environment = QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")  # events arrive as they happen
        process.setProcessEnvironment(environment)
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_process_error)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._register_task()
        process.start(command[0], command[1:])
        return process

    def cancel(self):
        """SIGTERM: the trainer stops at its next step and saves a checkpoint; killed after KILL_AFTER_S."""
        if not self.running:
            return
        self._cancel_requested = True
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling: the trainer saves a checkpoint at its next step…")
        self.process.terminate()
        self._kill_timer.start(int(KILL_AFTER_S * 1000))

    def stop(self, wait_s: float = KILL_AFTER_S) -> bool:
        """Cancel and wait (blocking) until the trainer ended, killing it after ``wait_s``; for closing."""
        if self.running:
            self.cancel()
            if not self.process.waitForFinished(int(wait_s * 1000)):
                self._kill()
                self.process.waitForFinished(2000)
        return True

    def _kill(self):
        if self.running:
            self.log.appendPlainText(f"trainer still running {KILL_AFTER_S:g} s after Cancel: killed")
            self.process.kill()

    def _register_task(self):
        """Closing the viewer's window stops the run (SIGTERM, so a resumable checkpoint): the panel
        watches its top-level window's Close event through Qt's public event filters (napari's task
        status registry is private, and a plugin widget only gets a public proxy of the viewer)."""
        window = self.window()
        if window is not self and self._watched_window is None:
            window.installEventFilter(self)
            self._watched_window = window

    def _end_task(self, failed: bool):
        window, self._watched_window = self._watched_window, None
        if window is not None:
            try:
                window.removeEventFilter(self)
            except RuntimeError:  # the window is already deleted
                pass

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if watched is self._watched_window and event.type() == QEvent.Type.Close and self.running:
            self.stop()
        return False

    # --- the trainer's output -----------------------------------------------------------------------

    def _read_stdout(self):
        text = self._decoders["stdout"].decode(bytes(self.process.readAllStandardOutput()))
        lines, self._stdout = split_lines(self._stdout, text)
        for line in lines:
            self._handle_line(line)

    def _read_stderr(self):
        text = self._decoders["stderr"].decode(bytes(self.process.readAllStandardError()))
        lines, self._stderr = split_lines(self._stderr, text, r"\r\n|\r|\n")  # tqdm redraws with \r
        for line in filter(str.strip, lines):
            self._stderr_tail.append(line)
            self.log.appendPlainText(line)

    def _handle_line(self, line: str):
        event = parse_event(line)
        if event is None:
            if line.strip():
                self.log.appendPlainText(line)
            return
        self.events.append(event)
        handler = getattr(self, f"_on_{event['event']}_event", None)
        try:
            if handler is not None:
                handler(event)
        except (KeyError, TypeError, ValueError) as error:  # a malformed event must not raise into napari
            self.log.appendPlainText(f"unreadable event {line.strip()}: {error!r}")

    def _on_start_event(self, event):
        self._steps_per_epoch = max(int(event["steps_per_epoch"]), 1)
        resumed = int(event.get("resumed_at") or 0)
        self.progress.setRange(0, max(int(event["epochs"]) * self._steps_per_epoch, 1))
        self.progress.setValue(min(resumed * self._steps_per_epoch, self.progress.maximum()))
        self.status.setText(
            f"Training on {event.get('train_samples', '?')} images, validating on {event.get('val_images', '?')}: "
            f"{event['epochs']} epochs of {self._steps_per_epoch} steps"
            + (f", resumed after epoch {resumed}" if resumed else "") + f" ({event.get('device', '?')})"
        )

    def _on_step_event(self, event):
        epoch, step = int(event["epoch"]), int(event["step"])
        steps = max(int(event.get("steps") or self._steps_per_epoch), 1)
        self.progress.setValue(min(progress_value(epoch, step, steps), self.progress.maximum()))
        self.curves.add_step(epoch - 1 + step / steps, event.get("loss"))
        if not self._cancel_requested:
            loss = event.get("loss")
            self.status.setText(f"Epoch {epoch}, step {step}/{steps}" + (f" · loss {loss:.4f}" if loss is not None else ""))

    def _on_epoch_event(self, event):
        epoch = int(event["epoch"])
        self.progress.setValue(min(progress_value(epoch + 1, 0, self._steps_per_epoch), self.progress.maximum()))
        self.curves.add_epoch(event)
        if not self._cancel_requested:
            dice = event.get("val_dice")
            text = f"Epoch {epoch}/{event.get('epochs', '?')}: train loss {event['train_loss']:.4f}"
            text += f" · val Dice {dice:.3f}" if dice is not None else ""
            text += " (best)" if event.get("best") else ""
            self.status.setText(text)

    def _on_done_event(self, event):
        self.result = event
        self.progress.setValue(self.progress.maximum())
        try:
            comparison = compare_models(event["model"], event.get("parent"))
        except HubmapInputError as error:
            comparison = f"{event['model']} (card unreadable: {error})"
        self.status.setText(f"Done: {comparison}")
        self.viewer.status = f"Trained {Path(event['model']).name}"
        self._refresh_inference_panels()
        self.refresh_bases()

    def _on_cancelled_event(self, event):
        self.log.appendPlainText(f"checkpoint: {event.get('checkpoint')}")

    def _on_error_event(self, event):
        self.last_error = str(event.get("message", ""))

    def _refresh_inference_panels(self):
        from .inference_panel import InferencePanel

        for panel in self._docked(InferencePanel):
            panel.refresh_models()

    def _on_finished(self, exit_code: int, exit_status):
        self._kill_timer.stop()
        for reader in (self._read_stdout, self._read_stderr):
            reader()
        if self._stdout.strip():
            self._handle_line(self._stdout)
            self._stdout = ""
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        if self.result is not None and not crashed:
            pass  # the done event wrote the status
        elif self._cancel_requested or any(e["event"] == "cancelled" for e in self.events):
            self.status.setText(self._cancelled_message())
        else:
            self._show_error(f"Training failed: {self._failure(exit_code, crashed)}")
        if self.result is None:
            self.progress.setRange(0, max(self.progress.maximum(), 1))
        self._end_task(failed=self.result is None)
        self.start_button.setEnabled(self.base.count() > 0)
        self.cancel_button.setEnabled(False)

    def _cancelled_message(self) -> str:
        if any(e["event"] == "cancelled" for e in self.events):
            return CANCELLED_MESSAGE
        out = self._run_out
        if out is not None and checkpoint_of(out).exists():  # killed: the checkpoint of the last epoch is left
            return "cancelled (the trainer was killed; Start resumes after its last finished epoch)"
        return "cancelled (before any checkpoint was saved)"

    def _failure(self, exit_code: int, crashed: bool) -> str:
        """The trainer's error event, else its last stderr lines, else how it ended."""
        if self.last_error:
            return self.last_error
        how = "crashed" if crashed else f"exit code {exit_code}"
        tail = " / ".join(list(self._stderr_tail)[-3:])
        return f"{tail} ({how})" if tail else how

    def _on_process_error(self, error):
        if error == QProcess.ProcessError.FailedToStart:  # no finished signal follows
            self._show_error(f"Cannot start the trainer: {self.process.errorString()}")
            self._end_task(failed=True)
            self.progress.setRange(0, 1)
            self.start_button.setEnabled(True)
            self.cancel_button.setEnabled(False)

    # --- messages -----------------------------------------------------------------------------------

    def _refuse(self, message: str):
        self.status.setText(message)
        self.viewer.status = message
        return None

    def _show_error(self, message: str):
        self.status.setText(message)
        from napari.utils.notifications import show_error

        show_error(message)


def _spin(low: int, high: int, value: int, *, special: str = "", step: int = 1, tip: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSingleStep(step)
    if special:
        spin.setSpecialValueText(special)
    if tip:
        spin.setToolTip(tip)
    return spin
