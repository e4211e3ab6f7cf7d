"""Write a synthetic slide as a real tiled (optionally pyramidal) TIFF, tile by tile.

Only one tile is rendered at a time, so memory stays bounded whatever the slide size; the file
appears at its path only when complete (written beside it and renamed), so a crash or a
cancel never leaves a partial slide.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Iterator

import numpy as np
import tifffile

from ..atomic import atomic_path
from ..progress import ProgressCallback, check_cancelled, report
from .layout import Glomerulus, glomeruli
from .render import render_region
from .spec import SynthSpec, ceil_div

_BIGTIFF_BYTES = 2_000_000_000  # classic TIFF offsets are 32-bit; stay well clear of 4 GiB
_MIN_LEVEL_SIDE = 1024  # reduced levels stop once the largest side is at most this


def pyramid_shapes(height: int, width: int, pyramid: bool) -> list[tuple[int, int]]:
    """(rows, cols) of level 0 and, with ``pyramid``, each level half the previous size."""
    shapes = [(height, width)]
    while pyramid and max(shapes[-1]) > _MIN_LEVEL_SIDE:
        h, w = shapes[-1]
        shapes.append((ceil_div(h, 2), ceil_div(w, 2)))
    return shapes


def _tile_count(shape: tuple[int, int], tile: int) -> int:
    """Number of tiles covering a level."""
    return ceil_div(shape[0], tile) * ceil_div(shape[1], tile)


def _level_tiles(spec: SynthSpec, level: int, shape, tile: int, step: Callable[[], None]) -> Iterator[np.ndarray]:
    """Yield the tiles of a level in row-major order, rendering each on demand."""
    factor = 2**level
    for ty in range(0, shape[0], tile):
        for tx in range(0, shape[1], tile):
            step()
            y0, x0 = ty * factor, tx * factor
            y1 = min(spec.height, (ty + tile) * factor)
            x1 = min(spec.width, (tx + tile) * factor)
            yield render_region(spec, y0, y1, x0, x1, downsample=factor)


def _needs_bigtiff(shapes: list[tuple[int, int]]) -> bool:
    """Whether the uncompressed pixels would be too large for a classic TIFF."""
    return sum(h * w * 3 for h, w in shapes) > _BIGTIFF_BYTES


def write_synthetic_tiff(
    path: str | os.PathLike,
    spec: SynthSpec,
    *,
    tile: int = 512,
    pyramid: bool = False,
    compression: str | None = None,
    bigtiff: bool | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> list[Glomerulus]:
    """Write ``spec`` as a tiled RGB TIFF at ``path`` and return its glomeruli.

    Uncompressed by default (like the HuBMAP slides); the resolution tags record ``spec.mpp``
    (pixels per centimetre). With ``pyramid`` the reduced levels (each half the previous, down
    to a largest side <= 1024) are SubIFDs of level 0 with ``subfiletype=1``, each rendered
    procedurally with the matching downsample. ``bigtiff=None`` picks BigTIFF above ~2 GB.
    ``progress`` gets :class:`~napari_hubmap.progress.Progress` in tiles written, of all levels (a constant
    total); setting ``cancel`` stops the write, removes the partial file and raises
    :class:`~napari_hubmap.progress.Cancelled`.
    """
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    shapes = pyramid_shapes(spec.height, spec.width, pyramid)
    total = sum(_tile_count(shape, tile) for shape in shapes)
    bigtiff = _needs_bigtiff(shapes) if bigtiff is None else bigtiff
    done = 0

    def step() -> None:
        nonlocal done
        check_cancelled(cancel, f"writing {os.fspath(path)} was cancelled")
        if done:
            report(progress, done, total)
        done += 1

    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
            for level, shape in enumerate(shapes):
                _write_level(tif, spec, level, shape, tile, compression, len(shapes) - 1, step)
        step()  # the last tile is written: report it, and honour a late cancel
    return glomeruli(spec)


def _write_level(tif, spec: SynthSpec, level: int, shape, tile: int, compression, n_reduced: int, step) -> None:
    """Write one pyramid level (level 0 declares the SubIFDs for the others)."""
    pixels_per_cm = 1e4 / (spec.mpp * 2**level)
    options = dict(
        shape=(*shape, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        planarconfig="contig",
        compression=compression,
        resolution=(pixels_per_cm, pixels_per_cm),
        resolutionunit="CENTIMETER",
        metadata=None,
        maxworkers=1,  # encode tile by tile: threaded encoding buffers hundreds of MB of tiles
    )
    if level == 0:
        options["subifds"] = n_reduced or None
        options["software"] = "napari-hubmap synthetic slide"
    else:
        options["subfiletype"] = 1
    tif.write(_level_tiles(spec, level, shape, tile, step), **options)
