"""Pyramid cache for single-level slides: an OME-Zarr (NGFF 0.4) of the reduced levels, built once.

The cache lives in ``$NAPARI_HUBMAP_CACHE`` (default ``~/.cache/napari-hubmap/pyramids``), keyed by
the slide's real path, size and modification time. It holds levels 1..n (each a 2x2 mean of the
level above, stored as (c, y, x) uint8, chunks (3, 512, 512)); level 0 stays in the slide file.
A build writes into ``<name>.partial-<pid>`` and renames it when complete, so a crash never leaves a
cache that looks complete. While a build runs in this process, its partial arrays can be read.
A build reports :class:`~napari_hubmap.progress.Progress` in pixels of the levels read (the total is known
before the first report) and raises :class:`~napari_hubmap.progress.Cancelled` when its ``cancel`` event is
set, leaving no cache (nor a partial one).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import zarr

from ..atomic import remove_left_by_dead_writers, settle_background_writes, write_failures
from ..progress import ProgressCallback, check_cancelled, report
from .levels import RegionSource, downsample_mean2, level_shapes

CHUNK = 512
BLOCK = 4096
FILL = 255


def cache_root() -> Path:
    env = os.environ.get("NAPARI_HUBMAP_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-hubmap" / "pyramids"


def cache_dir_for(slide_path: str | os.PathLike) -> Path:
    real = os.path.realpath(slide_path)
    stat = os.stat(real)
    key = hashlib.sha1(f"{real}|{stat.st_size}|{stat.st_mtime_ns}|v1".encode()).hexdigest()[:16]
    return cache_root() / f"{Path(real).stem}-{key}.ome.zarr"


@dataclass
class BuildState:
    """Progress of a cache build running in this process (``done`` of ``total`` pixels read), its cancel
    event, and where it reports (``on_progress``)."""

    done: int = 0
    total: int = 1
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    error: BaseException | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    on_progress: ProgressCallback | None = None

    def advance(self, amount: int) -> None:
        self.done += amount
        report(self.on_progress, self.done, self.total)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / max(self.total, 1))


_builds: dict[Path, tuple[Path, BuildState]] = {}
_builds_lock = threading.Lock()


def active_builds() -> dict[Path, BuildState]:
    """Cache builds of this process, by final cache folder (running and finished)."""
    with _builds_lock:
        return {final: state for final, (_, state) in _builds.items()}


class PyramidCache:
    """The reduced levels of one slide, read from the finished cache or from a build in progress."""

    def __init__(self, slide_path: str | os.PathLike, shape: tuple[int, int]):
        self.slide_path = os.fspath(slide_path)
        self.final = cache_dir_for(slide_path)
        self.shapes = level_shapes(*shape)[1:]
        self._arrays: dict[int, zarr.Array] = {}
        self._complete = False

    @property
    def complete(self) -> bool:
        if not self._complete and self.final.is_dir():
            try:
                group = zarr.open_group(self.final, mode="r")
                self._complete = bool(group.attrs.get("napari_hubmap", {}).get("complete"))
            except (OSError, ValueError, KeyError):
                self._complete = False
        return self._complete

    @property
    def build_state(self) -> BuildState | None:
        with _builds_lock:
            entry = _builds.get(self.final)
        return entry[1] if entry else None

    def array(self, level: int) -> zarr.Array | None:
        """Level ``level`` (1..n) from the finished cache, or the partial one being built here."""
        if self.complete:
            if level not in self._arrays:
                self._arrays[level] = zarr.open_array(self.final / str(level), mode="r")
            return self._arrays[level]
        with _builds_lock:
            entry = _builds.get(self.final)
        if entry is None or entry[1].finished:
            return None
        try:
            return zarr.open_array(entry[0] / str(level), mode="r")
        except (FileNotFoundError, ValueError, KeyError, zarr.errors.ArrayNotFoundError):
            return None

    def start_build(self, open_base: Callable[[], tuple[RegionSource, Callable[[], None]]],
                    cancel: threading.Event | None = None) -> BuildState:
        """Build in a daemon thread unless complete or already building; returns its state (a new build
        stops when ``cancel``, else the state's own ``cancel``, is set; a running one keeps its own)."""
        with _builds_lock:
            entry = _builds.get(self.final)
            if entry is not None and not entry[1].finished:
                return entry[1]
            state = BuildState(cancel=cancel or threading.Event())
            partial = self.final.with_name(f"{self.final.name}.partial-{os.getpid()}-{threading.get_ident()}")
            _builds[self.final] = (partial, state)
        if self.complete:
            state.finished = True
            return state

        def run() -> None:
            try:
                self.build(open_base, partial, state)
            except BaseException as exc:  # reported through the state, never lost
                state.error = exc
            finally:
                state.finished = True

        state.thread = threading.Thread(target=run, name=f"pyramid-cache {self.final.name}", daemon=True)
        state.thread.start()
        return state

    def build(self, open_base, partial: Path | None = None, state: BuildState | None = None) -> Path:
        """Build the cache now (blocking). Raises :class:`~napari_hubmap.progress.Cancelled` when
        ``state.cancel`` is set (the partial cache removed)."""
        state = state or BuildState()
        partial = partial or self.final.with_name(f"{self.final.name}.partial-{os.getpid()}")
        if self.complete:
            return self.final
        shutil.rmtree(partial, ignore_errors=True)
        _remove_dead_partials(self.final)
        with write_failures(self.final, partial):  # disk full, I/O error: one error naming the cache
            partial.parent.mkdir(parents=True, exist_ok=True)
            base, close = open_base()
            try:
                self._fill(self._create_group(partial), base, state)
            except BaseException:
                settle_background_writes()  # zarr's sibling chunk writes, else they land after the removal
                shutil.rmtree(partial, ignore_errors=True)
                raise
            finally:
                close()
            self._publish(partial)
        return self.final

    def _fill(self, group: zarr.Group, base: RegionSource, state: BuildState) -> None:
        """Every reduced level of ``group``, each from the one above, then the group marked complete."""
        sizes = [(base.height, base.width)] + self.shapes
        state.total = sum(h * w for h, w in sizes[:-1])
        source: RegionSource = base
        for level in range(1, len(self.shapes) + 1):
            target = group[str(level)]
            _downsample_into(source, target, state)
            source = ZarrLevelSource(target)
        group.attrs["napari_hubmap"] = {"complete": True, "source": self.slide_path}

    def _publish(self, partial: Path) -> None:
        try:
            os.replace(partial, self.final)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # else another process published first: keep theirs
                raise
        self._arrays.clear()

    def _create_group(self, path: Path) -> zarr.Group:
        group = zarr.open_group(path, mode="w", zarr_format=2)
        datasets = []
        for level, (h, w) in enumerate(self.shapes, start=1):
            group.create_array(
                str(level), shape=(3, h, w), chunks=(3, CHUNK, CHUNK), dtype="uint8", fill_value=FILL
            )
            scale = float(2**level)
            datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": [1.0, scale, scale]}]})
        group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": Path(self.slide_path).name,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space"},
                    {"name": "x", "type": "space"},
                ],
                "datasets": datasets,
                "type": "mean",
            }
        ]
        group.attrs["napari_hubmap"] = {"complete": False, "source": self.slide_path}
        return group


