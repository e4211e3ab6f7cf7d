"""Lazy pyramid levels: numpy-like (H, W, 3) uint8 arrays that read only the region asked for.

A level wraps a *region source*: any object with ``height``, ``width`` and
``read(rows: slice, cols: slice) -> (h, w, 3) uint8`` where the slices are normalised
(start/stop inside the image, positive step). napari indexes the levels of a multiscale layer
with tuples of slices; :class:`SlideLevel` turns those into one ``read`` call.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np


class RegionSource(Protocol):
    """What a level needs from a file: its size and a region read (steps allowed)."""

    height: int
    width: int

    def read(self, rows: slice, cols: slice) -> np.ndarray: ...


def _normalise_axis(key, size: int) -> tuple[slice, bool]:
    """Turn an int or slice on an axis of ``size`` into (positive-step slice, axis dropped)."""
    if isinstance(key, (int, np.integer)):
        index = int(key) + size if key < 0 else int(key)
        if not 0 <= index < size:
            raise IndexError(f"index {key} is out of bounds for axis of size {size}")
        return slice(index, index + 1, 1), True
    if isinstance(key, slice):
        start, stop, step = key.indices(size)
        if step < 0:
            raise IndexError("negative steps are not supported on slide levels")
        stop = max(stop, start)
        return slice(start, stop, step), False
    raise TypeError(f"unsupported index {key!r} on a slide level")


def _expand_key(key) -> tuple:
    """Expand ``key`` to exactly three entries (rows, cols, channels)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = 3 - (len(key) - 1)
        key = key[:at] + (slice(None),) * fill + key[at + 1 :]
    if len(key) > 3:
        raise IndexError(f"too many indices for a slide level: {len(key)}")
    return key + (slice(None),) * (3 - len(key))


def empty_region(rows: slice, cols: slice, fill: int = 255) -> np.ndarray:
    """An (h, w, 3) uint8 block of ``fill`` with the size the slices select."""
    height = len(range(rows.start, rows.stop, rows.step))
    width = len(range(cols.start, cols.stop, cols.step))
    return np.full((height, width, 3), fill, dtype=np.uint8)


class SlideLevel:
    """A lazy (H, W, 3) uint8 array over a region source; indexing reads only that region."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, source: RegionSource):
        self.source = source

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.source.height, self.source.width, 3)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size

    def __len__(self) -> int:
        return self.source.height

    def __getitem__(self, key) -> np.ndarray:
        row_key, col_key, channel_key = _expand_key(key)
        rows, drop_row = _normalise_axis(row_key, self.source.height)
        cols, drop_col = _normalise_axis(col_key, self.source.width)
        if rows.start == rows.stop or cols.start == cols.stop:
            region = empty_region(rows, cols)
        else:
            region = self.source.read(rows, cols)
        region = region[:, :, channel_key]
        if drop_col:
            region = region[:, 0]
        if drop_row:
            region = region[0]
        return region

    def __array__(self, dtype=None, copy=None):
        data = self[:, :, :]
        return data if dtype is None else data.astype(dtype)

    def __repr__(self) -> str:
        return f"SlideLevel(shape={self.shape}, source={type(self.source).__name__})"


class ArraySource:
    """A region source over an in-memory (H, W, 3) uint8 array (PNG/JPEG regions, tests)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.height, self.width = array.shape[:2]

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        return np.ascontiguousarray(self.array[rows, cols])


class SubsampledSource:
    """Level ``factor`` of a pyramid read by nearest-neighbour subsampling of a finer source.

    Used for single-level slides whose level 0 can be read with steps cheaply (memory-mapped
    uncompressed TIFF) until the smoothed pyramid cache exists.
    """

    def __init__(self, base: RegionSource, factor: int):
        self.base = base
        self.factor = factor
        self.height = -(-base.height // factor)
        self.width = -(-base.width // factor)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        f = self.factor
        base_rows = slice(rows.start * f, min(rows.stop * f, self.base.height), rows.step * f)
        base_cols = slice(cols.start * f, min(cols.stop * f, self.base.width), cols.step * f)
        return self.base.read(base_rows, base_cols)


def level_shapes(height: int, width: int, smallest: int = 1024) -> list[tuple[int, int]]:
    """Shapes of a factor-2 pyramid from (height, width) until the longest side is <= smallest."""
    shapes = [(height, width)]
    while max(shapes[-1]) > smallest:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def downsample_mean2(block: np.ndarray) -> np.ndarray:
    """2x2 mean of an (h, w) or (h, w, C) uint8 block (odd edges replicated), rounded, uint8."""
    h, w = block.shape[:2]
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)) + ((0, 0),) * (block.ndim - 2), mode="edge")
    acc = block[0::2, 0::2].astype(np.uint16)
    acc += block[1::2, 0::2]
    acc += block[0::2, 1::2]
    acc += block[1::2, 1::2]
    acc += 2
    return (acc >> 2).astype(np.uint8)


def read_in_blocks(read_box, rows: slice, cols: slice, block: int = 2048) -> np.ndarray:
    """Region [rows, cols] (positive steps) from ``read_box(y0, x0, h, w) -> (h, w, 3) uint8``, a reader of
    whole boxes (OpenSlide, DICOM): boxes of at most ``block`` px a side, so a strided overview read keeps
    only one box in memory at a time."""
    row_idx = np.arange(rows.start, rows.stop, rows.step)
    col_idx = np.arange(cols.start, cols.stop, cols.step)
    out = np.empty((row_idx.size, col_idx.size, 3), dtype=np.uint8)
    for r0 in range(0, row_idx.size, max(1, block // rows.step)):
        r_sel = row_idx[r0 : r0 + max(1, block // rows.step)]
        y0, y1 = int(r_sel[0]), int(r_sel[-1]) + 1
        for c0 in range(0, col_idx.size, max(1, block // cols.step)):
            c_sel = col_idx[c0 : c0 + max(1, block // cols.step)]
            x0, x1 = int(c_sel[0]), int(c_sel[-1]) + 1
            box = read_box(y0, x0, y1 - y0, x1 - x0)
            out[r0 : r0 + r_sel.size, c0 : c0 + c_sel.size] = box[r_sel - y0][:, c_sel - x0]
    return out


def check_levels_decode(sources) -> None:
    """Decode the centre and the last pixel's tile (or frame) of each level now, so that a damaged file
    fails when it opens rather than mid-read (readers of whole boxes: OpenSlide, DICOM)."""
    for source in sources:
        for y, x in ((source.height // 2, source.width // 2), (source.height - 1, source.width - 1)):
            source.read(slice(y, y + 1, 1), slice(x, x + 1, 1))


def rgba_on_background(rgba: np.ndarray, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """(h, w, 4) straight-alpha uint8 -> (h, w, 3) uint8 over ``background`` (opaque pixels unchanged):
    OpenSlide leaves the parts of a slide that were never scanned transparent."""
    rgb = np.ascontiguousarray(rgba[:, :, :3])
    alpha = rgba[:, :, 3]
    if alpha.size == 0 or alpha.min() == 255:
        return rgb
    a = alpha.astype(np.uint16)[:, :, None]
    back = np.asarray(background, dtype=np.uint16)[None, None, :]
    return ((rgb.astype(np.uint16) * a + back * (255 - a) + 127) // 255).astype(np.uint8)


def as_rgb(array: np.ndarray) -> np.ndarray:
    """An associated image (label, macro) of any common layout as (h, w, 3) uint8."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[2] == 4:
        return rgba_on_background(array)
    if array.shape[2] < 3:
        return np.repeat(array[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])
