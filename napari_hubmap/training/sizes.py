"""The smallest glomerulus a model should report, read from the sizes of its training glomeruli.

Post-processing drops objects under the card's ``min_object_um2`` by default: specks and slivers a
model marks are not glomeruli, and they cost precision (each is a false object). The annotation floor is
half the 1st-percentile area of the annotated glomeruli the model learnt from, counting only whole ones
(objects touching the image border are cut) of real sources (synthetic glomeruli are drawn, not seen).
The card's floor is the multiple of it (:data:`FLOOR_CHOICES`) that gives the best object F1 on the
validation images, as the threshold is picked there: a glomerulus the model finds is drawn smaller than
its annotation (high thresholds trim it to the tuft), and the false ones it marks are mostly small
(tubule cross-sections).
"""

from __future__ import annotations

import numpy as np

from .sources import Sample

FLOOR_PERCENTILE = 1.0
FLOOR_SHARE = 0.5
FLOOR_CHOICES = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
"""Multiples of the annotation floor tried on the validation images. Picked that way for eight held-out runs of
``benchmarks/generalisation.py`` (1.5-3), the held-out object F1 rose on seven (by 0.013-0.106) and fell on the
one with 13 glomeruli (by one object); Dice moved by -0.026 to +0.007 (``benchmarks/floor-scores/``)."""


def whole_object_areas(mask: np.ndarray) -> np.ndarray:
    """Pixel areas of the 8-connected objects of ``mask`` that do not touch its border."""
    from skimage.measure import label

    labels = label(mask > 0, connectivity=2)
    areas = np.bincount(labels.ravel())
    cut = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = np.ones(areas.size, bool)
    keep[0] = False
    keep[cut] = False
    return areas[keep]


def object_floor_um2(samples: list[Sample], mpp: float | None) -> float:
    """Half the 1st-percentile area (µm²) of whole training glomeruli; 0 when the scale or glomeruli are unknown."""
    if not mpp:
        return 0.0
    areas = [whole_object_areas(s.mask) for s in samples if s.source != "synthetic" and s.mask.any()]
    areas = np.concatenate(areas) if areas else np.zeros(0)
    if not areas.size:
        return 0.0
    return round(float(FLOOR_SHARE * np.percentile(areas, FLOOR_PERCENTILE) * mpp * mpp), 1)


def floor_choices_px(floor_um2: float, mpp: float | None, smallest: int) -> dict[int, float]:
    """Candidate floors in working pixels (none under ``smallest``) -> the µm² a card records for each;
    ``{smallest: 0.0}`` alone when the scale or the annotation floor is unknown."""
    if not floor_um2 or not mpp:
        return {smallest: 0.0}
    choices: dict[int, float] = {}
    for um2 in floor_multiples_um2(floor_um2).values():
        choices.setdefault(floor_px(um2, mpp, smallest), um2)
    return choices


def floor_multiples_um2(floor_um2: float) -> dict[float, float]:
    """Each multiple of :data:`FLOOR_CHOICES` -> that multiple of the annotation floor, in µm² as a card records it."""
    return {times: round(floor_um2 * times, 1) for times in FLOOR_CHOICES}


def floor_px(um2: float, mpp: float, smallest: int) -> int:
    """A floor of ``um2`` µm² in working pixels of ``mpp`` µm, never under ``smallest``."""
    return max(smallest, int(round(um2 / (mpp * mpp))))
