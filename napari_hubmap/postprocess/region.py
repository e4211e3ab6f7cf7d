"""Post-processing of an in-memory probability region (the interactive path)."""

from __future__ import annotations

import numpy as np

from ..errors import HubmapInputError
from .config import PostprocessConfig
from .pipeline import labels_array
from .source import BlockSource

REGION_BLOCK = 4096


def check_probability(prob) -> None:
    """A 2-D uint8 (0-255) or float (0-1) map, else a clear error."""
    if len(prob.shape) != 2:
        raise HubmapInputError(None, f"a probability map must be 2-D (H, W), got shape {tuple(prob.shape)}")
    dtype = np.dtype(prob.dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        raise HubmapInputError(None, f"a probability map must be uint8 (0-255) or float (0-1), got {dtype}")


def postprocess_region(prob: np.ndarray, config: PostprocessConfig | None = None) -> np.ndarray:
    """Instance labels (int32, 0 = background) of a (H, W) uint8 0-255 or float 0-1 map.

    Exactly what :func:`napari_hubmap.postprocess.postprocess_slide` writes for the same map, whatever
    its block size; objects are numbered in raster order of their first pixel.
    """
    config = config or PostprocessConfig()
    prob = np.asarray(prob)
    check_probability(prob)
    height, width = prob.shape
    if height == 0 or width == 0:
        return np.zeros(prob.shape, dtype=np.int32)
    block = min(max(height, width), REGION_BLOCK)  # big regions in blocks: same labels, less memory
    return labels_array(BlockSource(prob), config, block)
