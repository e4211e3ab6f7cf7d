"""The cohort on Dask distributed: tasks per slide on an existing scheduler or a LocalCluster started here.

A slide is one :func:`~napari_hubmap.batch.slide.process_slide` task, or, when its map has more rows than
``CohortConfig.band_rows``, one task per row band (:func:`~napari_hubmap.batch.slide.predict_band`, writing
disjoint chunks of the same store) and a finishing task, so several workers share it. Each worker process keeps its loaded models
between slides (:func:`napari_hubmap.batch.slide.worker_models`). Workers report tiles through Dask's event log
(topic :data:`napari_hubmap.batch.config.PROGRESS_TOPIC`), which the client turns into cohort progress. A worker
that dies mid-slide (killed, out of memory) is replaced by its nanny and the scheduler reruns the slide
elsewhere; the slide's map resumes from the rows already written.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from ..errors import HubmapInputError
from ..progress import Cancelled, report
from ..stores.naming import slide_stem
from .config import PROGRESS_TOPIC, CohortConfig, tiles_message
from .slide import finish_slide, predict_band, prepare_slide, process_slide

REPORT_EVERY_S = 0.5


def _sender(slide: str, part: int):
    """A progress callback that sends a slide's (or band's) tiles to the client, at most every
    :data:`REPORT_EVERY_S`."""
    from distributed import get_worker

    worker, stem, last = get_worker(), slide_stem(slide), [0.0]

    def send(p):
        now = time.monotonic()
        if now - last[0] >= REPORT_EVERY_S or p.done >= p.total:
            last[0] = now
            worker.log_event(PROGRESS_TOPIC, {"stem": stem, "part": part, "done": p.done, "total": p.total})

    return send


def _remote_slide(slide: str, out_dir: str, config: CohortConfig) -> dict:
    return process_slide(slide, out_dir, config, _sender(slide, 0))


def _remote_band(slide: str, out_dir: str, config: CohortConfig, band: tuple[int, int]) -> dict:
    return predict_band(slide, out_dir, config, band, _sender(slide, band[0]))


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
    """Every slide's line, in the order given (see :func:`napari_hubmap.batch.run_cohort`).

    Each slide first gets a *prepare* task (its store made, its bands planned); one band: the slide is one
    task; several: one task per band, then a *finish* task (lower levels, post-processing, exports)."""
    from distributed import wait

    client, cluster = _client(scheduler, workers)
    cohort = _Cohort(client, slides, str(out_dir), config, progress, uuid.uuid4().hex[:8])
    try:
        if progress is not None:
            client.subscribe_topic(PROGRESS_TOPIC, cohort.on_event)
        for index in range(len(slides)):
            cohort.submit("prepare", index, prepare_slide, config=config)
        while cohort.pending:
            if cancel is not None and cancel.is_set():
                client.cancel(list(cohort.pending))
                raise Cancelled(f"cohort cancelled with {len(cohort.pending)} tasks of {len(slides)} slides unfinished")
            try:
                done, _ = wait(list(cohort.pending), timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in done:
                line = cohort.settle(future)
                if line is not None and on_line:
                    on_line(line)
        return cohort.lines
    finally:
        if progress is not None:
            client.unsubscribe_topic(PROGRESS_TOPIC)
        client.close()
        if cluster is not None:
            cluster.close()


class _Cohort:
    """The client's view of a cohort on the cluster: tasks in flight, lines, tiles reported."""

    def __init__(self, client, slides, out_dir: str, config: CohortConfig, progress, token: str):
        self.client, self.slides, self.out_dir, self.config = client, slides, out_dir, config
        self.progress, self.token = progress, token
        self.pending: dict = {}  # future -> (kind, slide index)
        self.lines: list = [None] * len(slides)
        self.tiles: dict = {}
        self.lock = threading.Lock()

    def submit(self, kind: str, index: int, function, *args, config=None):
        slide = self.slides[index]
        key = f"{kind}-{index}-{slide_stem(slide)}-{self.token}" + (f"-{args[0][0]}" if kind == "band" else "")
        future = self.client.submit(function, slide, self.out_dir, config or self.config, *args, key=key, pure=False)
        if kind != "band":
            self.pending[future] = (kind, index)
        return future

    def settle(self, future) -> dict | None:
        """Act on a finished task: a prepared slide gets its tasks; a line is kept (and returned)."""
        kind, index = self.pending.pop(future)
        slide = self.slides[index]
        if kind == "prepare":
            try:
                prepared = future.result()
            except Exception as error:  # noqa: BLE001  (its workers died too often: this slide's error)
                prepared = {"line": _error_line(slide, error)}
            if "line" not in prepared:
                self._run_prepared(index, prepared["bands"])
                return None
            line = prepared["line"]
        else:
            line = _line_of(future, slide)
        self.lines[index] = line
        self._report()
        return line

    def _run_prepared(self, index: int, bands: list) -> None:
        if len(bands) <= 1:
            self.submit("slide", index, _remote_slide)
            return
        parts = [self.submit("band", index, _remote_band, band) for band in bands]
        self.submit("finish", index, finish_slide, bands, parts)

    def on_event(self, event) -> None:
        _, message = event
        with self.lock:
            self.tiles.setdefault(message["stem"], {})[message["part"]] = (message["done"], message["total"])
        self._report()

    def _report(self) -> None:
        with self.lock:
            tiles = {stem: [sum(d for d, _ in parts.values()), sum(t for _, t in parts.values())]
                     for stem, parts in self.tiles.items()}
            finished = sum(line is not None for line in self.lines)
            report(self.progress, finished, len(self.slides), tiles_message(tiles), details={"tiles": tiles})


def _error_line(slide: str, error: BaseException) -> dict:
    return {"slide": slide, "stem": slide_stem(slide), "error": f"{type(error).__name__}: {error}"}


def _line_of(future, slide: str) -> dict:
    """The task's line, or an error line when the task itself failed (its workers died too often)."""
    try:
        return future.result()
    except Exception as error:  # KilledWorker, a worker's unexpected exception: this slide's error only
        return _error_line(slide, error)
