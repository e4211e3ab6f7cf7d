"""Labels out to the formats of the field: Kaggle RLE CSV, QuPath GeoJSON, OME-Zarr labels, TIFF.

Every writer takes a 2-D label array-like (numpy, or a zarr level read block by block) at downscale
d (full-resolution pixels per label pixel) and writes atomically.

* ``rle-csv``: Kaggle submission ``id,predicted``, column-major 1-based RLE of the foreground at the
  slide's **full** resolution (H, W): label pixels are upsampled by nearest neighbour, full pixel R
  (row or column) taking label pixel ``min(floor((R + 0.5) / d), n - 1)`` (for whole d: R // d, the
  last label pixel cut short when H is not a multiple of d). The runs are computed from the small
  image column band by band: each label column repeats for its full columns and each run scales by
  d, so no full-resolution array is made; memory is one band of label columns plus the runs.
  The string equals :func:`napari_hubmap.annotations.rle_encode` of the upsampled mask.
* ``geojson``: one QuPath annotation per label (polygon along pixel edges, full-resolution [x, y],
  classification "Glomerulus" by default), traced object by object on its bounding box.
* ``ome-zarr``: a labels store (:mod:`napari_hubmap.stores.labels`) with the same downscale and slide shape.
* ``tiff``: the labels at their own scale (uint8/16/32, the smallest that fits; zlib, tiled),
  streamed tile by tile from a store.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from ..annotations import labels_to_feature_collection, write_geojson, write_mask, write_rle_csv
from ..annotations.masks import read_mask
from ..atomic import atomic_path
from ..errors import HubmapInputError
from ..stores.labels import CHUNK, LabelsStoreWriter, check_full_shape, is_labels_store, open_labels
from ..stores.naming import slide_stem
from .source import BlockSource, iter_blocks

FORMATS = ("rle-csv", "geojson", "ome-zarr", "tiff")
SUFFIXES = {"rle-csv": (".csv",), "geojson": (".geojson", ".json"), "ome-zarr": (".zarr",), "tiff": (".tif", ".tiff")}
BAND_PIXELS = 1 << 24  # label pixels per column band of the RLE pass
BLOCK = 2048


# --- reading ---------------------------------------------------------------------------------------


def load_labels_any(path) -> tuple[object, float, tuple[int, int] | None, dict]:
    """(level-0 labels, downscale, slide shape or None, metadata) of a labels store or a mask image.

    A store's attrs give its downscale and slide shape; a PNG/TIFF mask is taken at downscale 1 with
    unknown slide shape (bool masks are split into 8-connected objects).
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".zarr":
        levels, meta = open_labels(path)
        shape = meta.get("slide_shape")
        return levels[0], float(meta.get("downscale", 1.0)), (tuple(shape) if shape else None), meta
    mask = read_mask(path)
    if mask.dtype == bool:
        from skimage import measure

        mask = measure.label(mask, connectivity=2).astype(np.int32)
    return mask, 1.0, None, {}


def resolve_scale(shape, downscale: float | None, full_shape, known_downscale: float, known_full, source=None):
    """(downscale, full shape) from explicit options, else what the labels record, else inferred:
    a given full shape with no downscale implies the whole d with ceil(full / d) = shape."""
    if downscale is None and full_shape is not None and known_full is None and known_downscale == 1.0 and tuple(full_shape) != tuple(shape):
        downscale = _infer_downscale(shape, full_shape, source)
    d = float(known_downscale if downscale is None else downscale)
    if not (math.isfinite(d) and d > 0):
        raise HubmapInputError(source, f"downscale must be a positive number, got {d!r}")
    full = known_full if full_shape is None else full_shape
    return d, check_full_shape(tuple(shape), full, d, source)


def _infer_downscale(shape, full_shape, source) -> float:
    (h, w), (fh, fw) = shape, full_shape
    d = max(1, round(fh / h))
    for candidate in (d - 1, d, d + 1):
        if candidate >= 1 and math.ceil(fh / candidate) == h and math.ceil(fw / candidate) == w:
            return float(candidate)
    raise HubmapInputError(source, f"labels {h}x{w} are not a whole downscale of {fh}x{fw}; give the downscale")


# --- RLE at full resolution ------------------------------------------------------------------------


def _starts(n_small: int, n_full: int, downscale: float) -> np.ndarray:
    """First full-resolution index of each label index 0..n_small (n_small -> n_full)."""
    index = np.minimum(((np.arange(n_full) + 0.5) / downscale).astype(np.int64), n_small - 1)
    return np.searchsorted(index, np.arange(n_small + 1), side="left")


def upsample_nearest(labels: np.ndarray, full_shape, downscale: float) -> np.ndarray:
    """Full-resolution nearest-neighbour upsampling (the reference the RLE writer equals)."""
    (h, w), (fh, fw) = labels.shape, full_shape
    rows = np.minimum(((np.arange(fh) + 0.5) / downscale).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(fw) + 0.5) / downscale).astype(np.int64), w - 1)
    return np.asarray(labels)[np.ix_(rows, cols)]


