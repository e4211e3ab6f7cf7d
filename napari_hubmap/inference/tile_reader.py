"""Working-scale tiles of one slide for the engine: read from the file level nearest the model's scale, shrunk
(area mean) or upsampled to it, mirrored where a tile crosses the slide's edge.

Neighbouring tiles overlap (a 384 px tile at a stride of 288 shares a quarter of its width with each neighbour),
so reading every tile from the file and shrinking it reads and averages those strips again and again: a
6x shrink of a 0.5 µm/px slide reads 2304 px squares to make 384 px tiles. Where a tile is a whole-number
shrink of its level and lies inside the slide, the reader keeps the shrunk pixels in blocks
(:data:`BLOCK` px at the working scale, on a grid fixed to the slide, :data:`CACHE_BYTES` of the most recently
used) and reads only the blocks it does not hold yet. An area mean of whole k x k squares does not depend on
the region it is taken from, so the tiles are the ones a fresh read makes, to the bit.
"""

from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..slide import open_slide

BLOCK = 96
"""Side, in working-scale pixels, of the shrunk blocks a reader keeps: a divisor of the shipped model's tile
(384) and stride (288), so neighbours share whole blocks."""
CACHE_BYTES = 64 << 20
"""Shrunk pixels a reader keeps: a row of tiles across a 100,000 px wide slide at 6x is about 22 MB."""


class TileReader:
    """Reads working-scale tiles of one slide; one instance (own file handles) per thread."""

    def __init__(self, slide_path: str):
        self.slide = open_slide(slide_path)
        self.levels = exact_levels(self.slide)
        self.blocks = ShrunkBlocks()

    def read(self, y: int, x: int, tile: int, downscale: float) -> np.ndarray:
        """(tile, tile, 3) uint8 at ``downscale`` (< 1: upsampled from level 0); mirrored beyond the slide's
        edge (:func:`beyond_edge`)."""
        index = level_for(self.levels, downscale)
        level = self.slide.levels[index]
        factor = downscale / self.slide.downsamples[index]
        size = max(1, int(round(tile * factor)))
        y0, x0 = int(round(y * factor)), int(round(x * factor))
        h, w = level.shape[:2]
        if 0 <= y0 and 0 <= x0 and y0 + size <= h and x0 + size <= w:  # inside the slide (most tiles)
            if size > tile and factor.is_integer() and y0 == y * factor and x0 == x * factor:
                return self.blocks.tile(level, index, int(factor), y, x, tile)
            canvas = level[y0 : y0 + size, x0 : x0 + size]
        else:
            canvas = beyond_edge(level, y0, x0, size)
        return canvas if size == tile else resize_rgb(canvas, tile)


