"""The command line's progress display: :class:`ProgressBar`, and :class:`SlideBars` (one bar per slide)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..progress import Progress

PLAIN_PROGRESS_EVERY_S = 5.0
"""Off a terminal, a plain progress line at most this often, and one at the end."""


class ProgressBar:
    """Progress on stderr driven by ``update(progress)`` (a :class:`~napari_hubmap.progress.Progress`, its
    message shown beside the count): a tqdm bar when stderr is a terminal; anywhere else
    (a file, a CI log) a plain line ``DESC: DONE/TOTAL UNIT (P%)`` at most every :data:`PLAIN_PROGRESS_EVERY_S`
    and one at the end, never a carriage return. Nothing shows before the first update, so an error before any
    work is the only line printed."""

    def __init__(self, description: str, *, unit: str = "", leave: bool = False):
        self.description, self.unit, self.leave = description, unit, leave
        self.stream = sys.stderr
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None
        self.state = self.shown = None  # (done, total, note): the last update, the last plain line
        self.shown_at = -float("inf")

    def update(self, progress: Progress) -> None:
        """Show ``progress``; a :data:`~napari_hubmap.progress.ProgressCallback`."""
        self.state = (progress.done, progress.total, progress.message)
        if self.terminal:
            self._draw()
        elif time.monotonic() - self.shown_at >= PLAIN_PROGRESS_EVERY_S:
            self._print()

    def write(self, line: str) -> None:
        """A message on its own line, leaving the bar intact."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self, summary: bool = True) -> None:
        """End the bar; off a terminal, print the last state unless it was printed or ``summary`` is false."""
        if self.bar is not None:
            self.bar.close()
        elif summary and self.state not in (None, self.shown):
            self._print()

    def _draw(self) -> None:
        done, total, note = self.state
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=self.description, unit=self.unit or "it", file=self.stream,
                            leave=self.leave, dynamic_ncols=True)
        self.bar.total = total
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        self.bar.update(done - self.bar.n)

    def _print(self) -> None:
        done, total, note = self.shown = self.state
        self.shown_at = time.monotonic()
        unit = f" {self.unit}" if self.unit else ""
        count = f"{done}/{total}{unit} ({100 * done // total}%)" if total else f"{done}{unit}"
        print(f"{self.description}: {count}{', ' + note if note else ''}", file=self.stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        self.close(summary=kind is None)  # after an error, its one line says enough


class SlideBars:
    """One :class:`ProgressBar` per slide (``project <file name>``), for progress naming its slide in ``details``."""

    def __init__(self):
        self.slide, self.bar = None, None

    def update(self, progress: Progress) -> None:
        slide = progress.details["slide"]
        if slide != self.slide:
            self.close()
            self.slide, self.bar = slide, ProgressBar(f"project {Path(slide).name}")
        self.bar.update(progress)

    def close(self, summary: bool = True) -> None:
        if self.bar is not None:
            self.bar.close(summary=summary)
        self.slide, self.bar = None, None
