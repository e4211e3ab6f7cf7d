"""The cohort on Dask distributed: one task per slide on an existing scheduler or a LocalCluster started here.

Tasks are :func:`napari_hubmap.batch.slide.process_slide` calls; each worker process keeps its loaded models
between slides (:func:`napari_hubmap.batch.slide.worker_models`). Workers report tiles through Dask's event log
(topic :data:`napari_hubmap.batch.config.PROGRESS_TOPIC`), which the client turns into cohort progress. A worker
that dies mid-slide (killed, out of memory) is replaced by its nanny and the scheduler reruns the slide
elsewhere; the slide's map resumes from the rows already written.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ..errors import HubmapInputError
from ..progress import Cancelled, report
from ..stores.naming import slide_stem
from .config import PROGRESS_TOPIC, CohortConfig
from .slide import process_slide

REPORT_EVERY_S = 0.5


def _remote_slide(slide: str, out_dir: str, config: CohortConfig) -> dict:
    """A slide on a worker, its tile progress sent to the client (at most every :data:`REPORT_EVERY_S`)."""
    from distributed import get_worker

    worker, stem, last = get_worker(), slide_stem(slide), [0.0]

    def send(p):
        now = time.monotonic()
        if now - last[0] >= REPORT_EVERY_S or p.done >= p.total:
            last[0] = now
            worker.log_event(PROGRESS_TOPIC, {"stem": stem, "done": p.done, "total": p.total})

    return process_slide(slide, out_dir, config, send)


def _client(scheduler: str | None, workers: int | None):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="30s"), None
        except OSError as error:
            raise HubmapInputError(None, f"cannot reach the Dask scheduler {scheduler}: {error}") from None
    if workers is None or workers < 1:
        raise HubmapInputError(None, f"workers must be at least 1, got {workers}")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), cluster


def run_on_cluster(slides: list[str], out_dir: Path, config: CohortConfig, scheduler, workers, progress, on_line,
                   cancel: threading.Event | None) -> list[dict]:
    """Every slide's line, in the order given (see :func:`napari_hubmap.batch.run_cohort`)."""
    from distributed import wait

    client, cluster = _client(scheduler, workers)
    tiles: dict = {}
    lock = threading.Lock()
    finished = [0]

    def on_event(event):
        _, message = event
        with lock:
            tiles[message["stem"]] = [message["done"], message["total"]]
            report(progress, finished[0], len(slides), details={"tiles": dict(tiles)})

    try:
        if progress is not None:
            client.subscribe_topic(PROGRESS_TOPIC, on_event)
        futures = {client.submit(_remote_slide, slide, str(out_dir), config, pure=False,
                                 key=f"slide-{index}-{slide_stem(slide)}"): index
                   for index, slide in enumerate(slides)}
        lines: list = [None] * len(slides)
        pending = set(futures)
        while pending:
            if cancel is not None and cancel.is_set():
                client.cancel(list(pending))
                raise Cancelled(f"cohort cancelled with {len(pending)} of {len(slides)} slides unfinished")
            try:
                done, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in done:
                index = futures[future]
                lines[index] = _line_of(future, slides[index])
                if on_line:
                    on_line(lines[index])
                with lock:
                    finished[0] += 1
                    report(progress, finished[0], len(slides), details={"tiles": dict(tiles)})
        return lines
    finally:
        if progress is not None:
            client.unsubscribe_topic(PROGRESS_TOPIC)
        client.close()
        if cluster is not None:
            cluster.close()


def _line_of(future, slide: str) -> dict:
    """The task's line, or an error line when the task itself failed (its workers died too often)."""
    try:
        return future.result()
    except Exception as error:  # KilledWorker, a worker's unexpected exception: this slide's error only
        return {"slide": slide, "stem": slide_stem(slide), "error": f"{type(error).__name__}: {error}"}
