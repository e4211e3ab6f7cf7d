"""One object at a time: hole filling, minimum size and watershed split on its bounding box.

The object is cut out of the map on its bounding box padded by one pixel (zeros beyond the map's
edge), re-thresholded and re-labelled there; only the component holding its first pixel is kept. So
the result depends only on the object and its padded box, never on how the map was split into
blocks: the whole-array and block-wise paths give the same labels by construction.

Hole filling: holes are background regions (4-connected) that the object encloses; another object
lying in a hole becomes part of this one (it is reported in ``absorbed`` and not processed on its
own), which is what filling holes on the whole mask and labelling afterwards would give.
Watershed: on the Euclidean distance transform of the filled object, seeded by peaks at least
``min_distance`` apart (skimage ``peak_local_max``) or by the distance transform's ``h``-maxima,
with ``compactness`` and 8-connected flooding (so every pixel of the object gets a piece); the pieces are numbered in raster order of their first pixel.
Outline threshold: objects are then found at the lower of the two thresholds, and each is replaced by its parts at
the threshold, spread over it (:func:`.pieces.spread_cores`: the size floor and the split apply to those parts).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .components import EIGHT, Components
from .config import PostprocessConfig, foreground
from .grow import grow_padding, grow_pieces
from .pieces import split, spread_cores
from .source import BlockSource


@dataclass
class ObjectResult:
    """A processed object on its (unpadded) bounding box: local piece labels 1..n, zlib-compressed,
    and the raster index (in the whole map) of each piece's first pixel."""

    y0: int
    x0: int
    height: int
    width: int
    dtype: str
    data: bytes
    firsts: np.ndarray

    @classmethod
    def of(cls, y0: int, x0: int, local: np.ndarray, firsts: np.ndarray) -> "ObjectResult":
        dtype = np.uint8 if firsts.size < 256 else np.uint16 if firsts.size < 65536 else np.uint32
        packed = zlib.compress(np.ascontiguousarray(local, dtype=dtype).tobytes(), 1)
        return cls(y0, x0, local.shape[0], local.shape[1], np.dtype(dtype).str, packed, firsts)

    def local(self) -> np.ndarray:
        flat = np.frombuffer(zlib.decompress(self.data), dtype=np.dtype(self.dtype))
        return flat.reshape(self.height, self.width)


def process_object(
    source: BlockSource, components: Components, index: int, config: PostprocessConfig
) -> tuple[ObjectResult | None, np.ndarray]:
    """(result or None when removed, raster indices of objects absorbed into its holes)."""
    height, width = components.shape
    y0, y1, x0, x1 = (int(v) for v in components.box[index])
    extra = grow_padding(config.grow)  # context the outline's growth needs, beyond the usual one pixel
    window = source.read(y0 - 1 - extra, y1 + 1 + extra, x0 - 1 - extra, x1 + 1 + extra)
    above = foreground(window, config.lower_threshold)
    _blank_outside(above, y0 - 1 - extra, x0 - 1 - extra, height, width)
    inner = (slice(extra, above.shape[0] - extra), slice(extra, above.shape[1] - extra))
    crop = above[inner]
    labels, _ = ndimage.label(crop, structure=EIGHT)
    fy, fx = divmod(int(components.first[index]), width)
    mask = labels == labels[fy - y0 + 1, fx - x0 + 1]
    absorbed = np.zeros(0, dtype=np.int64)
    if config.fill_holes:
        filled = ndimage.binary_fill_holes(mask)
        absorbed = _first_pixels(labels * (filled & ~mask), y0 - 1, x0 - 1, width)
        mask = filled
    if config.spreads:
        pieces = spread_cores(mask, window[inner], config)
        if pieces is None:
            return None, absorbed
    elif int(mask.sum()) < config.min_size:
        return None, absorbed
    else:
        pieces = split(mask, config) if config.watershed else mask.astype(np.int32)
    if config.grow:
        return _grown_result(pieces, above, extra, config.grow, (y0, y1, x0, x1), (height, width)), absorbed
    local = pieces[1:-1, 1:-1]
    firsts = _first_pixels(local, y0, x0, width)
    return ObjectResult.of(y0, x0, local, firsts), absorbed


def _grown_result(pieces, above, extra: int, grow: int, box, shape) -> ObjectResult:
    """The object's ``pieces`` (on its box padded by one) grown on the wider window ``above`` (padded by one
    and ``extra``), cut to the grown box on the map."""
    (y0, y1, x0, x1), (height, width) = box, shape
    wide = np.zeros(above.shape, np.int32)
    wide[extra : above.shape[0] - extra, extra : above.shape[1] - extra] = pieces
    wy0, wx0 = y0 - 1 - extra, x0 - 1 - extra  # the window's origin on the map
    rows, cols = np.arange(above.shape[0]) + wy0, np.arange(above.shape[1]) + wx0
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    grown = grow_pieces(wide, above, grow, inside)
    gy0, gy1 = max(0, y0 - grow), min(height, y1 + grow)
    gx0, gx1 = max(0, x0 - grow), min(width, x1 + grow)
    local = grown[gy0 - wy0 : gy1 - wy0, gx0 - wx0 : gx1 - wx0]
    return ObjectResult.of(gy0, gx0, local, _first_pixels(local, gy0, gx0, width))


def _blank_outside(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> None:
    """Pixels of a padded crop beyond the map are background, whatever the threshold."""
    if y0 < 0:
        crop[: -y0] = False
    if x0 < 0:
        crop[:, : -x0] = False
    if y0 + crop.shape[0] > height:
        crop[height - y0 :] = False
    if x0 + crop.shape[1] > width:
        crop[:, width - x0 :] = False


def _first_pixels(labels: np.ndarray, y0: int, x0: int, width: int) -> np.ndarray:
    """Raster index in the whole map of the first pixel of each label of ``labels``, in label order."""
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    if where.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, first_at = np.unique(flat[where], return_index=True)
    rows, cols = np.divmod(where[first_at], labels.shape[1])
    return ((y0 + rows) * width + x0 + cols).astype(np.int64)