def rle_full_resolution(labels, full_shape, downscale: float) -> str:
    """Kaggle RLE (column-major, 1-based) of ``labels != 0`` upsampled to ``full_shape``."""
    h, w = (int(s) for s in labels.shape)
    fh, fw = (int(s) for s in full_shape)
    check_full_shape((h, w), (fh, fw), downscale)
    row_start, col_start = _starts(h, fh, downscale), _starts(w, fw, downscale)
    source = BlockSource(labels)
    band = max(1, BAND_PIXELS // max(h, 1))
    band = max(CHUNK, band - band % CHUNK) if band >= CHUNK else band
    parts, pending = [], None  # pending: the last run, which may continue into the next band
    for c0 in range(0, w, band):
        c1 = min(c0 + band, w)
        starts, ends = _band_runs(source.read(0, h, c0, c1) != 0, c0, row_start, col_start, fh)
        if pending is not None:
            if starts.size and starts[0] == pending[1]:
                starts[0] = pending[0]
            else:
                starts, ends = np.concatenate(([pending[0]], starts)), np.concatenate(([pending[1]], ends))
        if starts.size:
            pending = (int(starts[-1]), int(ends[-1]))
            parts.append(_pairs_text(starts[:-1], ends[:-1]))
    if pending is not None:
        parts.append(_pairs_text(np.array([pending[0]]), np.array([pending[1]])))
    return " ".join(p for p in parts if p)


def _band_runs(mask: np.ndarray, c0: int, row_start, col_start, full_height: int):
    """Sorted, merged flat [start, end) runs of the full-resolution columns of label columns c0.."""
    columns = np.pad(mask.T, ((0, 0), (1, 1))).astype(np.int8)
    flips = np.diff(columns, axis=1)
    col, pos = np.nonzero(flips)
    kind = flips[col, pos]
    run_col, run_r0, run_r1 = col[kind == 1] + c0, pos[kind == 1], pos[kind == -1]
    full_r0, full_r1 = row_start[run_r0], row_start[run_r1]
    repeats = col_start[run_col + 1] - col_start[run_col]
    which = np.repeat(np.arange(run_col.size), repeats)
    offset = np.arange(which.size) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    full_col = col_start[run_col][which] + offset
    starts = full_col * full_height + full_r0[which]
    ends = full_col * full_height + full_r1[which]
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    keep = np.ones(starts.size, dtype=bool)
    keep[1:] = starts[1:] != ends[:-1]  # a run down to a column's bottom goes on at the next's top
    last = np.append(np.flatnonzero(keep)[1:] - 1, starts.size - 1) if starts.size else np.zeros(0, np.int64)
    return starts[keep], ends[last]


def _pairs_text(starts: np.ndarray, ends: np.ndarray) -> str:
    pairs = np.empty(2 * starts.size, dtype=np.int64)
    pairs[0::2], pairs[1::2] = starts + 1, ends - starts
    return " ".join(map(str, pairs.tolist()))


def write_rle_submission(out, labels, full_shape, downscale: float, rle_id: str) -> Path:
    """Kaggle submission CSV ``id,predicted`` with one row (atomic)."""
    write_rle_csv(out, {rle_id: rle_full_resolution(labels, full_shape, downscale)}, column="predicted")
    return Path(out)


# --- GeoJSON ---------------------------------------------------------------------------------------


def object_boxes(labels, block: int = BLOCK) -> dict[int, tuple[int, int, int, int]]:
    """Bounding box (y0, y1, x0, x1) of every label value, scanning ``block`` tiles."""
    source, boxes = BlockSource(labels), {}
    for y0, y1, x0, x1 in iter_blocks(tuple(labels.shape), block):
        tile = source.read(y0, y1, x0, x1)
        if not tile.any():
            continue
        for value, found in enumerate(ndimage.find_objects(tile), start=1):
            if found is None:
                continue
            box = (y0 + found[0].start, y0 + found[0].stop, x0 + found[1].start, x0 + found[1].stop)
            old = boxes.get(value)
            boxes[value] = box if old is None else (min(old[0], box[0]), max(old[1], box[1]), min(old[2], box[2]), max(old[3], box[3]))
    return dict(sorted(boxes.items()))


def labels_feature_collection(labels, downscale: float = 1.0, class_name: str = "Glomerulus") -> dict:
    """QuPath FeatureCollection of ``labels`` (one feature per label, full-resolution coordinates)."""
    source, features = BlockSource(labels), []
    for value, (y0, y1, x0, x1) in object_boxes(labels).items():
        mask = (source.read(y0, y1, x0, x1) == value).astype(np.uint8)
        traced = labels_to_feature_collection(mask, downsample=downscale, class_name=class_name, offset=(x0 * downscale, y0 * downscale))
        features.extend(traced["features"])
    return {"type": "FeatureCollection", "features": features}


# --- OME-Zarr and TIFF -----------------------------------------------------------------------------


def write_labels_zarr(out, labels, downscale: float = 1.0, full_shape=None, attrs: dict | None = None) -> int:
    """Labels store at ``out`` (atomic); returns the largest label."""
    out, source, top = Path(out), BlockSource(labels), 0
    shape = tuple(int(s) for s in labels.shape)
    with atomic_path(out, is_dir=True) as tmp:
        writer = LabelsStoreWriter(tmp, shape, downscale, {"slide_shape": list(full_shape) if full_shape else None, **(attrs or {})}, name=out.name)
        for y0, y1, x0, x1 in iter_blocks(shape, BLOCK):
            tile = _checked_tile(source.read(y0, y1, x0, x1), out)
            top = max(top, int(tile.max()) if tile.size else 0)
            writer.write_block(y0, x0, tile)
        writer.finish(objects=len(object_boxes(labels)) if top else 0)
    return top


def _checked_tile(tile: np.ndarray, out) -> np.ndarray:
    if tile.dtype == bool:
        return tile.astype(np.uint32)
    if tile.dtype.kind not in "iu":
        raise HubmapInputError(out, f"labels must be integers or bool, got {tile.dtype}")
    if tile.size and (tile.min() < 0 or int(tile.max()) > np.iinfo(np.uint32).max):
        raise HubmapInputError(out, "labels must be in 0..2**32-1")
    return tile


def write_labels_tiff(out, labels) -> Path:
    """TIFF of the labels at their own scale: :func:`write_mask` for numpy, tiles streamed otherwise."""
    out = Path(out)
    if isinstance(labels, np.ndarray):
        write_mask(out, labels)
        return out
    shape, source, tile = tuple(int(s) for s in labels.shape), BlockSource(labels), 512
    top = max((int(_checked_tile(source.read(*b), out).max()) for b in iter_blocks(shape, BLOCK)), default=0)
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if top <= np.iinfo(t).max)

    def tiles():
        for y0, y1, x0, x1 in iter_blocks(shape, tile):
            padded = np.zeros((tile, tile), dtype=dtype)
            padded[: y1 - y0, : x1 - x0] = source.read(y0, y1, x0, x1)
            yield padded

    with atomic_path(out) as tmp:
        tifffile.imwrite(tmp, tiles(), shape=shape, dtype=dtype, tile=(tile, tile), photometric="minisblack",
                         compression="zlib", bigtiff=shape[0] * shape[1] * np.dtype(dtype).itemsize > 2**31)
    return out


