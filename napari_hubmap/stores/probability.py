"""The probability map on disk: an OME-Zarr (NGFF 0.4) multiscale of uint8 (0-255), written by rows.

Level 0 is at the ensemble's output downscale; each lower level halves it (mean). Rows are final once
written. The progress file (:data:`~.naming.PROGRESS_FILE`, written atomically after each write)
records the settings hash and how many rows are final, so a re-run with the same settings resumes
and a cancelled or killed run leaves a readable store. ``attrs["napari_hubmap"]`` records ``kind:
"probability"``, ``downscale``, ``scale`` (255) and the run's settings. Torch-free: the inference
engine writes it, post-processing, export and the panels read it with :func:`open_probability`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import zarr

from ..atomic import write_failures, write_text_atomic
from ..jsonio import load_json
from ..slide.levels import downsample_mean2, level_shapes
from .naming import PROBABILITY_SUFFIX, progress_path
from .foreign import open_foreign
from .ngff import CHUNK, datasets, level_arrays, multiscales, open_store

KIND = "probability"
NOT_A_STORE = (f"not a probability store (<slide>{PROBABILITY_SUFFIX} written by napari-hubmap predict) nor an OME-Zarr "
               "single-channel image")

BANDS_FOLDER = "bands"
"""Inside a store split into row bands: one ``<first row>-<end row>.done`` file per finished band."""

__all__ = ["BANDS_FOLDER", "CHUNK", "KIND", "BandWriter", "ProbabilityStore", "band_ranges", "open_probability",
           "read_progress"]


class ProbabilityStore:
    """Writer of a probability map (named by :func:`~.naming.probability_path`)."""

    def __init__(self, path: Path, group: zarr.Group, settings_hash: str, rows_done: int):
        self.path = path
        self.group = group
        self.settings_hash = settings_hash
        self.rows_done = rows_done
        self.levels = level_arrays(group)

    @classmethod
    def open_for_run(cls, path, out_shape, downscale: float, settings: dict, settings_hash: str) -> "ProbabilityStore":
        """Resume a store made with the same settings, else start a new one (replacing the old)."""
        path = Path(path)
        progress = read_progress(path)
        if progress and progress.get("settings_hash") == settings_hash:
            group = zarr.open_group(path, mode="r+")
            _refresh_settings(path, group, settings)
            return cls(path, group, settings_hash, int(progress.get("rows_done", 0)))
        if path.exists():
            shutil.rmtree(path)
        group = _create(path, out_shape, downscale, settings)
        store = cls(path, group, settings_hash, 0)
        store.save_progress(complete=False)
        return store

    @classmethod
    def reopen(cls, path) -> "ProbabilityStore":
        """The store at ``path`` as its progress file records it (settings and rows done), to write on."""
        path = Path(path)
        progress = read_progress(path) or {}
        return cls(path, zarr.open_group(path, mode="r+"), progress.get("settings_hash", ""),
                   int(progress.get("rows_done", 0)))

    @property
    def end(self) -> int:
        """The row after the last this writer writes: the map's height."""
        return self.levels[0].shape[0]

    @property
    def complete(self) -> bool:
        return self.rows_done >= self.end

    def write_rows(self, y0: int, rows: np.ndarray) -> None:
        """Write final level-0 rows [y0, y0 + len(rows)) and their share of the lower levels (a failed
        write: one error naming the store; rows past the progress file's count are redone on resume)."""
        with write_failures(self.path):
            for level in self.levels:
                level[y0 : y0 + rows.shape[0], :] = rows
                if level is self.levels[-1]:
                    break
                y0, rows = y0 // 2, downsample_mean2(rows)

    def mark_rows_done(self, rows_done: int) -> None:
        self.rows_done = rows_done
        self.save_progress(complete=self.complete)

    def save_progress(self, complete: bool) -> None:
        payload = {"settings_hash": self.settings_hash, "rows_done": self.rows_done, "complete": complete}
        write_text_atomic(progress_path(self.path), json.dumps(payload))

    # --- row bands: several processes fill one store ----------------------------------------------

    def band_done(self, first: int, end: int) -> bool:
        return _band_marker(self.path, first, end).exists()

    def finish_bands(self, bands: list[tuple[int, int]]) -> None:
        """Once every band's level-0 rows are written: the lower levels (block by block, as :meth:`write_rows`
        makes them), then the store complete."""
        missing = [band for band in bands if not self.band_done(*band)]
        if missing:
            raise RuntimeError(f"{self.path}: bands {missing} are not finished")
        height = self.levels[0].shape[0]
        with write_failures(self.path):
            for y0 in range(0, height, CHUNK):
                rows = np.asarray(self.levels[0][y0 : y0 + CHUNK, :])
                for level in self.levels[1:]:
                    y0, rows = y0 // 2, downsample_mean2(rows)
                    level[y0 : y0 + rows.shape[0], :] = rows
        self.mark_rows_done(height)


