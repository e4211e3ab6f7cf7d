"""Live preview: the post-processing of the region on screen, fast enough for a slider.

:func:`postprocess_region` (and the slide path) work object by object so that any block split gives
the same labels; for the few hundred milliseconds a slider allows, :func:`preview_labels` does the
same steps with whole-region operations where they are exact: threshold, 8-connected labelling,
hole filling on each object's bounding box (4-connected background it encloses), minimum size,
the slide path's own watershed split on each object's padded box, its outline spread to the outline threshold
(:mod:`.pieces`, on the same box) and its outline growth (:mod:`.grow`). Away from the region's edge
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
from .pieces import drop_small, fill_object_holes, padded_windows, raster_order, split_all, spread_cores
from .region import check_probability


def preview_labels(prob: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Instance labels (int32, raster order of first pixel) of a (H, W) uint8 or float map."""
    prob = np.asarray(prob)
    check_probability(prob)
    above = foreground(prob, config.lower_threshold)
    labels, count = ndimage.label(above, structure=EIGHT)
    if config.fill_holes and count:
        labels, count = fill_object_holes(labels, count)
    if config.spreads and count:  # the size floor and the split apply to each object's parts at the threshold
        labels, count = spread_all(labels, prob, config)
    else:
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


def spread_all(labels: np.ndarray, prob: np.ndarray, config: PostprocessConfig) -> tuple[np.ndarray, int]:
    """Every object found at the lower threshold replaced by its spread parts (:func:`.pieces.spread_cores`), each
    on its padded window (:func:`.pieces.padded_windows`) as the slide path does; renumbered in raster order."""
    padded, padded_prob = np.pad(labels, 1), np.pad(prob, 1)
    out = np.zeros(padded.shape, np.int32)
    next_id = 1
    for index, window in padded_windows(labels):
        mask = padded[window] == index
        pieces = spread_cores(mask, padded_prob[window], config)
        if pieces is not None:
            target = out[window]
            target[pieces > 0] = pieces[pieces > 0] + (next_id - 1)
            next_id += int(pieces.max())
    labels = raster_order(out[1:-1, 1:-1])
    return labels, int(labels.max())


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
