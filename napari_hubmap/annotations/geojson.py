"""QuPath / HuBMAP polygon annotations (GeoJSON): reading, rasterising, and tracing label images back.

:func:`read_annotations` also reads LabelMe JSON (see :mod:`.labelme`); a label filter keeps the
objects of some classes.

Coordinates are ``[x, y]`` = (column, row) in full-resolution pixels. Pixel convention (QuPath): pixel
(r, c) is the square x in [c, c+1), y in [r, r+1); it belongs to a polygon when its centre does. At a
pyramid level with ``downsample`` d, coordinates are divided by d first.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
import zlib
from collections import Counter
from typing import Any, Iterable

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from skimage import measure

from ..atomic import write_text_atomic
from ..errors import HubmapInputError
from ..jsonio import load_json
from .labelme import is_labelme, labelme_annotations
from .polygons import POLYGONAL, Annotation, AnnotationFile, check_coordinates, valid_polygonal

__all__ = [
    "Annotation",
    "AnnotationFile",
    "read_annotation_file",
    "read_annotations",
    "rasterize",
    "labels_to_feature_collection",
    "pixel_outline",
    "annotations_to_feature_collection",
    "write_geojson",
]

_NUMBERS = (int, float)
"""What a coordinate may be: JSON numbers, not true/false (parsed JSON holds exactly these types)."""

_CLASS_COLORS = {
    "Glomerulus": [255, 0, 0],
    "glomerulus": [255, 0, 0],
    "G": [255, 0, 0],
    "FC": [0, 160, 255],
}


# --------------------------------------------------------------------------------------------- reading


def read_annotations(path: str | os.PathLike, labels: Iterable[str] | None = None) -> list[Annotation]:
    """The polygon annotations of a GeoJSON or LabelMe file; see :func:`read_annotation_file`."""
    return read_annotation_file(path, labels).annotations


def read_annotation_file(path: str | os.PathLike, labels: Iterable[str] | None = None) -> AnnotationFile:
    """Read QuPath/HuBMAP polygon JSON (a list of Features, a FeatureCollection or one Feature) or LabelMe.

    Non-polygon features are skipped (one warning); features without a classification get
    ``class_name=None`` (one warning); invalid polygons are repaired. ``labels`` (class names) keeps only
    the objects of those classes; None keeps every object. Anything else that is wrong raises
    :class:`HubmapInputError` naming the file and the problem.
    """
    data = load_json(path, "polygon annotation file")
    if is_labelme(data):
        result = AnnotationFile(*labelme_annotations(data, path))
    else:
        result = AnnotationFile(_geojson_annotations(data, path))
    result.annotations = _keep_labels(result.annotations, labels, path)
    return result


def _keep_labels(annotations: list[Annotation], labels: Iterable[str] | None, path) -> list[Annotation]:
    """The annotations whose class is in ``labels`` (all when None); a warning when none is left."""
    if labels is None:
        return annotations
    wanted = {labels} if isinstance(labels, str) else set(labels)
    kept = [a for a in annotations if a.class_name in wanted]
    if annotations and not kept:
        present = ", ".join(sorted({str(a.class_name) for a in annotations}))
        asked = ", ".join(sorted(map(str, wanted)))
        warnings.warn(f"{os.fspath(path)}: no object has the label(s) {asked} (labels here: {present})", stacklevel=3)
    return kept


def _geojson_annotations(data: Any, path) -> list[Annotation]:
    features = _features_of(data, path)
    annotations: list[Annotation] = []
    skipped: Counter[str] = Counter()
    unclassified = 0
    for index, feature in enumerate(features):
        geometry = _feature_geometry(feature, index, path)
        polygonal = _to_polygonal(geometry, index, path)
        if polygonal is None:
            skipped[str(geometry.get("type"))] += 1
            continue
        properties = _properties_of(feature)
        class_name = _class_name(properties)
        unclassified += class_name is None
        annotations.append(Annotation(polygonal, class_name, properties))
    _warn_skipped(path, skipped, unclassified)
    return annotations


def _features_of(data: Any, path) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if isinstance(data.get("features"), list):
            return data["features"]
        if data.get("type") == "Feature" or "geometry" in data or data.get("type") in POLYGONAL:
            return [data]
        keys = ", ".join(_shown_key(key) for key in sorted(data)[:20]) + (", ..." if len(data) > 20 else "") or "none"
        raise HubmapInputError(
            path,
            "not polygon annotations: expected a GeoJSON FeatureCollection, a Feature, a list of "
            f"Features or a LabelMe file (\"shapes\"), got a JSON object with keys: {keys}",
        )
    raise HubmapInputError(
        path, f"not polygon annotations: expected a list or object, got JSON {type(data).__name__}"
    )


def _shown_key(key: str) -> str:
    """A JSON key for an error line: as is when printable, else quoted with escapes (a newline would split the
    line); long ones cut."""
    shown = key if key.isprintable() else repr(key)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _feature_geometry(feature: Any, index: int, path) -> dict:
    """The geometry object of a feature (also a bare geometry, or QuPath's nested geometry)."""
    if not isinstance(feature, dict):
        raise HubmapInputError(path, f"feature {index + 1} is not a JSON object")
    geometry = feature if "coordinates" in feature else feature.get("geometry")
    while isinstance(geometry, dict) and "type" not in geometry and "geometry" in geometry:
        geometry = geometry["geometry"]
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise HubmapInputError(path, f"feature {index + 1} has no geometry")
    if geometry["type"] != "GeometryCollection" and "coordinates" not in geometry:
        raise HubmapInputError(path, f"feature {index + 1} geometry has no coordinates")
    return geometry


def _to_polygonal(geometry: dict, index: int, path) -> Polygon | MultiPolygon | None:
    """A valid shapely (Multi)Polygon, or None for non-polygon or empty geometries."""
    kind = geometry["type"]
    if kind == "Polygon":
        shape = _polygon(geometry["coordinates"], index, path)
    elif kind == "MultiPolygon":
        parts = geometry["coordinates"]
        if not isinstance(parts, list):
            raise HubmapInputError(path, f"feature {index + 1}: MultiPolygon coordinates are not a list")
        shape = MultiPolygon([_polygon(part, index, path) for part in parts])
    elif kind == "GeometryCollection":
        shape = _collection(geometry.get("geometries"), index, path)
    else:
        return None
    return None if shape is None else valid_polygonal(shape)


def _collection(members: Any, index: int, path) -> Polygon | MultiPolygon | None:
    """Union of the polygonal members of a GeometryCollection (None when it has none)."""
    if not isinstance(members, list):
        raise HubmapInputError(path, f"feature {index + 1}: GeometryCollection has no geometries list")
    shapes = []
    for member in members:
        if not isinstance(member, dict) or "type" not in member:
            raise HubmapInputError(path, f"feature {index + 1}: bad GeometryCollection member")
        if "coordinates" not in member and "geometries" not in member:
            raise HubmapInputError(path, f"feature {index + 1}: geometry has no coordinates")
        shapes.append(_to_polygonal(member, index, path))
    shapes = [s for s in shapes if s is not None]
    return shapely.union_all(shapes) if shapes else None


def _polygon(rings: Any, index: int, path) -> Polygon:
    if not isinstance(rings, list) or not rings:
        raise HubmapInputError(path, f"feature {index + 1}: Polygon coordinates are not a list of rings")
    shell, *holes = (_ring(ring, index, path) for ring in rings)
    return Polygon(shell, [h for h in holes if len(h) >= 3]) if len(shell) >= 3 else Polygon()


def _ring(ring: Any, index: int, path) -> np.ndarray:
    """A ring's [x, y] points (float); a third coordinate (z) is dropped."""
    if not isinstance(ring, list) or not all(_is_position(point) for point in ring):
        raise HubmapInputError(
            path, f"feature {index + 1}: coordinates are not a list of numeric [x, y] points"
        )
    try:
        points = _xy_array(ring)
    except OverflowError:  # an integer literal beyond float's range
        raise HubmapInputError(path, f"feature {index + 1}: a coordinate is beyond ±2^31 pixels") from None
    return check_coordinates(points, path, f"feature {index + 1}")


def _xy_array(positions: list) -> np.ndarray:
    """(n, 2) float array of the x, y of positions already checked by :func:`_is_position`."""
    try:
        return np.asarray(positions, dtype=float).reshape(len(positions), -1)[:, :2]  # all of one length: fast
    except (ValueError, OverflowError):  # some have a z (or a z beyond float's range): x, y only
        return np.asarray([position[:2] for position in positions], dtype=float).reshape(-1, 2)


def _is_position(point: Any) -> bool:
    """A GeoJSON position: a list of 2 or more numbers, x and y not true/false (as parsed JSON holds them)."""
    return type(point) is list and len(point) >= 2 and type(point[0]) in _NUMBERS and type(point[1]) in _NUMBERS


def _properties_of(feature: dict) -> dict:
    properties = feature.get("properties")
    return dict(properties) if isinstance(properties, dict) else {}


def _class_name(properties: dict) -> str | None:
    classification = properties.get("classification")
    if isinstance(classification, dict):
        name = classification.get("name")
        return str(name) if name not in (None, "") else None
    if isinstance(classification, str) and classification:
        return classification
    return None


def _warn_skipped(path, skipped: Counter, unclassified: int) -> None:
    if skipped:
        total = sum(skipped.values())
        kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(skipped.items()))
        warnings.warn(
            f"{os.fspath(path)}: skipped {total} non-polygon or empty feature(s) ({kinds})", stacklevel=4
        )
    if unclassified:
        warnings.warn(
            f"{os.fspath(path)}: {unclassified} feature(s) have no classification (class_name None)",
            stacklevel=4,
        )


