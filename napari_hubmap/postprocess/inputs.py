"""Inputs of ``napari-hubmap evaluate``: a prediction (probability store, labels store or mask image)
and ground truth in any annotation format, brought to the prediction's grid.

The ground truth is rasterised at the prediction's downscale d and shape: polygons and RLE through
:func:`napari_hubmap.annotations.load_labels` at ``ceil(full / d)`` (the full-resolution size comes
from the prediction's store, or ``--shape``), a mask image as it is when it has the prediction's
shape, or sampled at label-pixel centres when it has the full-resolution shape. Everything is held
in memory at the prediction's scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..annotations import MASK_SUFFIXES, load_labels
from ..errors import HubmapInputError
from ..stores.foreign import is_ngff_labels
from ..stores.labels import check_full_shape, is_labels_store, open_labels
from ..stores.probability import open_probability
from .export import load_labels_any, resolve_scale
from .slide import recorded_threshold, slide_shape_of


@dataclass
class Prediction:
    """``kind`` "probability" (``array`` a zarr level, uint8) or "labels" (``array`` labels)."""

    path: Path
    kind: str
    array: object
    downscale: float
    full_shape: tuple[int, int] | None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.array.shape)

    def default_threshold(self) -> float:
        """The models' card threshold recorded in a probability store, else 0.5."""
        recorded = recorded_threshold(self.meta) if self.kind == "probability" else None
        return 0.5 if recorded is None else recorded


def load_prediction(path, full_shape=None, mpp=None) -> Prediction:
    """A probability map, labels store or mask image; OME-Zarr images of other tools too (``full_shape``
    and ``mpp`` set their scale when their metadata cannot)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr" or path.is_dir():
        if path.is_dir() and (is_labels_store(path) or is_ngff_labels(path)):
            levels, meta = open_labels(path)
            d = float(meta.get("downscale", 1.0))
            recorded = tuple(meta["slide_shape"]) if meta.get("slide_shape") else None
            return Prediction(path, "labels", levels[0], d, _checked(levels[0].shape, full_shape, recorded, d, path), meta)
        levels, meta = open_probability(path, shape=full_shape, mpp=mpp)
        d = float(meta["downscale"])
        recorded = None if full_shape else slide_shape_of(meta)
        return Prediction(path, "probability", levels[0], d, _checked(levels[0].shape, full_shape, recorded, d, path), meta)
    labels, _, _, meta = load_labels_any(path)
    d, full = resolve_scale(labels.shape, None, full_shape, 1.0, None, path)
    return Prediction(path, "labels", labels, d, full or tuple(labels.shape), meta)


def _checked(shape, given, recorded, d, path):
    """The full-resolution shape: ``given`` (``--shape``, must fit), else ``recorded`` if it fits."""
    if given is not None:
        return check_full_shape(tuple(shape), given, d, path)
    try:
        return check_full_shape(tuple(shape), recorded, d, path)
    except HubmapInputError:
        return None  # the slide file changed since the map was made


def load_ground_truth(path, prediction: Prediction, rle_id: str | None = None) -> np.ndarray:
    """Ground-truth labels on the prediction's grid."""
    path = Path(path)
    shape, d, full = prediction.shape, prediction.downscale, prediction.full_shape
    if path.suffix.lower() == ".zarr":
        labels = np.asarray(open_labels(path)[0][0])
    elif path.suffix.lower() in MASK_SUFFIXES:
        labels, _ = load_labels(path, None)
        if labels.shape != shape and full is not None and labels.shape == tuple(full):
            rows, cols = (np.minimum(((np.arange(n) + 0.5) * d).astype(np.int64), f - 1) for n, f in zip(shape, full))
            labels = labels[np.ix_(rows, cols)]
    else:
        if full is None:
            if d != 1.0:
                raise HubmapInputError(prediction.path, "the slide's full-resolution size is unknown; give it (--shape HxW)")
            full = shape
        labels, _ = load_labels(path, full, downsample=d, rle_id=rle_id)
    if labels.dtype == bool:
        from skimage import measure

        labels = measure.label(labels, connectivity=2)
    if tuple(labels.shape) != shape:
        raise HubmapInputError(path, f"ground truth is {labels.shape[0]}x{labels.shape[1]} but the prediction is {shape[0]}x{shape[1]}")
    return labels
