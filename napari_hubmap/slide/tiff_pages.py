"""Region reads from one TIFF page (IFD): memory-mapped when uncompressed, else tile decoding.

Uncompressed pages (the usual Kaggle HuBMAP slide) are memory-mapped tile by tile, so a read with a
step (a nearest-neighbour overview) touches only the bytes it needs. Compressed pages go through
tifffile's zarr store, which decodes only the tiles or strips a region overlaps.
"""

from __future__ import annotations

import os

import numpy as np
import tifffile
import zarr

from ..errors import HubmapInputError
from .sniff import TIFF_CODECS, check_claimed_bytes


MAX_CHUNK_BYTES = 1 << 30
"""The most one compressed tile or strip may decode to: every region read decodes whole chunks."""


def check_page_data(page: tifffile.TiffPage, path: str, file_size: int) -> None:
    """Raise if the page's tiles/strips point past the end of the file (truncated copy), or its header claims
    more pixels than its data can hold or one chunk larger than :data:`MAX_CHUNK_BYTES` (checked before any
    allocation, so a tiny file claiming 10**6 x 10**6 pixels is refused at once)."""
    offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
    counts = np.asarray(page.databytecounts, dtype=np.uint64)
    if offsets.size == 0:
        raise HubmapInputError(path, "TIFF page has no image data")
    ends = offsets + counts
    if int(ends.max()) > file_size:
        missing = int(ends.max()) - file_size
        raise HubmapInputError(
            path, f"file is truncated: image data runs {missing} bytes past its end ({file_size} bytes)"
        )
    check_page_claims(page, path)


def check_page_claims(page: tifffile.TiffPage, path) -> None:
    """The page's chunk size and pixel count must be ones its data can hold (see :func:`check_page_data`)."""
    itemsize = np.dtype(page.dtype).itemsize if page.dtype is not None else 1
    chunk_bytes = int(np.prod(page.chunks, dtype=np.float64)) * itemsize
    if chunk_bytes > MAX_CHUNK_BYTES and page.compression != 1:  # uncompressed chunks are memory-mapped
        kind = "tile" if page.is_tiled else "strip"
        raise HubmapInputError(path, f"corrupt header: one {kind} of {'x'.join(map(str, page.chunks))} samples decodes "
                                     f"to more than {MAX_CHUNK_BYTES >> 20} MiB")
    counts = [int(c) for c in page.databytecounts]
    needed = int(np.prod(page.chunked, dtype=np.float64))
    if len(counts) < needed:  # tifffile would decode every missing one as empty, one by one
        kind = "tiles" if page.is_tiled else "strips"
        raise HubmapInputError(path, f"corrupt header: the image needs {needed} {kind}, the file lists {len(counts)}")
    if sum(counts) == 0:  # tifffile would fill the whole claimed size with zeros
        raise HubmapInputError(path, "TIFF page has no image data (every tile or strip holds 0 bytes)")
    codec = None if 0 in counts else TIFF_CODECS.get(int(page.compression))
    claimed = page.imagelength * page.imagewidth * page.samplesperpixel * max(page.imagedepth, 1) * itemsize
    check_claimed_bytes(path, claimed, sum(counts), codec,
                        f"a {page.imagewidth}x{page.imagelength}x{page.samplesperpixel} image")


def _uniform_chunks(page: tifffile.TiffPage, chunk_bytes: int) -> bool:
    """True when every chunk has ``chunk_bytes`` bytes and they follow each other in order."""
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if np.any(counts != chunk_bytes):
        return False
    expected = offsets[0] + chunk_bytes * np.arange(offsets.size, dtype=np.int64)
    return bool(np.array_equal(offsets, expected))