# ------------------------------------------------------------------------------------------ rasterising


def rasterize(
    annotations: Iterable[Annotation],
    shape: tuple[int, int],
    *,
    downsample: float = 1.0,
    classes: Iterable[str] | None = None,
) -> np.ndarray:
    """Instance label image (int32, ``shape`` at that pyramid level) of the annotations.

    Label k is the k-th annotation kept by ``classes``; holes stay 0; where objects overlap the later
    one wins; parts outside the image are clipped. Each object is filled only within its bounding box.
    """
    height, width = (int(v) for v in shape)
    if height < 1 or width < 1:
        raise HubmapInputError(None, f"image shape must be positive, got {height}x{width}")
    if not downsample > 0:
        raise HubmapInputError(None, f"downsample must be > 0, got {downsample!r}")
    wanted = None if classes is None else set(classes)
    kept = [a for a in annotations if wanted is None or a.class_name in wanted]
    labels = np.zeros((height, width), dtype=np.int32)
    for label, annotation in enumerate(kept, start=1):
        filled = _fill_polygon(annotation.geometry, downsample, height, width)
        if filled is not None:
            (row0, col0), inside = filled
            window = labels[row0 : row0 + inside.shape[0], col0 : col0 + inside.shape[1]]
            window[inside] = label
    return labels


