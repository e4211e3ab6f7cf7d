"""Post-processing settings and the one threshold rule used everywhere.

The threshold rule (region, slide, threshold search, evaluation): a pixel is foreground when its
probability is **at least** the threshold. A float map in [0, 1] is compared as ``prob >= threshold``.
A uint8 map (0-255, value v meaning v / 255) is compared as ``v >= uint8_cutoff(threshold)``, the
smallest integer c with c / 255 >= threshold, i.e. ``ceil(threshold * 255)`` computed so that float
noise (0.2 * 255 = 51.000000000000007) does not push it up by one. So 0.5 -> 128, 0.05 -> 13,
0.2 -> 51, 0.0 -> 0 (everything), 1.0 -> 255.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..errors import HubmapInputError

MARKERS = ("distance", "h-maxima")
"""Watershed seeds: peaks of the distance transform at least ``min_distance`` apart, or its ``h``-maxima."""
BLOCK = 2048
"""Whole-slide post-processing reads and writes blocks of this many pixels a side."""


@dataclass
class PostprocessConfig:
    """How a probability map becomes glomerulus instances.

    ``threshold`` on probabilities in [0, 1] (see the module doc for uint8 maps); ``min_size`` in pixels
    at the labels' scale (objects smaller after hole filling are removed, before any watershed split);
    ``fill_holes`` fills each object's holes (an object lying in another's hole becomes part of it);
    ``watershed`` splits touching glomeruli on the distance transform, seeded by its peaks at least
    ``min_distance`` apart (``markers="distance"``) or by its ``h``-maxima (``markers="h-maxima"``),
    with ``compactness`` passed to skimage's watershed; ``grow`` px brings each object's outline out into
    the background (:mod:`.grow`), after the minimum size and the split. ``outline_threshold`` (None: off)
    spreads each object found at ``threshold`` over the connected pixels down to that probability
    (hysteresis, :mod:`.pieces`): ``threshold`` decides which glomeruli there are and ``min_size`` counts their
    pixels at it, ``outline_threshold`` draws their edge; at or above ``threshold`` it changes nothing.
    """

    threshold: float = 0.5
    min_size: int = 0
    fill_holes: bool = True
    watershed: bool = False
    markers: str = "distance"
    min_distance: int = 10
    h: float = 2.0
    compactness: float = 0.0
    grow: int = 0
    outline_threshold: float | None = None

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        self.threshold = float(self.threshold)
        if self.outline_threshold is not None:
            check_threshold(self.outline_threshold, "outline_threshold")
            self.outline_threshold = float(self.outline_threshold)
        if self.markers not in MARKERS:
            raise HubmapInputError(None, f"markers must be one of {', '.join(MARKERS)}, got {self.markers!r}")
        for name, low in (("min_size", 0), ("min_distance", 1), ("grow", 0)):  # pixels
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer() or value < low:
                raise HubmapInputError(None, f"{name} must be a whole number >= {low}, got {value!r}")
            setattr(self, name, int(value))
        for name in ("h", "compactness"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0) or isinstance(value, bool):
                raise HubmapInputError(None, f"{name} must be a number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if self.h <= 0:
            raise HubmapInputError(None, f"h must be > 0 (the depth of an h-maximum), got {self.h!r}")
        self.fill_holes, self.watershed = bool(self.fill_holes), bool(self.watershed)

    @property
    def spreads(self) -> bool:
        """Whether objects spread below ``threshold`` (an ``outline_threshold`` under it)."""
        return self.outline_threshold is not None and self.outline_threshold < self.threshold

    @property
    def lower_threshold(self) -> float:
        """The probability down to which pixels can belong to an object: where objects are looked for."""
        return self.outline_threshold if self.spreads else self.threshold

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_threshold(threshold, name: str = "threshold") -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise HubmapInputError(None, f"{name} must be a number in [0, 1], got {threshold!r}")
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise HubmapInputError(None, f"{name} must be in [0, 1] (a probability), got {threshold!r}")


def uint8_cutoff(threshold: float) -> int:
    """Smallest uint8 value v with v / 255 >= ``threshold`` (see the module doc)."""
    check_threshold(threshold)
    return int(min(255, max(0, math.ceil(round(float(threshold) * 255, 6)))))


def foreground(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Bool mask of ``prob >= threshold`` under the module's rule (uint8 or float maps)."""
    prob = np.asarray(prob)
    if prob.dtype == np.uint8:
        return prob >= uint8_cutoff(threshold)
    if prob.dtype.kind == "f":
        return prob >= threshold
    if prob.dtype == bool:
        return prob.copy()
    raise HubmapInputError(None, f"a probability map must be uint8 (0-255) or float (0-1), got {prob.dtype}")