class BandWriter:
    """Writes output rows [first, end) of a store that several processes fill at once: level 0 only (bands
    start at chunk rows, so no two writers share a chunk); :meth:`ProbabilityStore.finish_bands` makes the
    lower levels. The band is marked done when its last row is written; a band not marked is redone whole."""

    def __init__(self, store: ProbabilityStore, first: int, end: int):
        if first % CHUNK or not first < end <= store.levels[0].shape[0]:
            raise ValueError(f"band rows [{first}, {end}) must start at a multiple of {CHUNK} inside the map")
        self.store, self.path, self.first, self.end = store, store.path, first, end
        self.rows_done = first

    @property
    def complete(self) -> bool:
        return self.rows_done >= self.end

    def write_rows(self, y0: int, rows: np.ndarray) -> None:
        rows = rows[: max(0, self.end - y0)]
        with write_failures(self.path):
            self.store.levels[0][y0 : y0 + rows.shape[0], :] = rows

    def mark_rows_done(self, rows_done: int) -> None:
        self.rows_done = min(rows_done, self.end)

    def save_progress(self, complete: bool) -> None:
        if complete:
            marker = _band_marker(self.path, self.first, self.end)
            marker.parent.mkdir(exist_ok=True)
            write_text_atomic(marker, "")


def band_ranges(height: int, band_rows: int) -> list[tuple[int, int]]:
    """Output rows [first, end) of bands of about ``band_rows`` (a multiple of the chunk) covering ``height``."""
    step = max(CHUNK, band_rows - band_rows % CHUNK)
    return [(y, min(y + step, height)) for y in range(0, height, step)]


def _band_marker(path: Path, first: int, end: int) -> Path:
    return Path(path) / BANDS_FOLDER / f"{first}-{end}.done"


def read_progress(path) -> dict | None:
    """The progress a probability store at ``path`` records, or None (none, or unreadable)."""
    try:
        return load_json(progress_path(path), "progress record")
    except (OSError, ValueError):  # missing, not a folder, unreadable, not JSON (HubmapInputError is one)
        return None


def _refresh_settings(path: Path, group: zarr.Group, settings: dict) -> None:
    """A resumed map records this run's settings: the same resume key, so what differs is outside it (the
    models' post-processing defaults, say a threshold saved as the card's default since), which the
    Post-processing panel and ``postprocess`` read from the map."""
    recorded = dict(group.attrs.get("napari_hubmap", {}))
    fresh = {**recorded, **settings}
    if fresh != recorded:
        with write_failures(path):
            group.attrs["napari_hubmap"] = fresh


def _create(path: Path, out_shape, downscale: float, settings: dict) -> zarr.Group:
    with write_failures(path):  # half made: no progress file, so the next run starts it again
        group = zarr.open_group(path, mode="w", zarr_format=2)
        shapes = level_shapes(*out_shape)
        for k, shape in enumerate(shapes):
            group.create_array(str(k), shape=shape, chunks=(CHUNK, CHUNK), dtype="uint8", fill_value=0)
        group.attrs["multiscales"] = multiscales(path.name, datasets(downscale, len(shapes)), "mean")
        group.attrs["napari_hubmap"] = {"kind": KIND, "downscale": downscale, "scale": 255, **settings}
    return group


def open_probability(path, *, shape=None, mpp=None) -> tuple[list[zarr.Array], dict]:
    """(levels, metadata) of a probability store, the metadata with its ``progress`` ({} when none);
    a missing path, another zarr or a labels store is a clear :class:`~napari_hubmap.errors.HubmapInputError`.

    An OME-Zarr image another tool wrote (no napari-hubmap attrs) is read as a map too
    (:mod:`~napari_hubmap.stores.foreign`: uint8 levels, complete); ``shape`` (the slide's full-resolution
    (H, W)) and ``mpp`` (its µm/px) set its scale when its metadata cannot."""
    foreign = open_foreign(path, KIND, shape=shape, mpp=mpp)
    if foreign is not None:
        return foreign[0], {**foreign[1], "progress": {"complete": True}}
    levels, meta = open_store(path, KIND, NOT_A_STORE, "a probability map")
    meta["progress"] = read_progress(path) or {}
    return levels, meta
