"""Convert annotations between polygon JSON, Kaggle RLE CSV and mask images.

Sources by suffix: ``.json``/``.geojson`` (GeoJSON or LabelMe polygons), ``.csv`` (RLE), ``.png``/``.tif``/``.tiff``
(mask).
Targets: ``"rle"`` (CSV ``id,encoding``), ``"geojson"`` (QuPath FeatureCollection), ``"mask"`` (instance
label image). ``downsample`` is the pyramid level of the raster side: polygons and RLE are rasterised
at ``ceil(shape / downsample)`` (``shape`` being the full-resolution shape), and a mask source is taken
to be at that level (its GeoJSON coordinates are scaled back to full resolution). ``labels`` keeps the
polygons of those classes only. An image size recorded in the polygon file (LabelMe) must match ``shape``.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import shapely
from skimage import measure

from ..errors import HubmapInputError
from .geojson import (
    annotations_to_feature_collection,
    labels_to_feature_collection,
    rasterize,
    read_annotation_file,
    write_geojson,
)
from .labelme import check_image_size
from .masks import MASK_SUFFIXES, read_mask, write_mask
from .rle import read_rle_csv, rle_decode, rle_encode, write_rle_csv

__all__ = ["convert_annotations", "load_labels", "parse_shape", "TARGETS"]

TARGETS = ("rle", "geojson", "mask")
_POLYGON_SUFFIXES = (".json", ".geojson")
_OUTPUT_SUFFIXES = {"rle": (".csv",), "geojson": _POLYGON_SUFFIXES, "mask": MASK_SUFFIXES}


def parse_shape(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (also ``H,W`` or ``H X W``) into (H, W)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(text))
    if not match:
        raise HubmapInputError(None, f"bad shape {text!r}: expected HEIGHTxWIDTH, e.g. 951x1514")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 1 or width < 1:
        raise HubmapInputError(None, f"bad shape {text!r}: height and width must be positive")
    return height, width


def convert_annotations(
    src: str | os.PathLike,
    to: str,
    out: str | os.PathLike,
    *,
    shape: tuple[int, int] | None = None,
    downsample: float = 1.0,
    rle_id: str | None = None,
    labels: Iterable[str] | None = None,
) -> Path:
    """Convert ``src`` to ``to`` ("rle", "geojson" or "mask"), written atomically to ``out``.

    ``shape`` (full-resolution H, W) is needed for polygons -> rle/mask and for any RLE source.
    ``labels`` (class names) keeps only those polygons. Returns the output path.
    """
    src, out = Path(src), Path(out)
    _check_target(to, out)
    _check_downsample(downsample)
    if _source_kind(src) == "polygons" and to == "geojson":
        read = read_annotation_file(src, labels)
        if shape is not None:
            check_image_size(src, read.image_shape, shape)
        write_geojson(out, annotations_to_feature_collection(read.annotations))
        return out
    instances, row_id = load_labels(src, shape, downsample=downsample, rle_id=rle_id, labels=labels)
    _write_output(to, out, instances, downsample, rle_id or row_id)
    return out


def load_labels(
    src, shape, *, downsample: float = 1.0, rle_id: str | None = None, labels: Iterable[str] | None = None
) -> tuple[np.ndarray, str]:
    """(instance labels at ``downsample``, row id) of any annotation file; see the module doc."""
    src = Path(src)
    _check_downsample(downsample)
    kind = _source_kind(src)
    if labels is not None and kind != "polygons":
        raise HubmapInputError(src, "a label filter applies to polygon annotations (.json/.geojson) only")
    if kind == "rle":
        row_id, encoding = _pick_row(src, rle_id)
        return _rle_labels(src, encoding, shape, downsample, row_id), row_id
    if kind == "polygons":
        return _polygon_labels(src, shape, downsample, labels), src.stem
    return _mask_labels(src, shape, downsample), src.stem


def _check_target(to: str, out: Path) -> None:
    if to not in TARGETS:
        raise HubmapInputError(None, f"unknown target {to!r}; choose one of {', '.join(TARGETS)}")
    if out.suffix.lower() not in _OUTPUT_SUFFIXES[to]:
        wanted = " or ".join(_OUTPUT_SUFFIXES[to])
        raise HubmapInputError(out, f"output for {to!r} must end in {wanted}")


def _check_downsample(downsample: float) -> None:
    if not (isinstance(downsample, (int, float)) and math.isfinite(downsample) and downsample > 0):
        raise HubmapInputError(None, f"downsample must be a positive number, got {downsample!r}")


def _source_kind(src: Path) -> str:
    suffix = src.suffix.lower()
    if suffix in _POLYGON_SUFFIXES:
        return "polygons"
    if suffix == ".csv":
        return "rle"
    if suffix in MASK_SUFFIXES:
        return "mask"
    raise HubmapInputError(
        src,
        "unsupported source type; expected .json/.geojson (polygons), .csv (RLE) or .png/.tif (mask)",
    )


def _level_shape(src: Path, shape, downsample: float, what: str) -> tuple[int, int]:
    if shape is None:
        raise HubmapInputError(
            src, f"converting {what} needs the full-resolution image shape (HEIGHTxWIDTH, e.g. 951x1514)"
        )
    height, width = (int(v) for v in shape)
    if height < 1 or width < 1:
        raise HubmapInputError(src, f"image shape must be positive, got {height}x{width}")
    return math.ceil(height / downsample), math.ceil(width / downsample)


def _polygon_labels(src: Path, shape, downsample: float, labels: Iterable[str] | None) -> np.ndarray:
    level_shape = _level_shape(src, shape, downsample, "polygons to a raster")
    read = read_annotation_file(src, labels)
    check_image_size(src, read.image_shape, shape)
    _warn_outside(src, [a.geometry for a in read.annotations], shape)
    return rasterize(read.annotations, level_shape, downsample=downsample)


def _warn_outside(src: Path, geometries: list, shape) -> None:
    height, width = (int(v) for v in shape)
    frame = shapely.box(0, 0, width, height)
    outside = sum(not g.intersects(frame) for g in geometries)
    if outside:
        warnings.warn(
            f"{src}: {outside} of {len(geometries)} objects lie outside the {height}x{width} image "
            "(shape is HEIGHTxWIDTH; is it right?)",
            stacklevel=4,
        )


def _pick_row(src: Path, rle_id: str | None) -> tuple[str, str]:
    encodings = read_rle_csv(src)
    if rle_id is not None:
        if rle_id not in encodings:
            raise HubmapInputError(src, f"no row with id {rle_id!r} (ids: {_list_ids(encodings)})")
        return rle_id, encodings[rle_id]
    if len(encodings) == 1:
        return next(iter(encodings.items()))
    if not encodings:
        raise HubmapInputError(src, "the CSV has no rows")
    raise HubmapInputError(
        src, f"the CSV has {len(encodings)} rows; choose one by id (ids: {_list_ids(encodings)})"
    )


def _list_ids(encodings: dict) -> str:
    ids = list(encodings)
    shown = ", ".join(ids[:10])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")


def _rle_labels(src: Path, encoding: str, shape, downsample: float, row_id: str | None = None) -> np.ndarray:
    level_shape = _level_shape(src, shape, downsample, "RLE")
    mask = rle_decode(encoding, tuple(shape), source=src, row=row_id)
    if downsample != 1:
        mask = _downsample_nearest(mask, level_shape, downsample)
    return measure.label(mask, connectivity=2)


def _downsample_nearest(mask: np.ndarray, level_shape: tuple[int, int], downsample: float):
    """Sample the full-resolution pixel under each level pixel's centre."""
    rows, cols = (
        np.minimum(((np.arange(n) + 0.5) * downsample).astype(np.int64), full - 1)
        for n, full in zip(level_shape, mask.shape)
    )
    return mask[np.ix_(rows, cols)]


def _mask_labels(src: Path, shape, downsample: float) -> np.ndarray:
    mask = read_mask(src)
    if shape is not None:
        expected = _level_shape(src, shape, downsample, "a mask")
        if mask.shape != expected:
            raise HubmapInputError(
                src,
                f"mask is {mask.shape[0]}x{mask.shape[1]} but shape {shape[0]}x{shape[1]} at "
                f"downsample {downsample:g} means {expected[0]}x{expected[1]}",
            )
    return measure.label(mask, connectivity=2) if mask.dtype == bool else mask


def _write_output(to: str, out: Path, labels: np.ndarray, downsample: float, row_id: str) -> None:
    if to == "rle":
        write_rle_csv(out, {row_id: rle_encode(labels)})
    elif to == "geojson":
        write_geojson(out, labels_to_feature_collection(labels, downsample=downsample))
    else:
        write_mask(out, labels)
