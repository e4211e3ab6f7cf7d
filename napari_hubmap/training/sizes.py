"""The smallest glomerulus a model should report, read from the sizes of its training glomeruli.

Post-processing drops objects under the card's ``min_object_um2`` by default: specks and slivers a
model marks are not glomeruli, and they cost precision (each is a false object). The floor is half the
1st-percentile area of the annotated glomeruli the model learnt from, counting only whole ones
(objects touching the image border are cut) of real sources (synthetic glomeruli are drawn, not seen).
"""

from __future__ import annotations

import numpy as np

from .sources import Sample

FLOOR_PERCENTILE = 1.0
FLOOR_SHARE = 0.5


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