def _edges(geometry, downsample: float) -> np.ndarray:
    """All ring edges (x0, y0, x1, y1) of a (Multi)Polygon, holes included, scaled to the level."""
    rings = []
    for polygon in shapely.get_parts(geometry):
        for ring in (polygon.exterior, *polygon.interiors):
            points = np.asarray(ring.coords, dtype=float)[:, :2] / downsample
            rings.append(np.hstack([points[:-1], points[1:]]))
    return np.concatenate(rings) if rings else np.zeros((0, 4))


def _fill_polygon(geometry, downsample: float, height: int, width: int):
    """Scanline fill (even-odd) of pixel centres: ((row0, col0), bool mask) or None when empty."""
    if not geometry.is_valid:  # even-odd filling needs non-overlapping parts
        geometry = valid_polygonal(geometry)
        if geometry is None:
            return None
    edges = _edges(geometry, downsample)
    if edges.size == 0:
        return None
    row0, row1 = _pixel_span(edges[:, [1, 3]].min(), edges[:, [1, 3]].max(), height)
    col0, col1 = _pixel_span(edges[:, [0, 2]].min(), edges[:, [0, 2]].max(), width)
    if row0 >= row1 or col0 >= col1:
        return None
    rows, xs = _crossings(edges, row0, row1)
    if rows.size == 0:
        return None
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    starts = np.clip(np.ceil(xs[0::2] - 0.5), col0, col1).astype(np.int64) - col0
    stops = np.clip(np.ceil(xs[1::2] - 0.5), col0, col1).astype(np.int64) - col0
    span_rows = rows[0::2] - row0
    return (row0, col0), _spans_to_mask(span_rows, starts, stops, row1 - row0, col1 - col0)


