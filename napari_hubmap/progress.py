"""One protocol for long work: how it reports progress and how it is stopped.

Every long-running core function (the pyramid cache build, writing a synthetic slide, inference,
whole-slide post-processing, a project's pseudo-labels, training) takes two keyword arguments:

* ``progress``: a :data:`ProgressCallback`, called with a :class:`Progress` as work gets done, with
  ``0 <= done <= total``. ``total`` is known before the first report and stays, unless the function's
  docstring says how it grows (post-processing learns the number of objects after its first pass); a run
  may end before ``done`` reaches ``total`` only where its docstring says so (training stopped early).
  ``message`` is a short line for a person (empty where the counts say it all); ``details`` carries what
  one kind of work adds (inference: throughput, ETA and the rows final in the store; training: its event).
* ``cancel``: a :class:`threading.Event`. The function checks it between units of work and, once it is set,
  raises :class:`Cancelled` after leaving on disk what its docstring says (nothing, a resumable store, a
  resume checkpoint).

The callback runs in the thread doing the work. Imports neither torch nor Qt.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Callable

__all__ = ["Cancelled", "Progress", "ProgressCallback", "Steps", "check_cancelled", "report", "with_message"]


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of work (tiles, blocks, steps...), with an optional message and details."""

    done: int
    total: int
    message: str = ""
    details: Mapping | None = None

    @property
    def fraction(self) -> float:
        """``done / total`` in [0, 1] (0 while the total is 0)."""
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


class Cancelled(InterruptedError):
    """Long work stopped because its ``cancel`` event was set. An :class:`InterruptedError`, so that code
    catching that (the command line's exit 130) catches it too."""


def check_cancelled(cancel: threading.Event | None, message: str = "cancelled") -> None:
    """Raise :class:`Cancelled` (with ``message``) if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(message)


def report(progress: ProgressCallback | None, done: int, total: int, message: str = "",
           details: Mapping | None = None) -> None:
    """``progress(Progress(done, total, message, details))``, unless ``progress`` is None."""
    if progress is not None:
        progress(Progress(done, total, message, details))


def with_message(progress: ProgressCallback | None, message: str) -> ProgressCallback | None:
    """``progress`` with ``message`` on every report that has none (for work done inside larger work)."""
    if progress is None:
        return None
    return lambda p: progress(p if p.message else replace(p, message=message))


class Steps:
    """Units of work counted as they are done: each :meth:`__call__` checks ``cancel`` first, then adds to
    ``done`` and reports; :meth:`grow` adds to ``total`` once more work is known."""

    def __init__(self, total: int, progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 cancelled: str = "cancelled"):
        self.done, self.total = 0, total
        self.progress, self.cancel, self.cancelled = progress, cancel, cancelled

    def check(self) -> None:
        check_cancelled(self.cancel, self.cancelled)

    def __call__(self, units: int = 1) -> None:
        self.check()
        self.done += units
        report(self.progress, self.done, self.total)

    def grow(self, units: int) -> None:
        self.total += units
