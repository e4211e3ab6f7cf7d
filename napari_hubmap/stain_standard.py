"""Stain standardisation (Reinhard): an image's tissue colour mapped onto a model's reference colour.

Labs stain and scan differently: HuBMAP's PAS is deep purple, an AIDPATH biopsy's PAS pale pink, one
H&E patient's sections paler than another's. A model trained on some of them sees the others as new
colours. Reinhard's transfer takes the mean and spread of the tissue's CIELAB values in one image (a
whole slide, not a tile: every tile of a slide moves the same way, so tiles still blend seamlessly) and
moves them, channel by channel, onto a reference; glass keeps its colour. A model card that records a
reference (``stain_reference``) was trained on images moved onto it, and every image it predicts is
moved the same way first (:mod:`napari_hubmap.inference.stain` and the engine; the training and validation
images in :mod:`napari_hubmap.training.standardise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TISSUE_MAX_L = 88.0
"""Pixels lighter than this (CIELAB L*, 0-100) are glass unless coloured."""
TISSUE_MIN_CHROMA = 4.0
"""... and pixels greyer than this (a*, b* distance from grey) are glass unless dark."""
MIN_TISSUE_PIXELS = 256
"""Fewer tissue pixels than this: no statistics (an image of glass is left as it is)."""
MIN_STD = 0.5
"""A channel's spread is taken as at least this (a flat channel would divide by zero)."""


@dataclass(frozen=True)
class LabStats:
    """Mean and standard deviation of tissue pixels' L*, a*, b*."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_dict(self) -> dict:
        return {"lab_mean": [round(float(v), 4) for v in self.mean], "lab_std": [round(float(v), 4) for v in self.std]}

    @classmethod
    def from_dict(cls, data: dict) -> "LabStats":
        """From :meth:`as_dict`; ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict) or set(data) != {"lab_mean", "lab_std"}:
            raise ValueError("needs exactly the keys lab_mean and lab_std")
        values = []
        for key in ("lab_mean", "lab_std"):
            numbers = data[key]
            if (not isinstance(numbers, list) or len(numbers) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in numbers)):
                raise ValueError(f"{key} must be 3 finite numbers, got {numbers!r}")
            values.append(tuple(float(v) for v in numbers))
        if min(values[1]) <= 0:
            raise ValueError("lab_std values must be > 0")
        return cls(values[0], values[1])


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> float32 CIELAB (L* 0-100, D65, as OpenCV computes it)."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def tissue_pixels(lab: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels of ``lab`` that are tissue (dark or coloured), not glass."""
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    return (lab[..., 0] < TISSUE_MAX_L) & (chroma > TISSUE_MIN_CHROMA)


def tissue_stats(images) -> LabStats | None:
    """The tissue statistics of one image or of several pooled (one slide's tiles); None with too little tissue."""
    pixels = []
    for rgb in [images] if isinstance(images, np.ndarray) else images:
        lab = to_lab(np.ascontiguousarray(rgb))
        pixels.append(lab[tissue_pixels(lab)])
    values = np.concatenate(pixels) if pixels else np.zeros((0, 3), np.float32)
    if len(values) < MIN_TISSUE_PIXELS:
        return None
    values = values.astype(np.float64)
    return LabStats(_floats(values.mean(0)), _floats(np.maximum(values.std(0), MIN_STD)))


def mean_stats(stats) -> LabStats | None:
    """The average of several images' statistics (a training set's reference); None when there are none."""
    stats = [s for s in stats if s is not None]
    if not stats:
        return None
    return LabStats(_floats(np.mean([s.mean for s in stats], 0)), _floats(np.mean([s.std for s in stats], 0)))


@dataclass(frozen=True)
class LabSpread:
    """How the training images' tissue statistics vary: per channel, the mean and the spread (standard
    deviation) of their means and of their standard deviations; templates for stain augmentation are drawn
    from it (:class:`napari_hubmap.training.stain.LabTemplateTransfer`)."""

    mean_of_means: tuple[float, float, float]
    spread_of_means: tuple[float, float, float]
    mean_of_stds: tuple[float, float, float]
    spread_of_stds: tuple[float, float, float]

    def draw(self, rng: np.random.Generator) -> LabStats:
        """One template: each of the six numbers drawn from a normal distribution (L* kept in 0-100, each
        standard deviation at least a quarter of its mean, never below ``MIN_STD``)."""
        mean = rng.normal(self.mean_of_means, self.spread_of_means)
        mean[0] = np.clip(mean[0], 0.0, 100.0)
        floor = np.maximum(0.25 * np.asarray(self.mean_of_stds), MIN_STD)
        std = np.maximum(rng.normal(self.mean_of_stds, self.spread_of_stds), floor)
        return LabStats(_floats(mean), _floats(std))


def stats_spread(stats, weights=None) -> LabSpread | None:
    """The weighted spread of several images' statistics (None entries skipped; each image's weight, e.g. one
    over its source's number of images so that every source counts alike); None with fewer than two images."""
    stats = list(stats)
    weights = [1.0] * len(stats) if weights is None else list(weights)
    pairs = [(s, float(w)) for s, w in zip(stats, weights, strict=True) if s is not None]
    if len(pairs) < 2:
        return None
    w = np.asarray([p[1] for p in pairs], np.float64)
    w = w / w.sum()
    means = np.asarray([p[0].mean for p in pairs], np.float64)
    stds = np.asarray([p[0].std for p in pairs], np.float64)

    def moments(values):
        centre = (w[:, None] * values).sum(0)
        return _floats(centre), _floats(np.sqrt((w[:, None] * (values - centre) ** 2).sum(0)))

    (mm, sm), (ms, ss) = moments(means), moments(stds)
    return LabSpread(mm, sm, ms, ss)


def _floats(values) -> tuple[float, float, float]:
    return tuple(float(v) for v in values)


def standardise(rgb: np.ndarray, source: LabStats | None, reference: LabStats | None) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with tissue of statistics ``source`` moved onto ``reference``; glass unchanged.
    Either None: ``rgb`` as it is."""
    if source is None or reference is None:
        return rgb
    lab = to_lab(rgb)
    scale = np.asarray(reference.std, np.float32) / np.asarray(source.std, np.float32)
    moved = (lab - np.asarray(source.mean, np.float32)) * scale + np.asarray(reference.mean, np.float32)
    moved[..., 0] = np.clip(moved[..., 0], 0, 100)
    out = cv2.cvtColor(moved, cv2.COLOR_Lab2RGB)
    out = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    keep = ~tissue_pixels(lab)
    out[keep] = rgb[keep]
    return out
