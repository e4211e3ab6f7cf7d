"""LabelMe JSON annotations: their shapes as polygons, and the image size the file records.

The format rule: a LabelMe file is a JSON object with a ``"shapes"`` list. Each shape has a ``label``
(the class name), ``points`` (``[x, y]`` in image pixels, read in the package's pixel convention, see
:mod:`.geojson`) and a ``shape_type``: "polygon" (3 or more points; the type may be missing),
"rectangle" (2 points, opposite corners) or "circle" (2 points: the centre and a point on the circle,
read as a 64-gon). Other types (line, point, linestrip, ...) are skipped with one warning.
``imageHeight`` / ``imageWidth`` record the image's size; ``imageData`` (the image itself) is never read.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Any

import numpy as np
from shapely.geometry import Polygon

from ..errors import HubmapInputError
from .polygons import Annotation, check_coordinates, valid_polygonal

__all__ = ["check_image_size", "is_labelme", "labelme_annotations", "recorded_image_shape"]

CIRCLE_VERTICES = 64
_POINT_COUNTS = {"rectangle": 2, "circle": 2}


def is_labelme(data: Any) -> bool:
    """Whether parsed JSON is a LabelMe file (an object with ``"shapes"``)."""
    return isinstance(data, dict) and "shapes" in data


def labelme_annotations(data: dict, path) -> tuple[list[Annotation], tuple[int, int] | None]:
    """(polygon annotations, recorded (height, width) or None) of a parsed LabelMe file."""
    shapes = data["shapes"]
    if not isinstance(shapes, list):
        raise HubmapInputError(path, f"LabelMe \"shapes\" is not a list (got JSON {type(shapes).__name__})")
    image_shape = recorded_image_shape(data, path)
    annotations: list[Annotation] = []
    skipped: Counter[str] = Counter()
    for index, shape in enumerate(shapes):
        kind, polygon = _shape_polygon(shape, index, path)
        polygon = None if polygon is None else valid_polygonal(polygon)
        if polygon is None:
            skipped[kind if kind not in ("polygon", *_POINT_COUNTS) else f"empty {kind}"] += 1
            continue
        annotations.append(Annotation(polygon, _label_of(shape)))
    _warn_skipped(path, skipped)
    return annotations, image_shape


def recorded_image_shape(data: dict, path) -> tuple[int, int] | None:
    """(imageHeight, imageWidth) of a LabelMe file; None when it records neither."""
    height, width = data.get("imageHeight"), data.get("imageWidth")
    if height is None and width is None:
        return None
    for name, value in (("imageHeight", height), ("imageWidth", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HubmapInputError(path, f"LabelMe {name} must be a positive integer, got {value!r}")
    return height, width


def check_image_size(path, recorded: tuple[int, int] | None, actual: tuple[int, int]) -> None:
    """Raise when annotations record an image size ((height, width)) other than the image's own."""
    if recorded is None or tuple(int(v) for v in recorded) == tuple(int(v) for v in actual[:2]):
        return
    raise HubmapInputError(
        path,
        f"the annotations were made on a {recorded[1]}x{recorded[0]} image (width x height) "
        f"but the image is {actual[1]}x{actual[0]}",
    )


def _shape_polygon(shape: Any, index: int, path) -> tuple[str, Polygon | None]:
    """(shape type, its polygon, or None for a type that has no area)."""
    if not isinstance(shape, dict):
        raise HubmapInputError(path, f"LabelMe shape {index + 1} is not a JSON object")
    kind = str(shape.get("shape_type") or "polygon")
    if kind not in ("polygon", *_POINT_COUNTS):
        return kind, None
    points = _points(shape, index, path)
    if kind == "polygon":
        if len(points) < 3:
            raise HubmapInputError(path, f"{_name(shape, index)}: a polygon needs 3 or more points, got {len(points)}")
        return kind, Polygon(points)
    if len(points) != _POINT_COUNTS[kind]:
        raise HubmapInputError(
            path, f"{_name(shape, index)}: a {kind} needs exactly {_POINT_COUNTS[kind]} points, got {len(points)}"
        )
    if kind == "rectangle":
        return kind, _rectangle(points)
    circle = _circle(points)
    check_coordinates(np.asarray(circle.exterior.coords), path, _name(shape, index))
    return kind, circle


def _points(shape: dict, index: int, path) -> np.ndarray:
    raw = shape.get("points")
    if not raw:
        raise HubmapInputError(path, f"{_name(shape, index)} has no points")
    if not isinstance(raw, list) or not all(_is_pair(point) for point in raw):
        raise HubmapInputError(path, f"{_name(shape, index)}: points are not a list of numeric [x, y] pairs")
    try:
        points = np.asarray(raw, dtype=float)
    except OverflowError:  # an integer literal beyond float's range
        raise HubmapInputError(path, f"{_name(shape, index)}: a coordinate is beyond ±2^31 pixels") from None
    return check_coordinates(points, path, _name(shape, index), "points")


def _is_pair(point: Any) -> bool:
    return (isinstance(point, list) and len(point) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point))


def _rectangle(points: np.ndarray) -> Polygon:
    (x0, y0), (x1, y1) = points
    return Polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _circle(points: np.ndarray) -> Polygon:
    (cx, cy), edge = points
    radius = float(np.hypot(*(edge - points[0])))
    angles = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
    return Polygon(np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)]))


def _label_of(shape: dict) -> str | None:
    label = shape.get("label")
    return None if label in (None, "") else str(label)


def _name(shape: dict, index: int) -> str:
    label = _label_of(shape)
    return f"LabelMe shape {index + 1}" + ("" if label is None else f" ({label!r})")


def _warn_skipped(path, skipped: Counter) -> None:
    if skipped:
        kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(skipped.items()))
        warnings.warn(
            f"{os.fspath(path)}: skipped {sum(skipped.values())} LabelMe shape(s) without an area ({kinds})",
            stacklevel=4,
        )
