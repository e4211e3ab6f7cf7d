"""Tissue detection on a thumbnail: which parts of a slide hold tissue, so background tiles are skipped.

Tissue is coloured (saturation above a threshold) or dark; glass is bright and grey. The mask is
cleaned with a small closing and opening and slightly dilated, so tile edges that touch tissue
are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

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
    data = rgb.astype(np.float32) / 255.0
    high, low = data.max(axis=2), data.min(axis=2)
    sat = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    mask = (sat > saturation) | (high < darkness)
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_opening(mask, iterations=1)
    return ndimage.binary_dilation(mask, iterations=dilate) if dilate else mask


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
