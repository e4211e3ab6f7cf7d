"""Mask images (PNG / TIFF): reading into bool masks or int labels, and writing them back.

Reading: the format is told by the content (magic bytes, :mod:`napari_hubmap.slide.sniff`), not the
suffix: PNG (also GIF, BMP) through PIL, TIFF/BigTIFF through tifffile; JPEG, JPEG 2000 and WebP content
is refused as lossy, anything else with an error naming what the content looks like. Channels: 1 (grey),
2 (grey + alpha: the grey), 3 (RGB), 4 (RGBA); any other count is refused with an error naming it.
Binary masks (mode 1, or L with values {0,1} / {0,255}) become bool; colour masks become
"any colour channel nonzero" (pas-tiles: red = glomerulus); other integer images are instance labels.
Writing: bool -> uint8 0/255; labels -> the smallest of uint8/uint16/uint32 that fits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from ..atomic import atomic_path
from ..errors import HubmapInputError
from ..slide.tiff_pages import check_page_claims
from ..slide.tiff_slide import quiet_tifffile
from ..slide.sniff import TIFF_CODECS, TIFF_KINDS, check_claimed_bytes, looks_like, no_pixel_limit, sniff

__all__ = ["read_mask", "write_mask", "MASK_SUFFIXES"]

MASK_SUFFIXES = (".png", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")
_LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jp2", ".webp")
_LOSSY_KINDS = ("jpeg", "jpeg2000", "webp")
_PIL_KINDS = ("png", "gif", "bmp")
_MASK_CHANNELS = {2: "grey + alpha", 3: "RGB", 4: "RGBA"}


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask image: bool (H, W) for binary/colour masks, int32/int64 (H, W) for label images."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        if suffix in _LOSSY_SUFFIXES:
            raise HubmapInputError(path, f"{suffix} is lossy and cannot hold a mask; use PNG or TIFF")
        raise HubmapInputError(path, "file not found" if not path.exists() else "not a file")
    kind = sniff(path)
    if kind in _LOSSY_KINDS or (kind not in _PIL_KINDS + TIFF_KINDS and suffix in _LOSSY_SUFFIXES):
        shown = looks_like(path, kind) if kind in _LOSSY_KINDS else suffix
        raise HubmapInputError(path, f"{shown} is lossy and cannot hold a mask; use PNG or TIFF")
    if kind in TIFF_KINDS:
        array = _read_tiff(path)
    elif kind in _PIL_KINDS:
        array = _read_pil(path)
    else:
        raise HubmapInputError(path, f"not a readable image: its content looks like {looks_like(path, kind)}, "
                                     "not PNG or TIFF")
    return _normalise(array, path)


def _read_pil(path: Path) -> np.ndarray:
    try:
        with no_pixel_limit(), Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise HubmapInputError(path, f"has {image.n_frames} frames; expected one 2-D mask")
            _check_pil_claim(path, image)
            if image.mode in ("P", "PA"):
                return np.asarray(image)[..., 0] if image.mode == "PA" else np.asarray(image)
            return np.asarray(image)
    except HubmapInputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise HubmapInputError(path, f"not a readable image ({exc})") from None


def _check_pil_claim(path: Path, image) -> None:
    """The header's width x height must fit the file's bytes and memory (checked before decoding)."""
    width, height = image.size
    bytes_per_band = 4 if image.mode in ("I", "F") else 2 if image.mode.startswith("I;16") else 1
    decoded = width * height * len(image.getbands()) * bytes_per_band
    codec = {"PNG": "deflate", "GIF": "lzw", "BMP": "none"}.get(image.format or "")
    check_claimed_bytes(path, decoded, path.stat().st_size, codec, f"a {width}x{height} image")


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_tiff_claim(path, series)
            array, axes = series.asarray(), series.axes
    except HubmapInputError:
        raise
    except Exception as exc:  # tifffile raises many kinds on malformed headers
        raise HubmapInputError(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
    if array.shape != tuple(series.shape) or len(axes) != array.ndim:  # tifffile logs a failed decode, returns junk
        raise HubmapInputError(path, f"not a readable TIFF (decoded {array.size} values for a "
                                     f"{'x'.join(map(str, series.shape))} image)")
    return _samples_last(array, axes, path)


def _check_tiff_claim(path: Path, series) -> None:
    """The series' claimed size must fit its data's bytes and memory (checked before decoding)."""
    if 0 in series.shape:
        raise HubmapInputError(path, f"image has zero size ({'x'.join(map(str, series.shape))})")
    pages = [p for p in series.pages if p is not None]
    for page in pages[:1]:
        check_page_claims(page if isinstance(page, tifffile.TiffPage) else page.aspage(), path)
    counts = [int(c) for p in pages for c in getattr(p, "databytecounts", ())]
    compression = getattr(pages[0], "compression", None) if pages else None
    codec = None if not counts or 0 in counts else TIFF_CODECS.get(int(compression or 0))
    what = f"a {'x'.join(map(str, series.shape))} {np.dtype(series.dtype).name} image"
    check_claimed_bytes(path, int(series.nbytes), sum(counts), codec, what)


def _samples_last(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Drop size-1 axes and move a colour-sample axis ('S') last, leaving (H, W) or (H, W, S)."""
    keep = [i for i, size in enumerate(array.shape) if size > 1 or axes[i] in "YX"]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "S" in axes:
        array = np.moveaxis(array, axes.index("S"), -1)
    elif array.ndim > 2:
        raise HubmapInputError(
            path, f"is a stack of shape {array.shape} (axes {axes}); expected one 2-D mask"
        )
    return array