def _pixel_span(low: float, high: float, size: int) -> tuple[int, int]:
    """Pixels [first, stop) whose centres (i + 0.5) lie in [low, high), clipped to [0, size)."""
    first = max(0, int(np.ceil(low - 0.5)))
    stop = min(size, int(np.ceil(high - 0.5)))
    return first, stop


def _crossings(edges: np.ndarray, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, x) where each edge crosses the centre line y = row + 0.5 of rows in [row0, row1).

    Half-open rule: an edge covers centre lines with min(y) <= y < max(y), so vertices are not
    counted twice and horizontal edges never count.
    """
    x0, y0, x1, y1 = edges.T
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.maximum(np.ceil(low - 0.5), row0).astype(np.int64)
    stop = np.minimum(np.ceil(high - 0.5), row1).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    edge_index = np.repeat(np.arange(edges.shape[0]), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.repeat(first, counts) + offsets
    centre_y = rows + 0.5
    ex0, ey0, ex1, ey1 = x0[edge_index], y0[edge_index], x1[edge_index], y1[edge_index]
    xs = ex0 + (centre_y - ey0) * (ex1 - ex0) / (ey1 - ey0)
    return rows, xs


def _spans_to_mask(rows, starts, stops, height: int, width: int) -> np.ndarray:
    """Bool mask with columns [start, stop) set on each row (spans of one row are disjoint)."""
    keep = stops > starts
    rows, starts, stops = rows[keep], starts[keep], stops[keep]
    size = height * (width + 1)
    delta = np.bincount(rows * (width + 1) + starts, minlength=size)
    delta -= np.bincount(rows * (width + 1) + stops, minlength=size)
    return np.cumsum(delta.reshape(height, width + 1), axis=1)[:, :width] > 0


# ------------------------------------------------------------------------------------ tracing labels


def labels_to_feature_collection(
    labels: np.ndarray,
    *,
    downsample: float = 1.0,
    class_name: str = "Glomerulus",
    offset: tuple[float, float] = (0, 0),
) -> dict:
    """One QuPath annotation Feature per label value, outlined along pixel edges.

    Each polygon's area equals its pixel count (times ``downsample**2``); coordinates are full-resolution
    ``[x, y]``: level pixel coordinates times ``downsample`` plus ``offset`` (x0, y0).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise HubmapInputError(None, f"labels must be 2-D, got shape {labels.shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise HubmapInputError(None, f"labels must be integer or bool, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise HubmapInputError(None, "labels must not be negative")
    features = []
    for value, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        outline = pixel_outline(labels[box] == value)
        outline = _to_full_resolution(outline, box, downsample, offset)
        features.append(_feature(outline, class_name))
    return {"type": "FeatureCollection", "features": features}


def pixel_outline(mask: np.ndarray) -> Polygon | MultiPolygon:
    """Exact outline (pixel edges) of a bool mask in its own pixel coordinates; area = pixel count.

    Marching squares gives rings through the midpoints of the pixel edges ("cracks"), cutting the
    corners; putting each corner back makes the rings follow the pixel edges exactly. Rings are
    combined even-odd (holes, islands in holes), and pinch points are repaired.
    """
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    rings = [_crack_ring(contour) for contour in measure.find_contours(padded, 0.5)]
    if len(rings) == 1:
        outline = Polygon(rings[0])
    else:
        outline = functools.reduce(shapely.symmetric_difference, [Polygon(r) for r in rings])
    return valid_polygonal(outline) or Polygon()


def _crack_ring(contour: np.ndarray) -> np.ndarray:
    """Pixel-edge ring [x, y] from a closed find_contours ring (row, col) of the 1-padded mask."""
    points = contour[:, ::-1] - 0.5  # (x, y) of crack midpoints, unpadded
    here, after = points[:-1], points[1:]
    turns = (here[:, 0] != after[:, 0]) & (here[:, 1] != after[:, 1])
    x_is_whole = here[:, 0] == np.round(here[:, 0])
    corner_x = np.where(x_is_whole, here[:, 0], after[:, 0])
    corner_y = np.where(x_is_whole, after[:, 1], here[:, 1])
    corners = np.column_stack([corner_x, corner_y])
    path = np.empty((here.shape[0] * 2, 2))
    path[0::2], path[1::2] = here, corners
    keep = np.ones(path.shape[0], dtype=bool)
    keep[1::2] = turns
    return _drop_collinear(path[keep])


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Keep only the vertices where an (open, implicitly closed) ring changes direction."""
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return points[cross != 0]


def _to_full_resolution(geometry, box, downsample: float, offset) -> Polygon | MultiPolygon:
    row0, col0 = box[0].start, box[1].start
    x0, y0 = offset
    return shapely.transform(
        geometry, lambda xy: (xy + np.array([col0, row0])) * downsample + np.array([x0, y0])
    )


def _feature(geometry, class_name: str | None, properties: dict | None = None) -> dict:
    properties = dict(properties or {})
    properties.setdefault("objectType", "annotation")
    if class_name is not None:
        classification = properties.get("classification")
        color = classification.get("color") if isinstance(classification, dict) else None
        if not (isinstance(classification, dict) and classification.get("name") == class_name and color):
            properties["classification"] = {"name": class_name, "color": _class_color(class_name)}
    return {"type": "Feature", "geometry": _geometry_json(geometry), "properties": properties}


def _class_color(name: str) -> list[int]:
    if name in _CLASS_COLORS:
        return list(_CLASS_COLORS[name])
    code = zlib.crc32(name.encode("utf-8"))
    return [64 + (code & 0x7F), 64 + ((code >> 8) & 0x7F), 64 + ((code >> 16) & 0x7F)]


def _geometry_json(geometry) -> dict:
    """GeoJSON Polygon/MultiPolygon dict with plain lists; integral coordinates written as ints."""
    polygons = [_polygon_json(p) for p in shapely.get_parts(geometry)]
    if geometry.geom_type == "Polygon":
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def _polygon_json(polygon: Polygon) -> list:
    return [_ring_json(ring) for ring in (polygon.exterior, *polygon.interiors)]


def _ring_json(ring) -> list:
    """The ring's points, exactly: whole numbers as ints (floats beyond 2^53 stay floats), others unrounded (rounding
    to a few decimals collapsed polygons thinner than the last decimal, which then read back as nothing)."""
    points = np.asarray(ring.coords, dtype=float)[:, :2]
    if np.array_equal(points, np.round(points)) and np.abs(points).max(initial=0) < 2.0**53:
        return points.astype(np.int64).tolist()
    return points.tolist()


def annotations_to_feature_collection(annotations: Iterable[Annotation]) -> dict:
    """FeatureCollection of annotations (for re-export), keeping their properties."""
    features = [_feature(a.geometry, a.class_name, a.properties) for a in annotations]
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike, feature_collection: dict) -> None:
    """Write a FeatureCollection as compact JSON (atomically)."""
    text = json.dumps(feature_collection, separators=(",", ":"), default=_json_default)
    write_text_atomic(path, text)


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
