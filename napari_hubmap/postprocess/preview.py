"""Live preview: the post-processing of the region on screen, fast enough for a slider.

:func:`postprocess_region` (and the slide path) work object by object so that any block split gives
the same labels; for the few hundred milliseconds a slider allows, :func:`preview_labels` does the
same steps with whole-region operations where they are exact: threshold, 8-connected labelling,
hole filling on each object's bounding box (4-connected background it encloses), minimum size,
the slide path's own watershed split on each object's padded box, and its outline growth (:mod:`.grow`). Away from the region's edge
the result equals :func:`postprocess_region` (tested); at the edge an object is cut where the view
cuts it.

:func:`view_config` rescales the pixel-size parameters for a coarser pyramid level, so that a
zoomed-out preview removes and splits the same objects as the full-resolution result would.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from .components import EIGHT
from .config import PostprocessConfig, foreground
from .grow import grow_padding, grow_pieces
from .objects import raster_order, split
from .region import check_probability


def preview_labels(prob: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Instance labels (int32, raster order of first pixel) of a (H, W) uint8 or float map."""
    prob = np.asarray(prob)
    check_probability(prob)
    above = foreground(prob, config.threshold)
    labels, count = ndimage.label(above, structure=EIGHT)
    if config.fill_holes and count:
        labels, count = fill_object_holes(labels, count)
    if config.min_size > 1 and count:
        labels, count = drop_small(labels, config.min_size)
    if config.watershed and count:
        labels = split_all(labels, count, config)
    if config.grow and count:
        labels = grow_all(labels, above, config.grow)
    return labels.astype(np.int32, copy=False)


def grow_all(labels: np.ndarray, above: np.ndarray, grow: int) -> np.ndarray:
    """Every object (the 8-connected pieces of one object together) grown on its box padded by ``1 + 2 *
    grow`` within the region, as the slide path grows it; renumbered in raster order of first pixel."""
    objects, _ = ndimage.label(labels > 0, structure=EIGHT)
    out = labels.copy()
    pad = 1 + grow_padding(grow)
    height, width = labels.shape
    for index, (ys, xs) in enumerate(ndimage.find_objects(objects), start=1):
        window = (slice(max(0, ys.start - pad), min(height, ys.stop + pad)),
                  slice(max(0, xs.start - pad), min(width, xs.stop + pad)))
        pieces = np.where(objects[window] == index, labels[window], 0)
        grown = grow_pieces(pieces, above[window], grow)
        joins = (grown > 0) & (pieces == 0)
        out[window][joins] = grown[joins]
    return raster_order(out)


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


def split_all(labels: np.ndarray, count: int, config: PostprocessConfig) -> np.ndarray:
    """Watershed of each object on its bounding box padded by one pixel (zeros beyond the map), as
    the slide path does; pieces are renumbered with everything else in raster order of first pixel."""
    padded = np.pad(labels, 1)
    out = padded.copy()
    next_id = count + 1
    for index, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        window = (slice(ys.start, ys.stop + 2), slice(xs.start, xs.stop + 2))  # padded coordinates
        mask = padded[window] == index
        pieces = split(mask, config)
        n = int(pieces.max())
        if n >= 2:
            target = out[window]
            target[mask] = pieces[mask] + (next_id - 1)
            next_id += n
    return raster_order(out[1:-1, 1:-1])


def view_config(config: PostprocessConfig, factor: float) -> PostprocessConfig:
    """``config`` for a map ``factor`` times coarser than the one it was set for: sizes in pixels
    shrink (areas by factor², distances by factor); thresholds and compactness stay."""
    if factor == 1:
        return config
    return dataclasses.replace(
        config,
        min_size=int(round(config.min_size / factor**2)),
        min_distance=max(1, int(round(config.min_distance / factor))),
        h=max(config.h / factor, 1e-3),
        grow=int(round(config.grow / factor)),
    )
