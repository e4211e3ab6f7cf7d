"""Block reads from a 2-D array held in memory or on disk (zarr), with a small chunk cache.

Post-processing reads a map twice: block by block to find the objects, then object by object (in
raster order of their first pixel) to process each on its bounding box. :class:`BlockSource` serves
any window, and for a zarr array keeps the most recently used chunk-aligned tiles decompressed, so
the object pass decompresses each chunk about once. Windows beyond the array's edge are filled with
``fill`` (0), so a crop padded past the edge looks the same whether it comes from a whole array or a
store.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class BlockSource:
    """``read(y0, y1, x0, x1)`` of a 2-D numpy or zarr array; outside the array reads as ``fill``."""

    def __init__(self, array, *, cache_tiles: int | None = None, fill=0):
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        if len(self.shape) != 2:
            raise ValueError(f"expected a 2-D array, got shape {self.shape}")
        self.dtype = np.dtype(array.dtype)
        self.fill = fill
        self.in_memory = isinstance(array, np.ndarray)
        chunks = getattr(array, "chunks", None)
        plain = chunks is not None and len(chunks) == 2 and all(isinstance(c, (int, np.integer)) for c in chunks)
        self.tile = tuple(int(c) for c in chunks) if plain and not self.in_memory else None  # zarr, not dask
        if cache_tiles is None and self.tile is not None:
            cache_tiles = 3 * (-(-self.shape[1] // self.tile[1])) + 4  # ~3 rows of chunks
        self.cache_tiles = cache_tiles or 0
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The window rows [y0, y1) x cols [x0, x1), padded with ``fill`` where outside."""
        height, width = self.shape
        out = np.full((y1 - y0, x1 - x0), self.fill, dtype=self.dtype)
        cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
        if cy0 >= cy1 or cx0 >= cx1:
            return out
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = self._inside(cy0, cy1, cx0, cx1)
        return out

    def _inside(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self.in_memory:
            return self.array[y0:y1, x0:x1]
        if self.tile is None or self.cache_tiles == 0:
            return np.asarray(self.array[y0:y1, x0:x1])
        th, tw = self.tile
        out = np.empty((y1 - y0, x1 - x0), dtype=self.dtype)
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                tile = self._tile(ty, tx)
                ry0, ry1 = max(y0, ty * th), min(y1, (ty + 1) * th)
                rx0, rx1 = max(x0, tx * tw), min(x1, (tx + 1) * tw)
                out[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0] = tile[ry0 - ty * th : ry1 - ty * th, rx0 - tx * tw : rx1 - tx * tw]
        return out

    def _tile(self, ty: int, tx: int) -> np.ndarray:
        key = (ty, tx)
        tile = self._cache.get(key)
        if tile is not None:
            self._cache.move_to_end(key)
            return tile
        th, tw = self.tile
        tile = np.asarray(self.array[ty * th : (ty + 1) * th, tx * tw : (tx + 1) * tw])
        self._cache[key] = tile
        while len(self._cache) > self.cache_tiles:
            self._cache.popitem(last=False)
        return tile


def iter_blocks(shape: tuple[int, int], block: int):
    """(y0, y1, x0, x1) of the ``block`` x ``block`` tiles covering ``shape``, in raster order."""
    height, width = shape
    for y0 in range(0, height, block):
        for x0 in range(0, width, block):
            yield y0, min(y0 + block, height), x0, min(x0 + block, width)


def block_count(shape: tuple[int, int], block: int) -> int:
    return (-(-shape[0] // block)) * (-(-shape[1] // block))
