"""Tissue detection on a thumbnail: which parts of a slide hold tissue, so background tiles are skipped.

Tissue is coloured (saturation above a threshold) or dark; glass is bright and grey. The mask is
cleaned with a small closing and opening and slightly dilated, so tile edges that touch tissue
are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMBNAIL_MAX_SIDE = 2048


@dataclass
class TissueMask:
    """Boolean mask at ``downsample`` (full-resolution pixels per mask pixel, per axis)."""

    mask: np.ndarray
    downsample: tuple[float, float]

    def any_in(self, y0: float, y1: float, x0: float, x1: float) -> bool:
        """Does the full-resolution box [y0, y1) x [x0, x1) touch tissue?"""
        dy, dx = self.downsample
        r0, r1 = max(int(y0 // dy), 0), min(int(np.ceil(y1 / dy)), self.mask.shape[0])
        c0, c1 = max(int(x0 // dx), 0), min(int(np.ceil(x1 / dx)), self.mask.shape[1])
        return bool(r1 > r0 and c1 > c0 and self.mask[r0:r1, c0:c1].any())

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())


def tissue_from_rgb(rgb: np.ndarray, saturation: float = 0.07, darkness: float = 0.75, dilate: int = 2) -> np.ndarray:
    """Boolean tissue mask of an RGB uint8 thumbnail."""
    channels = cv2.split(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8))
    high = cv2.max(cv2.max(channels[0], channels[1]), channels[2])  # numpy's max over axis 2 is 20x slower
    low = cv2.min(cv2.min(channels[0], channels[1]), channels[2])
    mask = _tissue_table(saturation, darkness)[high, low]
    mask = _morph(mask, cv2.MORPH_CLOSE, 2)
    mask = _morph(mask, cv2.MORPH_OPEN, 1)
    return _morph(mask, cv2.MORPH_DILATE, dilate) if dilate else mask


def _tissue_table(saturation: float, darkness: float) -> np.ndarray:
    """(256, 256) bool: is a pixel with channel max ``high`` and min ``low`` (uint8) tissue? Its HSV
    saturation above ``saturation``, or its value below ``darkness``, in float32 as the rule reads."""
    high = (np.arange(256, dtype=np.float32) / np.float32(255.0))[:, None]
    low = (np.arange(256, dtype=np.float32) / np.float32(255.0))[None, :]
    sat = np.where(high > 0, (high - low) / np.maximum(high, np.float32(1e-6)), np.float32(0.0))
    return (sat > saturation) | (high < darkness)


CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _morph(mask: np.ndarray, op: int, iterations: int) -> np.ndarray:
    """scipy.ndimage's binary closing / opening / dilation (3x3 cross, ``iterations``, nothing beyond the
    border: an erosion eats in from the edge) in OpenCV, 10-20x faster on a 2048 px thumbnail."""
    data = mask.astype(np.uint8)
    border = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
    if op == cv2.MORPH_DILATE:
        return cv2.dilate(data, CROSS, iterations=iterations, **border).astype(bool)
    first, second = (cv2.dilate, cv2.erode) if op == cv2.MORPH_CLOSE else (cv2.erode, cv2.dilate)
    data = first(data, CROSS, iterations=iterations, **border)
    return second(data, CROSS, iterations=iterations, **border).astype(bool)


def slide_thumbnail(slide, max_side: int = THUMBNAIL_MAX_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
    """The smallest pyramid level at least ``max_side/2`` px long (read with a step if needed)."""
    usable = [lv for i, lv in enumerate(slide.levels) if slide.level_holds_pixels(i, exact=False)]
    level = next((lv for lv in reversed(usable) if max(lv.shape[:2]) >= max_side // 2), usable[0])
    step = max(1, int(np.ceil(max(level.shape[:2]) / max_side)))
    thumb = np.asarray(level[::step, ::step])
    return thumb, (slide.height / thumb.shape[0], slide.width / thumb.shape[1])


def detect_tissue(slide, saturation: float = 0.07) -> TissueMask:
    thumb, downsample = slide_thumbnail(slide)
    return TissueMask(tissue_from_rgb(thumb, saturation=saturation), downsample)