class ShrunkBlocks:
    """A level's pixels shrunk k times, kept in :data:`BLOCK`-sized squares, least recently used dropped first."""

    def __init__(self, limit: int = CACHE_BYTES):
        self.limit = limit
        self.held: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.bytes = 0

    def tile(self, level, index: int, k: int, y: int, x: int, tile: int) -> np.ndarray:
        """The (tile, tile, 3) square at working (y, x) of ``level`` shrunk ``k`` times; inside the level."""
        rows, cols = range(y // BLOCK, (y + tile - 1) // BLOCK + 1), range(x // BLOCK, (x + tile - 1) // BLOCK + 1)
        missing = [(by, bx) for by in rows for bx in cols if (index, k, by, bx) not in self.held]
        if missing:
            self._read(level, index, k, missing)
        out = np.empty((tile, tile, 3), np.uint8)
        for by in rows:
            for bx in cols:
                key = (index, k, by, bx)
                self.held.move_to_end(key)
                block = self.held[key]
                top, left = max(y, by * BLOCK), max(x, bx * BLOCK)
                bottom, right = min(y + tile, by * BLOCK + BLOCK), min(x + tile, bx * BLOCK + BLOCK)
                out[top - y : bottom - y, left - x : right - x] = \
                    block[top - by * BLOCK : bottom - by * BLOCK, left - bx * BLOCK : right - bx * BLOCK]
        self._trim()
        return out

    def _read(self, level, index: int, k: int, missing: list[tuple[int, int]]) -> None:
        """Read the rectangle of blocks around ``missing`` in one go and keep each block of it."""
        h, w = level.shape[0] // k, level.shape[1] // k  # whole working pixels
        by0, by1 = min(b[0] for b in missing), max(b[0] for b in missing)
        bx0, bx1 = min(b[1] for b in missing), max(b[1] for b in missing)
        top, bottom = by0 * BLOCK, min((by1 + 1) * BLOCK, h)
        left, right = bx0 * BLOCK, min((bx1 + 1) * BLOCK, w)
        shrunk = shrink(np.asarray(level[top * k : bottom * k, left * k : right * k]), k)
        for by in range(by0, by1 + 1):
            for bx in range(bx0, bx1 + 1):
                block = shrunk[by * BLOCK - top : (by + 1) * BLOCK - top, bx * BLOCK - left : (bx + 1) * BLOCK - left]
                key = (index, k, by, bx)
                if key not in self.held:
                    self.held[key] = block.copy()
                    self.bytes += block.nbytes

    def _trim(self) -> None:
        while self.bytes > self.limit and len(self.held) > 1:
            _, block = self.held.popitem(last=False)
            self.bytes -= block.nbytes


def beyond_edge(level, y0: int, x0: int, size: int) -> np.ndarray:
    """The ``size`` square of ``level`` at (y0, x0) that crosses the level's edges (the last tile of a row, or a
    slide smaller than a tile, centred in it: :func:`~napari_hubmap.inference.plan.tile_starts`), the slide
    mirrored there (the edge pixel not repeated, as training pads small images): a straight edge of white glass
    through tissue, which no training tile has, draws false glomeruli along it (a tile poking 2 px past a 1600 px
    JPEG did)."""
    h, w = level.shape[:2]
    rows, cols = _mirrored(y0, size, h), _mirrored(x0, size, w)
    block = np.asarray(level[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
    out = np.empty((size, size, *block.shape[2:]), block.dtype)
    for out_rows, block_rows in _runs(rows - rows.min()):  # a few straight runs each way: slices, not gathers
        for out_cols, block_cols in _runs(cols - cols.min()):
            out[out_rows, out_cols] = block[block_rows, block_cols]
    return out


def _runs(index: np.ndarray):
    """``index`` cut into runs that step by +1 or -1: (slice of the output, slice of the source) pairs."""
    breaks = np.flatnonzero(np.abs(np.diff(np.diff(index))) > 0) + 1  # where the step changes
    start = 0
    for stop in [*(b + 1 for b in breaks.tolist()), len(index)]:
        first, last = int(index[start]), int(index[stop - 1])
        step = 1 if last >= first else -1
        yield slice(start, stop), slice(first, None if last + step < 0 else last + step, step)
        start = stop


def _mirrored(start: int, size: int, n: int) -> np.ndarray:
    """Indices start .. start + size - 1 folded into [0, n) by mirroring at n - 1 (and at 0, for slides
    smaller than half a tile)."""
    index = np.arange(start, start + size)
    if n == 1:
        return np.zeros_like(index)
    folded = index % (2 * (n - 1))
    return np.where(folded < n, folded, 2 * (n - 1) - folded)


def exact_levels(slide) -> list[tuple[int, float]]:
    """Levels holding real pixels (file levels, or a finished pyramid cache), with downsamples."""
    return [(i, d) for i, d in enumerate(slide.downsamples) if slide.level_holds_pixels(i)]


def level_for(levels: list[tuple[int, float]], downscale: float) -> int:
    """The coarsest of ``levels`` (index, downsample) not coarser than ``downscale``; the finest one
    when the working scale is finer than the slide itself (its tiles are then upsampled)."""
    fitting = [(d, i) for i, d in levels if d <= downscale + 1e-6]
    return max(fitting)[1] if fitting else min((d, i) for i, d in levels)[1]


def shrink(region: np.ndarray, k: int) -> np.ndarray:
    """(H, W, 3) uint8 with H and W multiples of ``k`` -> (H / k, W / k, 3): each k x k square's mean, rounded
    half to even (as numpy rounds)."""
    if k == 2:  # the common case: uint16 sums, 8x faster
        s = region[0::2, 0::2].astype(np.uint16) + region[1::2, 0::2] + region[0::2, 1::2] + region[1::2, 1::2]
        return ((s + 1 + ((s >> 2) & 1)) >> 2).astype(np.uint8)
    # OpenCV's area average: numpy's rounding, 15-30x faster (k 3-16)
    return cv2.resize(region, (region.shape[1] // k, region.shape[0] // k), interpolation=cv2.INTER_AREA)


def resize_rgb(tile: np.ndarray, size: int) -> np.ndarray:
    """An RGB tile to size x size: shrunk by area means (whole factors: :func:`shrink`; others: OpenCV's area
    weighting, as training shrinks its images), enlarged bilinearly."""
    factor = tile.shape[0] / size
    if factor.is_integer() and factor > 1:
        return shrink(tile, int(factor))
    if factor > 1:  # 11 ms for a 2306 px square, where torch's antialiased bilinear took 50
        return cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA)
    tensor = torch.from_numpy(tile).permute(2, 0, 1)[None].float()
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
