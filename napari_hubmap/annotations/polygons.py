"""What every annotation reader returns (:class:`Annotation`, :class:`AnnotationFile`) and the polygon repair
they share (:func:`valid_polygonal`).

Its own module so that the GeoJSON reader (:mod:`.geojson`, which also dispatches LabelMe files) and the
LabelMe reader (:mod:`.labelme`) both import it and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from ..errors import HubmapInputError

__all__ = ["MAX_COORDINATE", "POLYGONAL", "Annotation", "AnnotationFile", "check_coordinates", "valid_polygonal"]

POLYGONAL = ("Polygon", "MultiPolygon")
"""The geometry types an annotation may have."""

MAX_COORDINATE = 2.0**31
"""The largest pixel coordinate (either sign) a polygon may have: some thousand times the side of the largest
slide, and small enough that areas, rasterising and writing back stay exact and finite."""


@dataclass
class Annotation:
    """One annotated object: a (Multi)Polygon in full-resolution [x, y] pixels, class and properties."""

    geometry: Polygon | MultiPolygon
    class_name: str | None = None
    properties: dict = field(default_factory=dict)


@dataclass
class AnnotationFile:
    """The annotations of one file, and the image size it records ((height, width); LabelMe only)."""

    annotations: list[Annotation]
    image_shape: tuple[int, int] | None = None


def check_coordinates(points: np.ndarray, path, where: str, noun: str = "coordinates") -> np.ndarray:
    """``points`` (float [x, y] rows) when every coordinate is finite and within :data:`MAX_COORDINATE`;
    errors say ``where`` and call the values ``noun``."""
    if not np.isfinite(points).all():
        raise HubmapInputError(path, f"{where}: {noun} contain NaN or infinity")
    if points.size and np.abs(points).max() > MAX_COORDINATE:
        raise HubmapInputError(
            path, f"{where}: coordinate {np.abs(points).max():g} is beyond ±2^31 pixels, not a slide's pixel coordinate"
        )
    return points


def valid_polygonal(shape) -> Polygon | MultiPolygon | None:
    """Repair an invalid geometry, keeping only its polygonal parts; None when nothing is left.

    The "structure" method unions overlapping parts (the default "linework" one would XOR them).
    """
    if not shape.is_valid:
        repaired = shapely.make_valid(shape, method="structure", keep_collapsed=False)
        parts = [g for g in shapely.get_parts(repaired) if g.geom_type in POLYGONAL and not g.is_empty]
        shape = shapely.union_all(parts) if parts else Polygon()
        if not shape.is_valid:
            shape = shape.buffer(0)
    if shape.is_empty or shape.area <= 0 or shape.geom_type not in POLYGONAL:
        return None
    return shape
