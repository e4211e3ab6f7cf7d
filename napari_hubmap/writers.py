"""npe2 writer contributions for labels layers (no napari import): RLE CSV, GeoJSON, OME-Zarr, TIFF.

Signature of npe2's single-layer writers: ``(path, data, meta) -> [written paths]``. A multiscale
layer's data is a list of levels: level 0 is written. Where the labels sit on the slide comes from
``meta["metadata"]["napari_hubmap"]`` (``downscale``, ``slide_shape``, ``id``) as napari-hubmap's
layers carry it; without it the layer's scale is taken as the downscale (the slide at scale 1) and
the full-resolution size as the labels' size times that downscale. A save that fails (bad placement
metadata, a full disk, no permission) raises one :class:`NapariWriteError`, ``"<path>: <problem>"``:
napari's save path turns any ``ValueError`` (so a :class:`HubmapInputError`) into "not a valid writer"
and drops the reason, while other errors reach the user as they are.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from .annotations import write_geojson
from .errors import HubmapInputError
from .postprocess import export
from .postprocess.export import labels_feature_collection, write_labels_zarr, write_rle_submission
from .stores.naming import slide_stem


class NapariWriteError(OSError):
    """A napari save that failed: ``str`` is ``"<path>: <problem>"`` (an ``OSError``, which napari shows)."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def _failures_named(writer):
    """``writer(path, data, meta)`` whose bad input or disk error is one :class:`NapariWriteError`."""

    @functools.wraps(writer)
    def checked(path: str, data: Any, meta: dict) -> list[str]:
        try:
            return writer(path, data, meta)
        except HubmapInputError as error:
            raise NapariWriteError(path, error.problem if error.path == path else str(error)) from error
        except OSError as error:
            raise NapariWriteError(path, f"cannot write here ({error.strerror or error})") from error

    return checked


def _level0(data: Any):
    return data[0] if isinstance(data, (list, tuple)) else data


def _placement(data, meta: dict) -> tuple[float, tuple[int, int] | None, dict]:
    info = dict((meta.get("metadata") or {}).get("napari_hubmap") or {})
    downscale = info.get("downscale")
    if downscale is None:
        scale = meta.get("scale")
        downscale = float(scale[-1]) if scale is not None and len(scale) else 1.0
    shape = info.get("slide_shape")
    return float(downscale), (tuple(int(v) for v in shape) if shape else None), info


@_failures_named
def write_labels_rle(path: str, data: Any, meta: dict) -> list[str]:
    """Kaggle submission CSV (``id,predicted``) at the slide's full resolution."""
    labels = _level0(data)
    downscale, full, info = _placement(labels, meta)
    if full is None:
        full = tuple(math.ceil(s * downscale - 1e-9) for s in labels.shape[-2:])
    rle_id = str(info.get("id") or meta.get("name") or slide_stem(path))
    write_rle_submission(path, labels, full, downscale, rle_id)
    return [path]


@_failures_named
def write_labels_geojson(path: str, data: Any, meta: dict) -> list[str]:
    """QuPath GeoJSON: one "Glomerulus" polygon per label, full-resolution coordinates."""
    labels = _level0(data)
    downscale, _, _ = _placement(labels, meta)
    write_geojson(path, labels_feature_collection(labels, downscale))
    return [path]


@_failures_named
def write_labels_ome_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """OME-Zarr labels store (uint32 multiscale, nearest-neighbour levels)."""
    labels = _level0(data)
    downscale, full, _ = _placement(labels, meta)
    write_labels_zarr(path, labels, downscale, full, {"name": meta.get("name")})
    return [path]


@_failures_named
def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """TIFF label image at the layer's own scale."""
    export.write_labels_tiff(path, _level0(data))
    return [path]
