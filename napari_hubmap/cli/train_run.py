"""How ``napari-hubmap train`` runs: what it reports (JSON events with ``--events``, else a progress bar on stderr),
how SIGTERM/SIGINT stop it (the run ends at the next step with a resume checkpoint), and how ``--nproc N`` re-runs
it as N DistributedDataParallel processes through torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .common import EXIT_CANCELLED


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets (from now on)."""
    stop, asked = threading.Event(), []

    def ask_stop(signum, frame):
        if not asked:  # set once: a second signal arriving while the first sets it must not wait on its lock
            asked.append(signum)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, ask_stop)
    return stop


def _main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def emitter(enabled: bool):
    def emit(event: dict) -> None:
        if enabled and _main_rank():
            print(json.dumps(event), flush=True)
    return emit


def reporter(emit, events: bool):
    """(progress callback, finish): the events themselves (each Progress's ``details``) with ``--events``, else
    a progress bar on stderr (see :class:`napari_hubmap.cli.progress_bar.ProgressBar`) with a line per epoch."""
    if events:
        return lambda progress: emit(progress.details), lambda: None
    from .progress_bar import ProgressBar

    run = {"bar": None}

    def report(progress) -> None:
        if not _main_rank():
            return
        kind = progress.details["event"]
        if kind == "start":
            run["bar"] = ProgressBar("training", unit="steps", leave=True)
            run["bar"].update(progress)
        elif kind == "step":
            run["bar"].update(progress)
        elif kind == "epoch":
            run["bar"].write(progress.message)

    def finish() -> None:
        if run["bar"] is not None:
            run["bar"].close()
    return report, finish


class RunReports:
    """A run's reporting: ``progress`` for the trainer, ``emit`` for events, the closing lines (done, cancelled),
    and the number of epochs finished (those resumed, then each epoch's number)."""

    def __init__(self, events: bool):
        self.events = events
        self.emit = emitter(events)
        self.report, self.finish = reporter(self.emit, events)
        self.epochs_run = 0

    def progress(self, update) -> None:
        event = update.details
        if event["event"] in ("start", "epoch"):
            self.epochs_run = event["resumed_at"] if event["event"] == "start" else event["epoch"]
        self.report(update)

    def cancelled(self, out: Path) -> int:
        from ..training.checkpoint import checkpoint_folder

        checkpoint = checkpoint_folder(out)
        self.emit({"event": "cancelled", "checkpoint": str(checkpoint), "epochs_run": self.epochs_run})
        print(f"napari-hubmap: cancelled; checkpoint {checkpoint} (run again to resume)", file=sys.stderr)
        return EXIT_CANCELLED

    def done(self, result) -> None:
        card = result.card
        self.emit({"event": "done", "model": str(result.model), "metrics": card.metrics if card else {},
                   "parent": card.parent if card else None, "cancelled": False, "epochs_run": result.epochs_run,
                   "rank_digests": result.rank_digests})
        if not self.events and _main_rank():
            best = {k: v for k, v in result.best.items() if k != "by_source"}
            print(json.dumps({"model": str(result.model), "best": best}))


def _strip_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def run_torchrun(args) -> int:
    """Re-run this command as ``args.nproc`` DDP processes; SIGTERM/SIGINT reach every rank."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "napari_hubmap.cli", *_strip_nproc(args.argv)]
    child = subprocess.Popen(command, start_new_session=True)

    def forward(signum, frame):
        os.killpg(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return child.wait()
