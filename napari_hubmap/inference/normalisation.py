"""How tiles become network input: the model card's normalisation, one rule for the engine's tiles and the
int8 graphs' calibration tiles (:mod:`.int8`)."""

from __future__ import annotations

import numpy as np


def normalise(tiles: np.ndarray, normalization: dict) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalised as the card says."""
    scale = float(normalization.get("max_pixel_value", 255.0))
    mean = np.asarray(normalization.get("mean", [0.0, 0.0, 0.0]), np.float32)[:, None, None]
    std = np.asarray(normalization.get("std", [1.0, 1.0, 1.0]), np.float32)[:, None, None]
    data = tiles.transpose(0, 3, 1, 2).astype(np.float32) / scale
    return (data - mean) / std