def _memmap_layout(page: tifffile.TiffPage, byteorder: str):
    """(shape, axes) of a memmap over the page's data, or None when it cannot be mapped."""
    if page.compression != 1 or page.fillorder != 1 or page.bitspersample not in (8, 16):
        return None
    if page.imagedepth != 1:
        return None
    samples = page.samplesperpixel
    planar = samples > 1 and page.planarconfig == 2
    height, width = page.imagelength, page.imagewidth
    itemsize = page.bitspersample // 8
    if page.is_tiled:
        th, tw = page.tilelength, page.tilewidth
        nty, ntx = -(-height // th), -(-width // tw)
        if planar:
            shape, axes = (samples, nty, ntx, th, tw), "SyxYX"
            chunk = th * tw * itemsize
        else:
            shape, axes = (nty, ntx, th, tw, samples), "yxYXS"
            chunk = th * tw * samples * itemsize
        return (shape, axes) if _uniform_chunks(page, chunk) else None
    if not page.is_contiguous:
        return None
    if planar:
        return (samples, height, width), "SYX"
    return (height, width, samples), "YXS"


TILES_PER_MAP = 8  # tiles mapped at once: bounds resident pages of an overview read


class PageReader:
    """Reads regions of one TIFF page as (h, w, samples) arrays of the page's dtype."""

    def __init__(self, page: tifffile.TiffPage, path: str, byteorder: str):
        self.path = path
        self.height, self.width = page.imagelength, page.imagewidth
        self.samples = page.samplesperpixel
        self.dtype = np.dtype(byteorder + page.dtype.char)
        self.tile = (page.tilelength, page.tilewidth) if page.is_tiled else None
        layout = _memmap_layout(page, byteorder)
        self.memmapped = layout is not None
        self._zarr = None
        if layout is not None:
            self._map_shape, self.axes = layout
            self._offset = int(page.dataoffsets[0])
        else:
            self.axes = page.axes
            self._zarr = zarr.open_array(page.aszarr(), mode="r")

    def _map(self, first: int = 0, count: int | None = None) -> np.memmap:
        """Map entries [first, first+count) of the data's first axis, only for one read.

        Mapping per read (and per band of tiles) keeps the resident pages of a strided overview
        read bounded, whatever the slide size.
        """
        shape = self._map_shape
        count = shape[0] - first if count is None else count
        stride = int(np.prod(shape[1:])) * self.dtype.itemsize
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self._offset + first * stride, shape=(count, *shape[1:]))

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """Region [rows, cols] (positive steps) as (h, w, samples)."""
        try:
            if self._zarr is not None:
                return self._read_zarr(rows, cols)
            if self.axes in ("YXS", "SYX"):
                return self._read_contiguous(rows, cols)
            return self._read_tiled(rows, cols)
        except (ValueError, OSError, RuntimeError) as exc:
            raise HubmapInputError(self.path, f"cannot decode image data ({exc})") from exc

    def _read_zarr(self, rows: slice, cols: slice) -> np.ndarray:
        axes = self.axes
        key = tuple(rows if a == "Y" else cols if a == "X" else slice(None) for a in axes)
        data = np.asarray(self._zarr[key])
        order = [axes.index("Y"), axes.index("X")] + [i for i, a in enumerate(axes) if a not in "YX"]
        data = data.transpose(order)
        return data.reshape(data.shape[0], data.shape[1], -1)

    def _prefetch(self, offsets: np.ndarray, length: int) -> None:
        """Ask the kernel to read these byte ranges now, all at once (deep I/O queue).

        An overview read with a step touches one small piece of data per tile row; faulting
        them in one by one waits for the disk each time, prefetching first is ~3x faster cold.
        """
        if not hasattr(os, "posix_fadvise") or offsets.size < 64:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for offset in offsets.tolist():
                os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def _read_contiguous(self, rows: slice, cols: slice) -> np.ndarray:
        if self.axes == "YXS":
            row_bytes = self.width * self.samples * self.dtype.itemsize
            if rows.step > 1:
                row_idx = np.arange(rows.start, rows.stop, rows.step, dtype=np.int64)
                self._prefetch(self._offset + row_idx * row_bytes, row_bytes)
            band = self._map(rows.start, rows.stop - rows.start)
            return np.array(band[:: rows.step, cols])
        return np.array(self._map()[:, rows, cols].transpose(1, 2, 0))

    def _read_tiled(self, rows: slice, cols: slice) -> np.ndarray:
        th, tw = self.tile
        row_idx = np.arange(rows.start, rows.stop, rows.step)
        col_idx = np.arange(cols.start, cols.stop, cols.step)
        out = np.empty((row_idx.size, col_idx.size, self.samples), dtype=self.dtype)
        if self.axes == "SyxYX":
            whole = self._map()
            for ty, out_rows, tile_rows in _tile_runs(row_idx, th, rows.step):
                for tx, out_cols, tile_cols in _tile_runs(col_idx, tw, cols.step):
                    out[out_rows, out_cols] = whole[:, ty, tx, tile_rows, tile_cols].transpose(1, 2, 0)
            return out
        if rows.step > 1:
            self._prefetch_tile_rows(row_idx, col_idx)
        for ty, out_rows, tile_rows in _tile_runs(row_idx, th, rows.step):
            chunk, chunk_start = None, -1
            for tx, out_cols, tile_cols in _tile_runs(col_idx, tw, cols.step):
                if tx // TILES_PER_MAP != chunk_start:  # a new run of tiles: map it, drop the last
                    chunk_start = tx // TILES_PER_MAP
                    first = chunk_start * TILES_PER_MAP
                    count = min(TILES_PER_MAP, self._map_shape[1] - first)
                    chunk = self._map_tiles(ty, first, count)
                out[out_rows, out_cols] = chunk[tx - chunk_start * TILES_PER_MAP, tile_rows, tile_cols]
            del chunk
        return out

    def _prefetch_tile_rows(self, row_idx: np.ndarray, col_idx: np.ndarray) -> None:
        """Prefetch the pixel rows a strided read needs inside each tile it touches."""
        _, ntx, th, tw, samples = self._map_shape
        row_bytes = tw * samples * self.dtype.itemsize
        tile_bytes = th * row_bytes
        tiles_x = np.unique(col_idx // tw)
        tiles = (row_idx // th)[:, None] * ntx + tiles_x[None, :]
        offsets = self._offset + tiles * tile_bytes + (row_idx % th)[:, None] * row_bytes
        self._prefetch(offsets.ravel(), row_bytes)

    def _map_tiles(self, ty: int, first: int, count: int) -> np.memmap:
        """Map ``count`` tiles of tile row ``ty`` from tile column ``first`` (chunky layout)."""
        _, ntx, th, tw, samples = self._map_shape
        tile_bytes = th * tw * samples * self.dtype.itemsize
        offset = self._offset + (ty * ntx + first) * tile_bytes
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=offset, shape=(count, th, tw, samples))


def _tile_runs(indices: np.ndarray, tile: int, step: int):
    """Group sorted pixel indices by tile: (tile index, output slice, slice inside the tile)."""
    if indices.size == 0:
        return
    tiles = indices // tile
    bounds = np.flatnonzero(np.diff(tiles)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [indices.size]])
    for start, stop in zip(starts.tolist(), stops.tolist()):
        t = int(tiles[start])
        first = int(indices[start]) - t * tile
        last = int(indices[stop - 1]) - t * tile
        yield t, slice(start, stop), slice(first, last + 1, step)


def file_size(path: str) -> int:
    return os.stat(path).st_size
