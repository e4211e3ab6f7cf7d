"""Run / Cancel buttons, a progress bar and a status line: the controls of every panel that runs long work.

One widget, driven by :class:`~napari_hubmap.progress.Progress` reports. :meth:`RunControls.start_worker`
runs a core call that takes ``progress`` and ``cancel`` (see :mod:`napari_hubmap.progress`) in a napari
worker: the call runs in an inner thread whose reports reach the GUI thread coalesced
(:func:`.background.yield_progress`); the buttons, the bar, the cancel token (a :class:`threading.Event`,
also set when the worker is quit from napari's activity dock) and the split of an error into *cancelled*
and *failed* are handled here, the panel says what a result, a cancellation and a failure mean to it.
A panel whose work runs elsewhere (the Training panel's child process) drives the same controls with
:meth:`~RunControls.begin`, :meth:`~RunControls.show_progress`, :meth:`~RunControls.request_cancel` and
:meth:`~RunControls.end`. A panel whose work runs in the controls' worker inherits :class:`WorkerRun`
for its ``running``, ``worker`` and ``cancel_event``.
"""

from __future__ import annotations

import threading
import traceback
from typing import Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..errors import HubmapInputError
from ..progress import Cancelled, Progress
from .background import YIELD_INTERVAL_S, yield_progress

Work = Callable[[Callable[[Progress], None], threading.Event], object]
"""``work(progress, cancel)``: a core call that reports to ``progress`` and stops (raising
:class:`~napari_hubmap.progress.Cancelled`) once ``cancel`` is set."""


class RunControls(QWidget):
    """``[run] [Cancel]`` above a progress bar and a status line (selectable, wrapped)."""

    def __init__(self, viewer, run_text: str = "Run", *, run_enabled: bool = True):
        super().__init__()
        self.viewer = viewer
        self.worker = None
        self.cancel_event: threading.Event | None = None
        self.run_button = QPushButton(run_text)
        self.run_button.setEnabled(run_enabled)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.closed = threading.Event()
        """Set once the Qt widget is deleted (its panel closed, the viewer closed): the running work is
        cancelled and its later reports, result or error reach neither the controls nor the panel."""
        self.destroyed.connect(lambda *_, controls=self: controls.forget())

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    # --- the controls -----------------------------------------------------------------------------

    def begin(self, message: str) -> None:
        """A run starts: Run off, Cancel on, the bar busy until the first report, ``message`` shown."""
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(message)

    def show_progress(self, progress: Progress) -> None:
        """The bar at ``progress.done`` of ``progress.total`` (the panel words the status line)."""
        self.set_bar(progress.done, progress.total)

    def set_bar(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def reset_bar(self) -> None:
        self.set_bar(0, 1)

    def request_cancel(self, message: str) -> None:
        """Cancel asked for: the button goes off and ``message`` says what happens next."""
        self.cancel_button.setEnabled(False)
        self.status.setText(message)

    def end(self, run_enabled: bool = True) -> None:
        """The run ended (however): Run back on (unless ``run_enabled`` is False), Cancel off."""
        self.run_button.setEnabled(run_enabled)
        self.cancel_button.setEnabled(False)

    # --- messages -----------------------------------------------------------------------------------

    def refuse(self, message: str) -> None:
        """Nothing to run: ``message`` in the status line and the viewer's status bar. Returns None."""
        self.status.setText(message)
        self.viewer.status = message

    def announce(self, message: str) -> None:
        """A run's outcome, in the status line and the viewer's status bar."""
        self.status.setText(message)
        self.viewer.status = message

    def fail(self, message: str) -> None:
        """An error: in the status line and as a napari notification."""
        self.status.setText(message)
        from napari.utils.notifications import show_error

        show_error(message)

    def forget(self) -> None:
        """The widget is gone (Qt deleted it): stop the running work, drop what it still sends."""
        self.closed.set()
        if self.cancel_event is not None:
            self.cancel_event.set()

    # --- work in a napari worker --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start_worker(self, work: Work, message: str, *, on_progress: Callable | None = None,
                     on_returned: Callable | None = None, on_cancelled: Callable | None = None,
                     on_failed: Callable | None = None, interval_s: float = YIELD_INTERVAL_S):
        """Run ``work(progress, cancel)`` in a napari worker (the controls as in :meth:`begin` meanwhile);
        returns the worker, or the running one (a second start does nothing).

        Each report moves the bar, then goes to ``on_progress``; the result goes to ``on_returned``; a
        :class:`~napari_hubmap.progress.Cancelled` goes to ``on_cancelled``; any other error resets the bar,
        is printed with its traceback unless it is bad input (:class:`~napari_hubmap.errors.HubmapInputError`)
        and goes to ``on_failed``. A worker quit from outside (napari's activity dock, the app closing) sets
        the cancel token, so the work stops too, and ends with *Stopped*. Once the controls are deleted
        (:attr:`closed`) the work is cancelled and nothing it sends is shown or handed to the panel.
        """
        if self.running:
            return self.worker
        from napari.qt.threading import create_worker

        cancel = self.cancel_event = threading.Event()
        outcome: dict = {}

        def progressed(progress):
            if self.closed.is_set():
                return
            self.show_progress(progress)
            if on_progress is not None:
                on_progress(progress)

        def returned(result):
            outcome["returned"] = result
            if on_returned is not None and not self.closed.is_set():
                on_returned(result)

        def errored(error):
            outcome["error"] = error
            cancelled = isinstance(error, Cancelled)
            if not cancelled and not isinstance(error, HubmapInputError):  # a bug, not bad input: keep the traceback
                traceback.print_exception(type(error), error, error.__traceback__)
            if self.closed.is_set():
                return
            if cancelled:
                if on_cancelled is not None:
                    on_cancelled(error)
                return
            self.reset_bar()
            if on_failed is not None:
                on_failed(error)

        def finished():
            self.worker = None
            if self.closed.is_set():
                return
            if not outcome:  # quit from outside (activity dock): make sure the work stops
                cancel.set()
                self.status.setText("Stopped")
            self.end()

        self.begin(message)
        self.worker = create_worker(
            yield_progress, lambda progress: work(progress, cancel), cancel, interval_s, _start_thread=False,
            _connect={"yielded": progressed, "returned": returned, "errored": errored, "finished": finished},
        )
        # quit() from napari's activity dock or at app exit: stop the work too (runs in the worker thread)
        self.worker.aborted.connect(cancel.set, Qt.ConnectionType.DirectConnection)
        self.worker.start()
        return self.worker

    def cancel(self, message: str) -> bool:
        """Set the running work's cancel token (see :meth:`request_cancel`); False if nothing runs."""
        if self.cancel_event is None or not self.running:
            return False
        self.cancel_event.set()
        self.request_cancel(message)
        return True


class WorkerRun:
    """A panel whose work runs in the napari worker of its :class:`RunControls` (``self.controls``):
    its ``running``, ``worker`` and ``cancel_event`` are the controls'."""

    controls: RunControls

    @property
    def running(self) -> bool:
        return self.controls.running

    @property
    def worker(self):
        return self.controls.worker

    @property
    def cancel_event(self) -> threading.Event | None:
        return self.controls.cancel_event
