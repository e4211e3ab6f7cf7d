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

import os
from pathlib import Path

from qtpy.QtCore import QEvent, QProcess, QProcessEnvironment, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import HubmapInputError
from ..progress import Progress
from ..training.config import TrainConfig
from .background import emit_from_daemon
from .forms import spin
from .peers import HoldsProject, ListsModels, docked
from .plots import TrainingCurves
from .run_controls import RunControls
from .training_runs import (
    CANCELLED_MESSAGE,
    MODEL_KIND,
    PRESET_KIND,
    OutputLines,
    cancelled_message,
    checkpoint_of,
    compare_models,
    describe_epoch,
    describe_start,
    describe_step,
    failure_message,
    format_metrics,
    free_model_name,
    list_bases,
    parse_event,
    progress_value,
    train_command,
)

# moved to .training_runs and .plots; still importable from here
__all__ = ["CANCELLED_MESSAGE", "KILL_AFTER_S", "MODEL_KIND", "PRESET_KIND", "TrainingCurves", "TrainingPanel",
           "checkpoint_of", "compare_models", "format_metrics", "free_model_name", "train_command"]

KILL_AFTER_S = 30.0
"""After Cancel (SIGTERM), a trainer still running this long is killed (it stops at its next step, or after
the validation under way: 10 s was outrun on a loaded 2-core machine, losing that epoch's checkpoint)."""
BASE_ROLE = Qt.ItemDataRole.UserRole  # (kind, name) of a base combo item


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
        self.output = OutputLines()
        self._steps_per_epoch = 1
        self._total_steps = 1
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
        recipe = TrainConfig()  # the trainer's defaults: the shipped model's recipe
        self.epochs = spin(1, 10_000, recipe.epochs)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(0, 1)
        self.lr.setSingleStep(1e-4)
        self.lr.setSpecialValueText(f"default ({recipe.lr:g})")
        self.folds = spin(1, 20, 1, tip="Cross-validation folds (1: one validation split)")
        self.fold = spin(0, 0, 0, tip="Which fold validates (0-based)")
        self.batch = spin(0, 1024, 0, special=f"default ({recipe.batch})")
        self.samples = spin(0, 1_000_000, 0, special=f"default ({recipe.samples_per_epoch})", step=64, tip="Training tiles drawn per epoch")
        self.tile = spin(0, 4096, 0, special=f"default ({recipe.tile})", step=32, tip="Training tile side (a multiple of 32)")
        self.workers = spin(0, 64, 1, tip="Data-loader worker processes (0: load tiles in the trainer itself)")
        self.stain = QCheckBox("standardise colour (Reinhard)")
        self.stain.setToolTip("Move each image's tissue colour onto the training images' mean; the model records that "
                              "colour and moves every slide it predicts onto it. A model that has one keeps it when "
                              "fine-tuned.")
        self.name = QLineEdit()
        self.out_label = QLabel("")
        self.out_label.setWordWrap(True)
        self.controls = RunControls(self.viewer, "Start", run_enabled=False)
        self.start_button, self.cancel_button = self.controls.run_button, self.controls.cancel_button
        self.progress, self.status = self.controls.progress, self.controls.status
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
        form.addRow("Stain", self.stain)
        form.addRow("New model name", self.name)
        layout.addLayout(form)
        layout.addWidget(self.out_label)
        layout.addWidget(self.controls)
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
        """The root of the project open in a docked Review panel (any :class:`.HoldsProject`), if any."""
        roots = (widget.project_root() for widget in docked(self.viewer, HoldsProject))
        return next((root for root in roots if root is not None), None)

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
            workers=self.workers.value(), stain_standardise=self.stain.isChecked(),
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
        self.output = OutputLines()
        self._cancel_requested = False
        self._total_steps = 1
        self._run_out = Path(command[command.index("--out") + 1])
        self.curves.clear()
        self.log.clear()
        self.controls.begin(f"Starting the trainer → {self._run_out}")  # the bar busy until the start event
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
        self._register_task()
        process.start(command[0], command[1:])
        return process

    def cancel(self):
        """SIGTERM: the trainer stops at its next step and saves a checkpoint; killed after KILL_AFTER_S."""
        if not self.running:
            return
        self._cancel_requested = True
        self.controls.request_cancel("Cancelling: the trainer saves a checkpoint at its next step…")
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
        for line in self.output.stdout(bytes(self.process.readAllStandardOutput())):
            self._handle_line(line)

    def _read_stderr(self):
        for line in self.output.stderr(bytes(self.process.readAllStandardError())):
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
        self._total_steps = max(int(event["epochs"]) * self._steps_per_epoch, 1)
        self._show_steps(resumed * self._steps_per_epoch)
        self.status.setText(describe_start(event, self._steps_per_epoch, resumed))

    def _on_step_event(self, event):
        epoch, step = int(event["epoch"]), int(event["step"])
        steps = max(int(event.get("steps") or self._steps_per_epoch), 1)
        self._show_steps(progress_value(epoch, step, steps))
        self.curves.add_step(epoch - 1 + step / steps, event.get("loss"))
        if not self._cancel_requested:
            self.status.setText(describe_step(epoch, step, steps, event.get("loss")))

    def _on_epoch_event(self, event):
        epoch = int(event["epoch"])
        self._show_steps(progress_value(epoch + 1, 0, self._steps_per_epoch))
        self.curves.add_epoch(event)
        if not self._cancel_requested:
            self.status.setText(describe_epoch(event))

    def _show_steps(self, done: int) -> None:
        """The bar at ``done`` training steps of the run's total (from the start event)."""
        self.controls.show_progress(Progress(min(done, self._total_steps), self._total_steps))

    def _on_done_event(self, event):
        self.result = event
        self._show_steps(self._total_steps)
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
        """Every docked panel listing the registry (the Inference panel, a :class:`.ListsModels`) re-reads it."""
        for panel in docked(self.viewer, ListsModels):
            panel.refresh_models()

    def _on_finished(self, exit_code: int, exit_status):
        self._kill_timer.stop()
        for reader in (self._read_stdout, self._read_stderr):
            reader()
        rest = self.output.rest_of_stdout()
        if rest.strip():
            self._handle_line(rest)
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        if self.result is not None and not crashed:
            pass  # the done event wrote the status
        elif self._cancel_requested or any(e["event"] == "cancelled" for e in self.events):
            self.status.setText(cancelled_message(self.events, self._run_out))
        else:
            failure = failure_message(self.last_error, self.output.stderr_tail, exit_code, crashed)
            self._show_error(f"Training failed: {failure}")
        if self.result is None:
            self.progress.setRange(0, max(self.progress.maximum(), 1))
        self._end_task(failed=self.result is None)
        self.controls.end(run_enabled=self.base.count() > 0)

    def _on_process_error(self, error):
        if error == QProcess.ProcessError.FailedToStart:  # no finished signal follows
            self._show_error(f"Cannot start the trainer: {self.process.errorString()}")
            self._end_task(failed=True)
            self.controls.reset_bar()
            self.controls.end()

    # --- messages -----------------------------------------------------------------------------------

    def _refuse(self, message: str):
        self.controls.refuse(message)
        return None

    def _show_error(self, message: str):
        self.controls.fail(message)

