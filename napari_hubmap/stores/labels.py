"""Instance labels on disk: an OME-Zarr (NGFF 0.4) multiscale of uint32, written block by block.

Level 0 is at the labels' downscale d (full-resolution pixels per label pixel, as in the probability
store it came from); level k holds every 2**k-th pixel of level 0 (nearest neighbour, so labels stay
labels), with the NGFF scale d * 2**k and the translation that keeps pixel centres on the slide.
``attrs["napari_hubmap"]`` records ``kind: "labels"``, ``downscale``, ``slide_shape`` (full-resolution
(H, W), or null when unknown), ``objects`` and how the labels were made. Writers work in a temporary
folder that is renamed over the target only when complete (:func:`napari_hubmap.atomic.atomic_path`).
Names: :func:`~.naming.labels_path`, :func:`~.naming.labels_beside`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import zarr

from ..errors import HubmapInputError
from ..slide.levels import level_shapes
from .foreign import open_foreign
from .ngff import CHUNK, datasets, kind_of, multiscales, open_store

KIND = "labels"
NOT_A_STORE = "not a napari-hubmap labels store (OME-Zarr with napari_hubmap attrs)"

__all__ = ["CHUNK", "KIND", "LabelsStoreWriter", "check_full_shape", "is_labels_store", "open_labels"]


class LabelsStoreWriter:
    """Create a labels store at ``path`` (a fresh folder) and fill it with :meth:`write_block`."""

    def __init__(self, path, shape: tuple[int, int], downscale: float, attrs: dict | None = None, *, name: str | None = None):
        path = Path(path)
        self.path = path
        self.group = zarr.open_group(path, mode="w", zarr_format=2)
        self.shapes = level_shapes(*shape)
        self.levels = [
            self.group.create_array(str(k), shape=s, chunks=(min(CHUNK, s[0]), min(CHUNK, s[1])), dtype="uint32", fill_value=0)
            for k, s in enumerate(self.shapes)
        ]
        levels = datasets(downscale, len(self.shapes), centred=True)
        self.group.attrs["multiscales"] = multiscales(name or path.name, levels, "nearest")
        self.group.attrs["image-label"] = {"version": "0.4"}
        self.attrs = {"kind": KIND, "downscale": float(downscale), "slide_shape": None, "objects": None, **(attrs or {})}
        self.group.attrs["napari_hubmap"] = self.attrs

    def write_block(self, y0: int, x0: int, block: np.ndarray) -> None:
        """Write level-0 pixels at (y0, x0) and the lower levels' pixels they hold."""
        block = np.asarray(block, dtype=np.uint32)
        for k, level in enumerate(self.levels):
            step = 2**k
            ry, rx = (-y0) % step, (-x0) % step
            part = block[ry::step, rx::step]
            if part.size == 0:
                continue
            ly, lx = (y0 + ry) // step, (x0 + rx) // step
            level[ly : ly + part.shape[0], lx : lx + part.shape[1]] = part

    def finish(self, **attrs) -> None:
        self.attrs.update(attrs)
        self.group.attrs["napari_hubmap"] = self.attrs


def is_labels_store(path) -> bool:
    return kind_of(path) == KIND


def open_labels(path) -> tuple[list[zarr.Array], dict]:
    """(levels, metadata) of a labels store; an integer OME-Zarr image another tool wrote (an NGFF labels
    image, :mod:`~napari_hubmap.stores.foreign`) too; anything else is a clear error."""
    return open_foreign(path, KIND) or open_store(path, KIND, NOT_A_STORE, "labels")


def check_full_shape(shape: tuple[int, int], full_shape, downscale: float, source=None) -> tuple[int, int] | None:
    """``full_shape`` as ints, checked against ``shape`` = ceil(full_shape / downscale)."""
    if full_shape is None:
        return None
    full = tuple(int(v) for v in full_shape)
    expected = tuple(math.ceil(v / downscale) for v in full)
    if expected != tuple(shape):
        raise HubmapInputError(
            source,
            f"labels are {shape[0]}x{shape[1]} but a {full[0]}x{full[1]} slide at downscale {downscale:g} "
            f"gives {expected[0]}x{expected[1]}",
        )
    return full
