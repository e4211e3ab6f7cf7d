"""The probability map on disk: an OME-Zarr (NGFF 0.4) multiscale of uint8 (0-255), written by rows.

Level 0 is at the ensemble's output downscale; each lower level halves it. Rows are final once
written. ``progress.json`` inside the store (written atomically after each write) records the
settings hash and how many rows are final, so a re-run with the same settings resumes and a
cancelled or killed run leaves a readable store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import zarr

from ..atomic import write_text_atomic
from ..slide.levels import downsample_mean2, level_shapes

CHUNK = 512
PROGRESS = "progress.json"


class ProbabilityStore:
    """Writer for ``<stem>.prob.zarr``."""

    def __init__(self, path: Path, group: zarr.Group, settings_hash: str, rows_done: int):
        self.path = path
        self.group = group
        self.settings_hash = settings_hash
        self.rows_done = rows_done
        self.levels = [group[str(k)] for k in range(len(group.attrs["multiscales"][0]["datasets"]))]

    @classmethod
    def open_for_run(cls, path, out_shape, downscale: float, settings: dict, settings_hash: str) -> "ProbabilityStore":
        """Resume a store made with the same settings, else start a new one (replacing the old)."""
        path = Path(path)
        progress = read_progress(path)
        if progress and progress.get("settings_hash") == settings_hash:
            group = zarr.open_group(path, mode="r+")
            return cls(path, group, settings_hash, int(progress.get("rows_done", 0)))
        if path.exists():
            shutil.rmtree(path)
        group = _create(path, out_shape, downscale, settings)
        store = cls(path, group, settings_hash, 0)
        store.save_progress(complete=False)
        return store

    @property
    def complete(self) -> bool:
        return self.rows_done >= self.levels[0].shape[0]

    def write_rows(self, y0: int, rows: np.ndarray) -> None:
        """Write final level-0 rows [y0, y0 + len(rows)) and their share of the lower levels."""
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
        write_text_atomic(self.path / PROGRESS, json.dumps(payload))


def read_progress(path) -> dict | None:
    try:
        return json.loads((Path(path) / PROGRESS).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _create(path: Path, out_shape, downscale: float, settings: dict) -> zarr.Group:
    group = zarr.open_group(path, mode="w", zarr_format=2)
    datasets = []
    for k, (h, w) in enumerate(level_shapes(*out_shape)):
        group.create_array(str(k), shape=(h, w), chunks=(CHUNK, CHUNK), dtype="uint8", fill_value=0)
        scale = float(downscale * 2**k)
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [scale, scale]}]})
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": path.name,
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": datasets,
            "type": "mean",
        }
    ]
    group.attrs["napari_hubmap"] = {"kind": "probability", "downscale": downscale, "scale": 255, **settings}
    return group


def open_probability(path) -> tuple[list[zarr.Array], dict]:
    """(levels, metadata) of a probability store, for viewing or post-processing."""
    group = zarr.open_group(Path(path), mode="r")
    count = len(group.attrs["multiscales"][0]["datasets"])
    meta = dict(group.attrs["napari_hubmap"])
    meta["progress"] = read_progress(path) or {}
    return [group[str(k)] for k in range(count)], meta