def _normalise(array: np.ndarray, path: Path) -> np.ndarray:
    """bool for binary or colour masks, int labels otherwise."""
    array = _to_2d(array, path)
    if array.size == 0:
        raise HubmapInputError(path, f"image has zero size ({array.shape[1]}x{array.shape[0]})")
    if array.dtype == bool:
        return array
    if array.dtype.kind == "f":
        array = _integral(array, path)
    if array.dtype.kind not in "iu":
        raise HubmapInputError(path, f"unsupported pixel type {array.dtype} for a mask")
    if array.size and array.min() < 0:
        raise HubmapInputError(path, "mask has negative values")
    if array.dtype.itemsize == 1 and _is_binary(array):
        return array != 0
    return _as_labels(array)


def _to_2d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in _MASK_CHANNELS:
        if array.shape[-1] == 2:  # grey + alpha
            return array[..., 0]
        return np.any(array[..., :3] != 0, axis=-1)  # colour (+ alpha): any colour channel set
    if array.ndim == 3:
        raise HubmapInputError(path, f"has {array.shape[-1]} channels; a mask has 1, 2 (grey + alpha), 3 (RGB) or 4 (RGBA)")
    if array.ndim != 2:
        raise HubmapInputError(path, f"has shape {array.shape}; expected a 2-D mask")
    return array


def _integral(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
        raise HubmapInputError(path, "mask has non-integer values (a probability map?)")
    return array.astype(np.int64)


def _is_binary(array: np.ndarray) -> bool:
    present = np.flatnonzero(np.bincount(array.ravel(), minlength=256))
    return set(present.tolist()) <= {0, 1} or set(present.tolist()) <= {0, 255}


def _as_labels(array: np.ndarray) -> np.ndarray:
    top = int(array.max()) if array.size else 0
    return array.astype(np.int32 if top < 2**31 else np.int64, copy=False)


def write_mask(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a bool mask (uint8 0/255) or label image as ``.png`` / ``.tif`` / ``.tiff``, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise HubmapInputError(path, f"cannot write a mask as {suffix or 'no suffix'}; use .png or .tif")
    data = _storage_array(np.asarray(labels), path)
    if suffix == ".png" and data.dtype.itemsize > 2:
        raise HubmapInputError(
            path, f"labels up to {int(data.max())} do not fit a 16-bit PNG; write a .tif instead"
        )
    with atomic_path(path) as tmp:
        if suffix == ".png":
            Image.fromarray(data).save(tmp, format="PNG")
        else:
            _write_tiff(tmp, data)


def _storage_array(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.ndim != 2:
        raise HubmapInputError(path, f"mask must be 2-D, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.uint8) * np.uint8(255)
    if labels.dtype.kind not in "iu":
        raise HubmapInputError(path, f"mask must be bool or integer labels, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise HubmapInputError(path, "labels must not be negative")
    top = int(labels.max()) if labels.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return labels.astype(dtype, copy=False)
    raise HubmapInputError(path, f"label {top} does not fit 32 bits")


def _write_tiff(tmp: Path, data: np.ndarray) -> None:
    big = data.shape[0] >= 1024 and data.shape[1] >= 1024
    tifffile.imwrite(
        tmp,
        data,
        photometric="minisblack",
        compression="zlib",
        tile=(512, 512) if big else None,
        bigtiff=data.nbytes > 2**31,
    )
