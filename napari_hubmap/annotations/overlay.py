"""Any annotation file as an instance label image over a slide, at a pyramid level that fits memory.

Pixel i of the returned labels spans slide pixels [i*f, (i+1)*f) for the returned downsample f.
Polygons and RLE are rasterised at that level; a mask file must match the slide's full resolution
and is subsampled.
"""

from __future__ import annotations

import numpy as np

from .convert import load_labels
from .masks import MASK_SUFFIXES

MAX_LABEL_SIDE = 8192


def overlay_downsample(full_shape: tuple[int, int], max_side: int = MAX_LABEL_SIDE) -> int:
    """Smallest power-of-two factor that brings the longest side to at most ``max_side``."""
    factor = 1
    while max(full_shape) / factor > max_side:
        factor *= 2
    return factor


def load_annotation_labels(path, full_shape: tuple[int, int], max_side: int = MAX_LABEL_SIDE, rle_id: str | None = None):
    """(int32 labels, downsample) of the annotations in ``path`` for a slide of ``full_shape``."""
    factor = overlay_downsample(full_shape, max_side)
    if str(path).lower().endswith(tuple(MASK_SUFFIXES)):
        labels, _ = load_labels(path, full_shape, rle_id=rle_id)
        return np.ascontiguousarray(labels[::factor, ::factor]).astype(np.int32), factor
    labels, _ = load_labels(path, full_shape, downsample=factor, rle_id=rle_id)
    return labels.astype(np.int32, copy=False), factor
