"""Long core calls in a napari worker: the call runs in an inner thread, its progress is yielded.

The worker's generator hands progress events (coalesced) to the GUI thread, so every widget and
layer is touched there only; quitting the worker sets the cancel flag the core call polls.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

YIELD_INTERVAL_S = 0.1
"""At most this often (after the first) the worker hands a progress event to the GUI thread."""


def yield_progress(work: Callable, cancel: threading.Event, interval_s: float = YIELD_INTERVAL_S):
    """Generator: runs ``work(progress)`` in a thread and yields what it passes to ``progress``.

    Events arriving faster than ``interval_s`` are coalesced (only the latest is yielded), so the GUI
    thread is never flooded. Returns ``work``'s result; re-raises its error. If the generator is
    closed early (the worker was quit), ``cancel`` is set so that the work stops too.
    """
    events: queue.Queue = queue.Queue()
    done = object()
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = work(events.put)
        except BaseException as error:  # handed to the worker, which emits ``errored``
            outcome["error"] = error
        finally:
            events.put(done)

    thread = threading.Thread(target=target, name="napari-hubmap-work", daemon=True)
    thread.start()
    try:
        latest, last_yield, finished = None, None, False
        while not finished:
            try:
                item = events.get(timeout=interval_s)
            except queue.Empty:
                item = None
            while item is not None:
                if item is done:
                    finished = True
                    break
                latest = item
                try:
                    item = events.get_nowait()
                except queue.Empty:
                    item = None
            now = time.perf_counter()
            if latest is not None and (finished or last_yield is None or now - last_yield >= interval_s):
                yield latest
                latest, last_yield = None, now
        thread.join()
    finally:
        if thread.is_alive():  # the worker was quit (e.g. from napari's activity dock): stop the work
            cancel.set()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def emit_from_daemon(work: Callable, signal, name: str) -> None:
    """Run ``work()`` in a daemon thread and emit its result (or its exception) through a Qt ``signal``.

    A daemon thread rather than a napari worker: a panel closed (or a test ended) during a slow
    import must not leave a Qt worker emitting into deleted objects, which aborts the process.
    The signal is queued to the GUI thread; if the panel was deleted meanwhile, nothing happens.
    """

    def target():
        try:
            outcome = work()
        except Exception as error:  # shown by the panel
            outcome = error
        try:
            signal.emit(outcome)
        except RuntimeError:  # the panel was deleted meanwhile
            pass

    threading.Thread(target=target, name=name, daemon=True).start()
