"""Label operations on one object's window, shared by the slide path (:mod:`.objects`) and the live preview.

Watershed split of a mask, raster-order numbering, hole filling, the size floor, and the outline spread
(hysteresis): the objects that ``threshold`` finds, each flooded over the connected pixels down to
``outline_threshold`` (``skimage.segmentation.watershed`` on the probability, from those objects, so two never
merge). ``threshold`` decides which glomeruli there are, ``outline_threshold`` where their edge lies: a model
whose card threshold keeps false glomeruli out (0.85-0.95 for the shipped recipe) trims the found ones to their
tuft.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from .components import EIGHT
from .config import PostprocessConfig, foreground


def spread_cores(mask: np.ndarray, prob: np.ndarray, config: PostprocessConfig) -> np.ndarray | None:
    """Pieces (int32, 1..n in raster order) of one object found at ``config.lower_threshold`` (``mask``, holes
    filled, on its window of ``prob``): its parts at ``config.threshold`` (holes filled, those under
    ``min_size`` dropped, split by watershed when asked), each spread over ``mask`` downhill of the
    probability. None when no part is left: the object is not a glomerulus. Both paths call it on the same
    window (the object's box padded by one pixel), so they give the same pieces."""
    cores, count = ndimage.label(foreground(prob, config.threshold) & mask, structure=EIGHT)
    if count and config.fill_holes:
        cores, count = fill_object_holes(cores, count)
    if count and config.min_size > 1:
        cores, count = drop_small(cores, config.min_size)
    if not count:
        return None
    if config.watershed:
        cores = split_all(cores, count, config)
    heights = -np.asarray(prob, dtype=np.float32)
    return raster_order(watershed(heights, markers=cores, mask=mask, connectivity=2))


def split(mask: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Watershed pieces (int32, 1..n in raster order of first pixel) of one object's bool mask."""
    distance = ndimage.distance_transform_edt(mask)
    if config.markers == "h-maxima":
        seeds = h_maxima(distance, config.h).astype(bool) & mask
        markers, count = ndimage.label(seeds, structure=EIGHT)
    else:
        peaks = peak_local_max(distance, min_distance=config.min_distance, labels=mask.astype(np.int32), exclude_border=False)
        markers = np.zeros(mask.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        count = len(peaks)
    if count <= 1:
        return mask.astype(np.int32)
    pieces = watershed(-distance, markers, mask=mask, connectivity=2, compactness=config.compactness)
    return raster_order(pieces)


def raster_order(labels: np.ndarray) -> np.ndarray:
    """Relabel 1..n by the raster order of each label's first pixel (0 stays 0)."""
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    if where.size == 0:
        return np.zeros(labels.shape, dtype=np.int32)
    present, first_at = np.unique(flat[where], return_index=True)
    order = present[np.argsort(first_at)]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    lut[order] = np.arange(1, order.size + 1)
    return lut[labels]


def fill_object_holes(labels: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """Fill each object's holes on its bounding box (objects in a hole join their container, as on
    the slide path); objects are renumbered in raster order when some were absorbed."""
    absorbed = False
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        window = labels[box]
        mine = window == index
        if not mine.any():  # absorbed by an earlier container
            continue
        holes = ndimage.binary_fill_holes(mine) & ~mine
        if holes.any():
            absorbed = absorbed or bool(window[holes].any())
            window[holes] = index
    if not absorbed:
        return labels, count
    labels = raster_order(labels)
    return labels, int(labels.max())


def drop_small(labels: np.ndarray, min_size: int) -> tuple[np.ndarray, int]:
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(sizes.size, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels], int(keep.sum())


def padded_windows(labels: np.ndarray):
    """``(index, window)`` of each object of ``labels``: its bounding box padded by one pixel, in the coordinates of
    ``np.pad(labels, 1)`` (zeros beyond the map), the window the slide path gives each object; labels absent
    (absorbed into a container's hole) are skipped."""
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is not None:
            ys, xs = found
            yield index, (slice(ys.start, ys.stop + 2), slice(xs.start, xs.stop + 2))


def split_all(labels: np.ndarray, count: int, config: PostprocessConfig) -> np.ndarray:
    """Watershed of each object on its padded window (:func:`padded_windows`), as the slide path does; pieces
    are renumbered with everything else in raster order of first pixel."""
    padded = np.pad(labels, 1)
    out = padded.copy()
    next_id = count + 1
    for index, window in padded_windows(labels):
        mask = padded[window] == index
        pieces = split(mask, config)
        n = int(pieces.max())
        if n >= 2:
            target = out[window]
            target[mask] = pieces[mask] + (next_id - 1)
            next_id += n
    return raster_order(out[1:-1, 1:-1])
