"""Connected components of a thresholded map, found block by block, exactly as on the whole array.

Each block is labelled (8-connectivity) together with one extra row below and one extra column to
its right. Those extra pixels belong to the neighbouring blocks, which label them too (as their top
row / left column), so every adjacency across a border, diagonals and block corners included, shows
up as one pixel carrying two block-local labels. Joining those pairs (a graph's connected components,
scipy.sparse.csgraph) gives the global components; per component we keep what the object pass needs:
its first pixel in raster order (the order skimage.measure.label numbers objects in), its bounding
box and its area. Memory: a few numbers per block-local label and per foreground pixel on block
borders, never a label image of the whole map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from .config import foreground
from .source import BlockSource, iter_blocks

EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Components:
    """Global components sorted by first pixel: ``first`` raster index y * width + x, ``box`` rows
    (y0, y1, x0, x1) with exclusive ends, ``area`` pixel counts."""

    shape: tuple[int, int]
    first: np.ndarray
    box: np.ndarray
    area: np.ndarray

    def __len__(self) -> int:
        return int(self.first.size)

    def index_of_first(self, raster_index: np.ndarray) -> np.ndarray:
        """Component indices whose first pixel is at ``raster_index`` (which must be first pixels)."""
        return np.searchsorted(self.first, raster_index)


class _Pieces:
    """Per block-local label: global id, area, first raster index and box (core pixels only)."""

    def __init__(self):
        self.count = 0
        self.area, self.first, self.box = [], [], []
        self.pixels, self.labels = [], []  # border pixels (raster index) and the piece holding each

    def add_block(self, labels: np.ndarray, y0: int, x0: int, h: int, w: int, width: int) -> None:
        n = int(labels.max()) if labels.size else 0
        base = self.count
        self.count += n
        core = labels[:h, :w]
        area = np.zeros(n, dtype=np.int64)
        first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        box = np.zeros((n, 4), dtype=np.int64)
        flat = core.ravel()
        where = np.flatnonzero(flat)
        values = flat[where]
        if values.size:
            present, first_at = np.unique(values, return_index=True)
            rows, cols = np.divmod(where[first_at], w)
            first[present - 1] = (y0 + rows) * width + x0 + cols
            area[present - 1] = np.bincount(values, minlength=n + 1)[present]
            for label, found in enumerate(ndimage.find_objects(core, max_label=n), start=1):
                if found is not None:
                    box[label - 1] = (y0 + found[0].start, y0 + found[0].stop, x0 + found[1].start, x0 + found[1].stop)
        self.area.append(area)
        self.first.append(first)
        self.box.append(box)
        self._border(labels, y0, x0, h, w, width, base)

    def _border(self, labels, y0, x0, h, w, width, base) -> None:
        """Raster index and piece of each foreground pixel on this block's shared lines."""
        lines = []
        if y0 > 0:  # own top row, also labelled by the block above as its extra row
            lines.append((labels[0, :w], y0 * width + x0 + np.arange(w)))
        if x0 > 0:  # own left column, also labelled by the block to the left
            lines.append((labels[:h, 0], (y0 + np.arange(h)) * width + x0))
        if labels.shape[0] > h:  # extra row: the next block row's top row
            cols = labels.shape[1]
            lines.append((labels[h, :cols], (y0 + h) * width + x0 + np.arange(cols)))
        if labels.shape[1] > w:  # extra column: the next block's left column
            rows = labels.shape[0]
            lines.append((labels[:rows, w], (y0 + np.arange(rows)) * width + x0 + w))
        for values, pixels in lines:
            keep = values > 0
            self.pixels.append(pixels[keep])
            self.labels.append(values[keep].astype(np.int64) + base - 1)

    def merge(self, shape) -> Components:
        area, first, box = (np.concatenate(a) if a else np.zeros((0,) + s, np.int64)
                            for a, s in ((self.area, ()), (self.first, ()), (self.box, (4,))))
        group = self._groups()
        count = int(group.max()) + 1 if group.size else 0
        g_area = np.bincount(group, weights=area, minlength=count).astype(np.int64)
        g_first = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(g_first, group, first)
        g_box = np.empty((count, 4), dtype=np.int64)
        g_box[:, [0, 2]] = np.iinfo(np.int64).max
        g_box[:, [1, 3]] = -1
        has = area > 0
        for col, op in ((0, np.minimum), (1, np.maximum), (2, np.minimum), (3, np.maximum)):
            op.at(g_box[:, col], group[has], box[has, col])
        order = np.argsort(g_first, kind="stable")
        return Components(tuple(shape), g_first[order], g_box[order], g_area[order])

    def _groups(self) -> np.ndarray:
        """Global component id of every piece (pieces sharing a border pixel are joined)."""
        if self.count == 0:
            return np.zeros(0, dtype=np.int64)
        pixels = np.concatenate(self.pixels) if self.pixels else np.zeros(0, np.int64)
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64)
        order = np.lexsort((labels, pixels))
        pixels, labels = pixels[order], labels[order]
        same = pixels[1:] == pixels[:-1]
        a, b = labels[:-1][same], labels[1:][same]
        graph = sparse.coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(self.count, self.count))
        _, group = csgraph.connected_components(graph, directed=False)
        return group.astype(np.int64)


def find_components(
    source: BlockSource,
    threshold: float,
    block: int,
    *,
    step: Callable[[], None] | None = None,
) -> Components:
    """Components of ``source >= threshold`` (8-connected), scanning ``block`` x ``block`` tiles.

    ``step()`` is called after each block (progress and cancellation).
    """
    height, width = source.shape
    pieces = _Pieces()
    for y0, y1, x0, x1 in iter_blocks(source.shape, block):
        window = source.read(y0, min(y1 + 1, height), x0, min(x1 + 1, width))
        labels, _ = ndimage.label(foreground(window, threshold), structure=EIGHT)
        pieces.add_block(labels, y0, x0, y1 - y0, x1 - x0, width)
        if step is not None:
            step()
    return pieces.merge(source.shape)
