"""A whole cohort: predict, post-process and export every slide, in this process or on a Dask cluster.

:func:`run_cohort` runs :func:`process_slide` for each slide: the probability map ``<stem>.prob.zarr``
(resumable), the labels ``<stem>.labels.zarr``, the exports asked for (``<stem>.geojson``, ``<stem>.rle.csv``,
``<stem>.ome.zarr``), and last a record ``<stem>.done.json`` holding the slide's result line. A slide whose
record matches the run's settings is skipped; a half-done one continues where its map stopped. When every
slide is through, the slides' RLE rows become one Kaggle CSV for the cohort (``submission.csv``).

Slides go to an existing Dask distributed scheduler (``scheduler``: ``tcp://HOST:8786``), to a
``LocalCluster`` of ``workers`` processes started here, or (neither given) run here one after the other.
Each worker process loads the models once. A slide's error (a corrupt file, a full disk) is its line's
``error`` and does not stop the others; a worker that dies mid-slide has its slides rerun elsewhere by the
scheduler, resuming their maps.

Two writers: the coordinating process holds the output folder's lock (``<out>/.lock``, see
:mod:`napari_hubmap.locks`) for the whole run, so a second cohort into the same folder stops with one error
naming the first. Each store has its own lock beside it: a slide's prediction or post-processing holds it
alone, the workers writing a map's row bands share it (each its own rows), so a lone ``predict`` into a map
being written by a cohort is refused too.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import HubmapInputError
from ..locks import FolderLock
from ..progress import Cancelled, ProgressCallback, report
from ..stores.naming import slide_stem
from .config import (COHORT_CSV, DONE_SUFFIX, EXPORT_SUFFIXES, EXPORTS, PROGRESS_TOPIC, CohortConfig, done_path,
                     export_path, tiles_message)
from .slide import postprocess_config, process_slide, worker_models

__all__ = ["COHORT_CSV", "DONE_SUFFIX", "EXPORTS", "EXPORT_SUFFIXES", "PROGRESS_TOPIC", "CohortConfig", "done_path",
           "export_path", "postprocess_config", "process_slide", "run_cohort", "worker_models", "write_cohort_csv"]


def run_cohort(slides, out_dir, config: CohortConfig | None = None, *, scheduler: str | None = None,
               workers: int | None = None, progress: ProgressCallback | None = None,
               on_line=None, cancel: threading.Event | None = None) -> list[dict]:
    """Every slide's result line, in the order given; ``on_line`` gets each as it finishes.

    ``progress`` gets :class:`~napari_hubmap.progress.Progress` in slides finished, its ``details`` the
    tiles done per slide (``{"tiles": {stem: [done, total]}}``) as workers report them."""
    config = config or CohortConfig()
    slides, out_dir = [str(s) for s in slides], Path(out_dir)
    _check_unique_stems(slides)
    out_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(out_dir, f"a batch of {len(slides)} slides"):
        if scheduler is None and not workers:
            lines = _run_here(slides, out_dir, config, progress, on_line, cancel)
        else:
            from .cluster import run_on_cluster

            lines = run_on_cluster(slides, out_dir, config, scheduler, workers, progress, on_line, cancel)
        if "rle-csv" in config.exports:
            write_cohort_csv(out_dir, lines)
    return lines


def _check_unique_stems(slides: list[str]) -> None:
    seen: dict[str, str] = {}
    for slide in slides:
        stem = slide_stem(slide)
        if stem in seen and seen[stem] != slide:
            raise HubmapInputError(slide, f"has the same name as {seen[stem]}: their outputs would collide")
        seen[stem] = slide


def _run_here(slides, out_dir, config, progress, on_line, cancel) -> list[dict]:
    lines, tiles = [], {}
    for index, slide in enumerate(slides):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cohort cancelled after {index} of {len(slides)} slides")

        line = process_slide(slide, out_dir, config, _tile_progress(progress, tiles, slide, index, len(slides)))
        lines.append(line)
        if on_line:
            on_line(line)
        report(progress, index + 1, len(slides), tiles_message(tiles), details={"tiles": dict(tiles)})
    return lines


def _tile_progress(progress, tiles: dict, slide: str, finished: int, total: int):
    """A slide's tile progress as cohort progress (``finished`` slides done before it)."""
    if progress is None:
        return None
    stem = slide_stem(slide)

    def update(p):
        tiles[stem] = [p.done, p.total]
        report(progress, finished, total, tiles_message(tiles), details={"tiles": dict(tiles)})

    return update


def write_cohort_csv(out_dir, lines: list[dict]) -> Path | None:
    """One Kaggle CSV (``id,predicted``) of every finished slide's RLE row, in the cohort's order."""
    from ..annotations.rle import read_rle_csv, write_rle_csv

    rows = {}
    for line in lines:
        path = line.get("exports", {}).get("rle-csv")
        if path and not line.get("error"):
            rows.update(read_rle_csv(path))
    if not rows:
        return None
    out = Path(out_dir) / COHORT_CSV
    write_rle_csv(out, rows, column="predicted")
    return out