# --- one entry point -------------------------------------------------------------------------------


def export_labels(labels_path, fmt: str, out, *, rle_id: str | None = None, full_shape=None,
                  downscale: float | None = None, class_name: str = "Glomerulus") -> dict:
    """Export a labels store or mask image to ``fmt``; returns a JSON-ready summary."""
    labels_path, out = Path(labels_path), Path(out)
    check_output(fmt, out)
    if out.resolve() == labels_path.resolve():
        raise HubmapInputError(out, "output would replace its own input")
    labels, known_d, known_full, meta = load_labels_any(labels_path)
    d, full = resolve_scale(tuple(labels.shape), downscale, full_shape, known_d, known_full, labels_path)
    summary = {"labels": os.fspath(labels_path), "format": fmt, "out": os.fspath(out), "downscale": d,
               "shape": list(labels.shape), "slide_shape": list(full) if full else None, "objects": meta.get("objects")}
    if fmt == "rle-csv":
        if full is None:
            if d != 1.0:
                raise HubmapInputError(labels_path, "the slide's full-resolution size is unknown; give it (--shape HxW)")
            full = tuple(int(s) for s in labels.shape)
        rle_id = rle_id or _default_id(labels_path, meta)
        write_rle_submission(out, labels, full, d, rle_id)
        summary.update(id=rle_id, slide_shape=list(full))
    elif fmt == "geojson":
        collection = labels_feature_collection(labels, d, class_name)
        write_geojson(out, collection)
        summary["objects"] = len(collection["features"])
    elif fmt == "ome-zarr":
        write_labels_zarr(out, labels, d, full, {"source": os.fspath(labels_path)})
    else:
        write_labels_tiff(out, labels)
    return summary


def check_output(fmt: str, out: Path) -> None:
    if fmt not in FORMATS:
        raise HubmapInputError(None, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out.suffix.lower() not in SUFFIXES[fmt]:
        raise HubmapInputError(out, f"output for {fmt} must end in {' or '.join(SUFFIXES[fmt])}")
    if fmt == "ome-zarr" and out.exists() and not is_labels_store(out):
        raise HubmapInputError(out, "exists and is not a labels store; refusing to replace it")


def _default_id(labels_path: Path, meta: dict) -> str:
    """The slide's stem (Kaggle ids are slide file stems), else the labels file's."""
    return slide_stem(meta.get("slide") or labels_path)