def _remove_dead_partials(final: Path) -> None:
    """Partial caches of ``final`` whose building process is gone (killed): they never complete, they
    only fill the disk. Those of a live process (another build running) stay."""
    remove_left_by_dead_writers(final.parent, f"{glob.escape(final.name)}.partial-*",
                                lambda name: name.rsplit(".partial-", 1)[1].split("-")[0])


class ZarrLevelSource:
    """Region source over a (3, h, w) uint8 zarr array."""

    def __init__(self, array: zarr.Array):
        self.array = array
        _, self.height, self.width = array.shape

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self.array[:, rows, cols]).transpose(1, 2, 0))


def _downsample_into(source: RegionSource, target: zarr.Array, state: BuildState) -> None:
    """Fill ``target`` (half the size of ``source``) block by block with 2x2 means."""
    for y in range(0, source.height, BLOCK):
        for x in range(0, source.width, BLOCK):
            check_cancelled(state.cancel, "pyramid cache build cancelled")
            rows = slice(y, min(y + BLOCK, source.height), 1)
            cols = slice(x, min(x + BLOCK, source.width), 1)
            reduced = downsample_mean2(source.read(rows, cols))
            ty, tx = y // 2, x // 2
            target[:, ty : ty + reduced.shape[0], tx : tx + reduced.shape[1]] = reduced.transpose(2, 0, 1)
            state.advance((rows.stop - rows.start) * (cols.stop - cols.start))
