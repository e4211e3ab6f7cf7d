"""OME-Zarr images written by other tools (NGFF 0.4 and 0.5), read as probability maps or labels.

Any single-channel multiscale image is a probability map: uint8 0-255, uint16 0-65535 or float 0-1
(the value range from the ``omero`` window when the store has one, else the type's, said in a warning),
served as uint8 0-255 levels like the maps predict writes. Any integer multiscale image (an NGFF
``labels`` image included) is a labels image. Axes other than y and x (t, c, z) must have one element.

Scale: the level-0 ``scale`` of y and x is the map's downscale (full-resolution pixels per map pixel)
when the axes carry no unit. With a physical unit, the map's µm/px is known: given the slide's µm/px
(``--mpp``) the downscale is their ratio, else the map is its own grid (downscale 1, its µm/px recorded
as the slide's). ``--shape HxW`` (the slide's full-resolution size) wins over both. Levels are the
successive halvings of level 0 (the stores' convention); others are left out.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from ..errors import HubmapInputError
from .ngff import kind_of

UNITS_IN_UM = {"micrometer": 1.0, "micron": 1.0, "µm": 1.0, "um": 1.0, "nanometer": 1e-3, "nm": 1e-3,
               "millimeter": 1e3, "mm": 1e3, "centimeter": 1e4, "meter": 1e6}
NOT_NGFF = "not an OME-Zarr image (no NGFF multiscales metadata)"


@dataclass
class NgffImage:
    """What an OME-Zarr image store holds: lazy 2-D levels and what they mean."""

    levels: list["Plane"]
    version: str
    dtype: np.dtype
    scale: tuple[float, float]  # level 0, in ``unit`` (None: no unit, i.e. pixels)
    unit: str | None
    is_labels: bool
    value_range: tuple[float, float] | None  # the omero window (start of 0, end of 1), when recorded


class Plane:
    """One level as a lazy 2-D array (y, x): the other axes held at 0, the values passed through ``convert``."""

    def __init__(self, array, spatial_from: int, convert=None, dtype=None):
        self.array = array
        self.prefix = (0,) * spatial_from
        self.shape = tuple(int(s) for s in array.shape[spatial_from:])
        chunks = getattr(array, "chunks", None)
        self.chunks = tuple(int(c) for c in chunks[spatial_from:]) if chunks else None
        self.convert = convert
        self.dtype = np.dtype(dtype or array.dtype)
        self.ndim = 2
        self.size = self.shape[0] * self.shape[1]

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        values = np.asarray(self.array[self.prefix + key])
        return self.convert(values) if self.convert else values

    def __array__(self, dtype=None, copy=None):
        values = self[:, :]
        return values.astype(dtype) if dtype is not None else values


def is_ngff_image(path) -> bool:
    try:
        _multiscales(zarr.open_group(Path(path), mode="r"))
        return True
    except Exception:
        return False


def is_ngff_labels(path) -> bool:
    """An OME-Zarr image that holds labels: marked ``image-label``, or of a wide integer type (int32 and up)."""
    try:
        group = zarr.open_group(Path(path), mode="r")
        multiscale, _, attrs = _multiscales(group)
        dtype = np.dtype(group[multiscale["datasets"][0]["path"]].dtype)
    except Exception:
        return False
    return "image-label" in attrs or (dtype.kind in "iu" and dtype.itemsize >= 4)


def read_ngff(path, *, as_labels: bool) -> NgffImage:
    """The image of an OME-Zarr store (NGFF 0.4 or 0.5) as labels or as a probability map; anything
    else (another zarr, a labels image as a map, a float image as labels) is one clear error."""
    path = Path(path)
    if not path.exists():
        raise HubmapInputError(path, "not found")
    try:
        group = zarr.open_group(path, mode="r")
        multiscales, version, attrs = _multiscales(group)
    except HubmapInputError:
        raise
    except Exception:
        raise HubmapInputError(path, NOT_NGFF) from None
    try:
        return _image(path, group, multiscales, version, attrs, as_labels)
    except HubmapInputError:
        raise
    except Exception as error:  # malformed metadata: missing keys, wrong types, absent arrays
        raise HubmapInputError(path, f"malformed OME-Zarr metadata ({type(error).__name__}: {error})") from None


def _multiscales(group) -> tuple[dict, str, dict]:
    attrs = group.attrs.asdict()
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else None
    if ome is not None and ome.get("multiscales"):  # NGFF 0.5
        return ome["multiscales"][0], str(ome.get("version", "0.5")), ome
    if attrs.get("multiscales"):  # NGFF 0.4 and earlier
        first = attrs["multiscales"][0]
        return first, str(first.get("version", "0.4")), attrs
    raise HubmapInputError(None, NOT_NGFF)


def _axes(multiscale: dict, ndim: int) -> list[dict]:
    axes = multiscale.get("axes") or ["t", "c", "z", "y", "x"][-ndim:]
    return [{"name": a} if isinstance(a, str) else dict(a) for a in axes]


def _image(path: Path, group, multiscale: dict, version: str, attrs: dict, as_labels: bool) -> NgffImage:
    datasets = multiscale["datasets"]
    arrays = [group[d["path"]] for d in datasets]
    axes = _axes(multiscale, arrays[0].ndim)
    names = [a["name"] for a in axes]
    if len(axes) != arrays[0].ndim or names[-2:] != ["y", "x"]:
        raise HubmapInputError(path, f"axes {names} do not end in y, x")
    for axis, size in zip(axes[:-2], arrays[0].shape[:-2]):
        if size != 1:
            what = "channels" if axis.get("type") == "channel" or axis["name"] == "c" else f"{axis['name']} planes"
            raise HubmapInputError(path, f"has {size} {what}; a probability map or labels image has one")
    scales = [_scale(d, multiscale, len(axes)) for d in datasets]
    unit = axes[-1].get("unit") or None
    dtype = np.dtype(arrays[0].dtype)
    if as_labels and dtype.kind not in "iu":
        raise HubmapInputError(path, f"labels must be whole numbers, got {dtype}")
    if not as_labels and "image-label" in attrs:
        raise HubmapInputError(path, "is an NGFF labels image, not a probability map")
    halvings = next((k for k in range(1, len(arrays)) if not _halving(scales[0], scales[k], k)), len(arrays))
    window = _window(attrs)
    convert, served = (None, dtype) if as_labels else _to_uint8(dtype, window, path)
    levels = [Plane(array, len(axes) - 2, convert, served) for array in arrays[:halvings]]  # successive halvings
    return NgffImage(levels, version, dtype, scales[0], unit, as_labels, window)


def _scale(dataset: dict, multiscale: dict, ndim: int) -> tuple[float, float]:
    sy = sx = 1.0
    for transforms in (dataset.get("coordinateTransformations") or [], multiscale.get("coordinateTransformations") or []):
        for transform in transforms:
            if transform.get("type") == "scale":
                values = [float(v) for v in transform["scale"]]
                if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
                    raise HubmapInputError(None, f"bad scale {transform['scale']}")
                sy, sx = sy * values[-2], sx * values[-1]
    return sy, sx


def _halving(base: tuple[float, float], scale: tuple[float, float], k: int) -> bool:
    return all(math.isclose(s, b * 2**k, rel_tol=1e-3) for s, b in zip(scale, base))


def _window(attrs: dict) -> tuple[float, float] | None:
    try:
        window = attrs["omero"]["channels"][0]["window"]
        low, high = float(window.get("min", window["start"])), float(window.get("max", window["end"]))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) and high > low else None


def _to_uint8(dtype: np.dtype, window, path: Path):
    """The converter of a map's values to uint8 0-255 (probability x 255, rounded), and uint8."""
    if dtype == np.uint8 and window in (None, (0.0, 255.0)):
        return None, np.uint8
    if window is None:
        if dtype.kind == "f":
            window = (0.0, 1.0)
        elif dtype == np.uint16:
            window = (0.0, 65535.0)
        else:
            raise HubmapInputError(path, f"a probability map must be uint8, uint16 or float, got {dtype}")
        warnings.warn(f"{path}: no value range recorded; {dtype} values read as probabilities "
                      f"{window[0]:g}-{window[1]:g}", stacklevel=4)
    low, span = window[0], window[1] - window[0]

    def convert(values: np.ndarray) -> np.ndarray:
        scaled = (values.astype(np.float64) - low) * (255.0 / span)
        return np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)

    return convert, np.uint8


