"""Any annotation file as an instance label image over a slide, at a pyramid level that fits memory.

GeoJSON polygons are rasterised directly at the reduced level; RLE and mask files are decoded at
full resolution and subsampled. The label image covers the slide: pixel i of it spans slide pixels
[i*f, (i+1)*f) for the returned downsample f.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.measure import label as connected_components

from ..errors import HubmapInputError

MAX_LABEL_SIDE = 8192
POLYGON_SUFFIXES = (".json", ".geojson")
MASK_SUFFIXES = (".png", ".tif", ".tiff")


def overlay_downsample(full_shape: tuple[int, int], max_side: int = MAX_LABEL_SIDE) -> int:
    """Smallest power-of-two factor that brings the longest side to at most ``max_side``."""
    factor = 1
    while max(full_shape) / factor > max_side:
        factor *= 2
    return factor


def load_annotation_labels(path, full_shape: tuple[int, int], max_side: int = MAX_LABEL_SIDE, rle_id: str | None = None):
    """(int32 labels, downsample) of the annotations in ``path`` for a slide of ``full_shape``."""
    from . import read_annotations, rasterize, read_mask, read_rle_csv, rle_decode

    path = Path(path)
    factor = overlay_downsample(full_shape, max_side)
    shape = tuple(-(-s // factor) for s in full_shape)
    suffix = path.suffix.lower()
    if suffix in POLYGON_SUFFIXES:
        return rasterize(read_annotations(path), shape, downsample=factor), factor
    if suffix == ".csv":
        rows = read_rle_csv(path)
        key = rle_id if rle_id is not None else _only_row(rows, path)
        if key not in rows:
            raise HubmapInputError(path, f"no row with id {key!r}")
        mask = rle_decode(rows[key], full_shape, source=path)
        return _instances(mask[::factor, ::factor]), factor
    if suffix in MASK_SUFFIXES:
        mask = read_mask(path)
        if mask.shape[:2] != tuple(full_shape):
            raise HubmapInputError(path, f"mask is {mask.shape[0]}x{mask.shape[1]} but the slide is {full_shape[0]}x{full_shape[1]}")
        return _instances(mask[::factor, ::factor]), factor
    raise HubmapInputError(path, "unknown annotation format (expected .geojson/.json, .csv or a mask image)")


def _only_row(rows: dict, path: Path) -> str:
    if len(rows) != 1:
        raise HubmapInputError(path, f"has {len(rows)} rows; say which id to use")
    return next(iter(rows))


def _instances(mask: np.ndarray) -> np.ndarray:
    if mask.dtype == bool:
        return connected_components(mask, connectivity=2).astype(np.int32)
    return mask.astype(np.int32)