def open_foreign(path, kind: str, *, shape=None, mpp=None) -> tuple[list[Plane], dict] | None:
    """(levels, attrs as the store of ``kind`` would record them) of an OME-Zarr image another tool wrote,
    read as labels when ``kind`` is ``"labels"``, else as a probability map; None when ``path`` is one of
    napari-hubmap's stores or no OME-Zarr image (the caller's own checks then speak)."""
    if kind_of(path) is not None or not is_ngff_image(path):
        return None
    image = read_ngff(path, as_labels=kind == "labels")
    return image.levels, foreign_meta(image, Path(path), kind, shape=shape, mpp=mpp)


def foreign_meta(image: NgffImage, path: Path, kind: str, *, shape=None, mpp=None) -> dict:
    """The attrs a napari-hubmap store would record (``kind``, ``downscale``, ``slide_shape``, µm/px),
    worked out from the image's scale and the options."""
    h, w = image.levels[0].shape
    unit_um = UNITS_IN_UM.get(str(image.unit).lower()) if image.unit else None
    if image.unit and unit_um is None:
        raise HubmapInputError(path, f"unknown unit {image.unit!r} of its axes")
    scale_pixels = image.scale[0] if unit_um is None else None
    map_mpp = image.scale[0] * unit_um if unit_um is not None else None
    if shape is not None:
        downscale = max(shape[0] / h, shape[1] / w)
    elif map_mpp is not None:
        downscale = map_mpp / float(mpp) if mpp else 1.0
    else:
        downscale = scale_pixels
    downscale = float(downscale)
    if not math.isfinite(downscale) or downscale <= 0:
        raise HubmapInputError(path, f"cannot tell its scale (downscale {downscale:g})")
    slide_shape = [int(shape[0]), int(shape[1])] if shape is not None else None  # only the user knows it
    meta = {"kind": kind, "downscale": downscale, "slide_shape": slide_shape,
            "foreign": {"ngff": image.version, "dtype": str(image.dtype), "value_range": image.value_range,
                        "unit": image.unit, "scale": list(image.scale)}}
    if mpp:
        meta.update(mpp=float(mpp), mpp_source="option", mpp_file=None)
    elif map_mpp is not None:
        slide_mpp = map_mpp / downscale
        meta.update(mpp=slide_mpp, mpp_source="file", mpp_file=slide_mpp)
    return meta
