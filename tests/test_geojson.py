"""Polygon annotations: reading QuPath/HuBMAP JSON, rasterising, and tracing labels back to polygons."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import MultiPolygon, Point, Polygon, box
from skimage.draw import disk

from napari_hubmap.annotations import (
    Annotation,
    annotations_to_feature_collection,
    labels_to_feature_collection,
    pixel_outline,
    rasterize,
    read_annotations,
    write_geojson,
)
from napari_hubmap.errors import HubmapInputError


def feature(geometry: dict, name: str | None = "glomerulus") -> dict:
    properties = {"isLocked": False}
    if name is not None:
        properties["classification"] = {"name": name, "colorRGB": -3670016}
    return {"type": "Feature", "id": "PathObject", "geometry": geometry, "properties": properties}


def write_json(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def ring_with_hole() -> Polygon:
    """A disk of radius 40 around (100.3, 80.7) with a disk hole of radius 15 (float coordinates)."""
    outer = Point(100.3, 80.7).buffer(40, quad_segs=32)
    inner = Point(95.1, 85.2).buffer(15, quad_segs=32)
    return Polygon(outer.exterior.coords, [inner.exterior.coords])


def sample_labels(shape=(200, 260), count=12, seed=0) -> np.ndarray:
    """Non-overlapping disks, one with a hole, one diagonal pinch, one on the border; labels 1..n."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    for _ in range(count):
        rr, cc = disk(tuple(rng.integers(0, shape)), int(rng.integers(5, 25)), shape=shape)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = labels.max() + 1
    top = labels.max()
    labels[40:60, 40:60] = top + 1
    labels[47:52, 47:52] = 0  # hole
    labels[100, 100] = labels[101, 101] = top + 2  # two pixels touching at a corner
    labels[-3:, -10:] = top + 3  # against the image border
    values = np.unique(labels[labels > 0])
    lookup = np.zeros(labels.max() + 1, dtype=np.int32)
    lookup[values] = np.arange(1, values.size + 1)
    return lookup[labels]


# ------------------------------------------------------------------------------------- rasterise


def test_polygon_with_hole_pixel_count_matches_area():
    polygon = ring_with_hole()
    labels = rasterize([Annotation(polygon, "G", {})], (200, 200))
    assert labels.dtype == np.int32 and labels.shape == (200, 200)
    assert labels.sum() == pytest.approx(polygon.area, rel=0.01)
    assert labels[85, 95] == 0  # centre of the hole (row 85, column 95)
    assert labels[80, 130] == 1  # inside the ring


def test_multipolygon_is_one_object():
    parts = MultiPolygon([box(10, 10, 30, 40), Point(70, 70).buffer(12)])
    labels = rasterize([Annotation(parts, None, {})], (100, 100))
    assert set(np.unique(labels)) == {0, 1}
    assert (labels == 1).sum() == pytest.approx(parts.area, rel=0.01)
    assert (labels[10:40, 10:30] == 1).all()


def test_pixel_centre_convention():
    # a square from x 2.4 to 5.6 covers pixel centres 2.5 .. 5.5 -> columns 2..5
    labels = rasterize([Annotation(box(2.4, 1.6, 5.6, 3.4), None, {})], (6, 8))
    assert np.argwhere(labels).min(0).tolist() == [2, 2]  # rows: centres 1.5 is outside, 2.5 inside
    assert np.argwhere(labels).max(0).tolist() == [2, 5]


def test_downsample_two_gives_a_quarter():
    polygon = ring_with_hole()
    full = rasterize([Annotation(polygon, None, {})], (200, 200))
    half = rasterize([Annotation(polygon, None, {})], (100, 100), downsample=2)
    assert half.sum() == pytest.approx(polygon.area / 4, rel=0.02)
    assert half.sum() == pytest.approx(full.sum() / 4, rel=0.02)


def test_classes_filter_order_overlap_and_clipping():
    annotations = [
        Annotation(box(0, 0, 20, 20), "G", {}),
        Annotation(box(10, 10, 30, 30), "FC", {}),
        Annotation(box(15, 15, 25, 25), "G", {}),
        Annotation(box(500, 500, 600, 600), "G", {}),  # outside: keeps its label number, no pixels
        Annotation(box(-10, 35, 10, 45), "G", {}),  # half outside: clipped
    ]
    labels = rasterize(annotations, (50, 50))
    assert labels[5, 5] == 1 and labels[27, 27] == 2 and labels[20, 20] == 3  # later wins
    assert (labels == 4).sum() == 0
    assert (labels == 5).sum() == 10 * 10
    only_g = rasterize(annotations, (50, 50), classes=["G"])
    assert only_g[27, 27] == 0 and only_g[20, 20] == 2 and (only_g == 4).sum() == 100


# ---------------------------------------------------------------------------------------- reading


def test_reads_list_collection_single_feature_and_nested_geometry(tmp_path):
    square = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    as_list = read_annotations(write_json(tmp_path / "a.json", [feature(square, "G")]))
    collection = {"type": "FeatureCollection", "features": [feature(square, "FC")]}
    as_collection = read_annotations(write_json(tmp_path / "b.geojson", collection))
    single = read_annotations(write_json(tmp_path / "c.json", feature(square, "G")))
    nested = feature({"geometry": square}, "G")
    as_nested = read_annotations(write_json(tmp_path / "d.json", [nested]))
    for read in (as_list, as_collection, single, as_nested):
        assert len(read) == 1 and read[0].geometry.area == 100
    assert as_collection[0].class_name == "FC"
    assert as_list[0].properties["isLocked"] is False


def test_holes_multipolygons_and_float_coordinates(tmp_path):
    polygon = ring_with_hole()
    multi = MultiPolygon([box(0, 0, 5, 5), box(10, 10, 12.5, 12.5)])
    path = write_json(
        tmp_path / "shapes.json",
        [feature(shapely.geometry.mapping(polygon)), feature(shapely.geometry.mapping(multi))],
    )
    ring, parts = read_annotations(path)
    assert ring.geometry.area == pytest.approx(polygon.area) and len(ring.geometry.interiors) == 1
    assert parts.geometry.geom_type == "MultiPolygon" and parts.geometry.area == pytest.approx(31.25)


def test_stray_geometries_and_missing_classes_warn_once(tmp_path):
    square = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4]]]}
    line = {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}
    point = {"type": "Point", "coordinates": [1, 1]}
    features = [feature(square), feature(line), feature(point), feature(square, None), feature(line)]
    path = write_json(tmp_path / "export.json", features)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annotations = read_annotations(path)
    messages = [str(w.message) for w in caught]
    assert len(annotations) == 2
    assert [a.class_name for a in annotations] == ["glomerulus", None]
    skipped = [m for m in messages if "skipped" in m]
    unclassified = [m for m in messages if "no classification" in m]
    assert len(skipped) == 1 and path in skipped[0] and "skipped 3" in skipped[0]
    assert "LineString x2" in skipped[0] and "Point x1" in skipped[0]
    assert len(unclassified) == 1 and path in unclassified[0] and "1 feature" in unclassified[0]


def test_self_touching_polygon_is_repaired(tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    (annotation,) = read_annotations(write_json(tmp_path / "bowtie.json", [feature(bowtie)]))
    assert annotation.geometry.is_valid
    assert annotation.geometry.area == pytest.approx(50)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"type": "Topology", "objects": {}}', "keys: objects, type"),
        ("42", "got JSON int"),
        ('[{"type": "Feature", "properties": {}}]', "feature 1 has no geometry"),
        ('[{"type": "Feature", "geometry": {"type": "Polygon"}}]', "geometry has no coordinates"),
        (
            '[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[["a", "b"]]]}}]',
            "coordinates are not a list of numeric [x, y] points",
        ),
        (
            '[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1]]]}}]',
            "coordinates are not a list of numeric",
        ),
        ("[3]", "feature 1 is not a JSON object"),
    ],
)
def test_not_schema_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(HubmapInputError) as info:
        read_annotations(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(HubmapInputError, match="file not found"):
        read_annotations(tmp_path / "absent.json")


# ------------------------------------------------------------------------------ labels -> polygons


def test_pixel_outline_area_equals_pixel_count():
    labels = sample_labels()
    for value in range(1, labels.max() + 1):
        outline = pixel_outline(labels == value)
        assert outline.is_valid
        assert outline.area == (labels == value).sum()


def test_feature_collection_is_qupath_shaped():
    labels = sample_labels()
    collection = labels_to_feature_collection(labels, class_name="Glomerulus")
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == labels.max()
    first = collection["features"][0]
    assert first["type"] == "Feature"
    assert first["properties"]["objectType"] == "annotation"
    assert first["properties"]["classification"]["name"] == "Glomerulus"
    assert len(first["properties"]["classification"]["color"]) == 3
    types = {f["geometry"]["type"] for f in collection["features"]}
    assert types == {"Polygon", "MultiPolygon"}  # the corner-touching pair is a MultiPolygon
    holed = [f for f in collection["features"] if f["geometry"]["type"] == "Polygon"]
    assert any(len(f["geometry"]["coordinates"]) == 2 for f in holed)


def test_round_trip_labels_polygons_labels(tmp_path):
    labels = sample_labels()
    path = tmp_path / "objects.geojson"
    write_geojson(path, labels_to_feature_collection(labels))
    annotations = read_annotations(path)
    assert len(annotations) == labels.max()
    assert np.array_equal(rasterize(annotations, labels.shape), labels)


def test_round_trip_at_a_pyramid_level_with_offset(tmp_path):
    labels = sample_labels(seed=4)
    collection = labels_to_feature_collection(labels, downsample=4, offset=(1000, 2000))
    annotations = [
        Annotation(shapely.affinity.translate(a.geometry, -1000, -2000), a.class_name, a.properties)
        for a in read_annotations(write_json(tmp_path / "level.json", collection))
    ]
    for annotation, value in zip(annotations, range(1, labels.max() + 1)):
        assert annotation.geometry.area == 16 * (labels == value).sum()
    assert np.array_equal(rasterize(annotations, labels.shape, downsample=4), labels)


def test_empty_labels_give_no_features():
    assert labels_to_feature_collection(np.zeros((5, 5), np.uint8))["features"] == []


def test_reexport_keeps_classes_and_shapes(tmp_path, shared_data):
    source = shared_data / "hubmap-json" / "SESCAM_102.json"
    annotations = read_annotations(source)
    out = tmp_path / "again.geojson"
    write_geojson(out, annotations_to_feature_collection(annotations))
    again = read_annotations(out)
    assert [a.class_name for a in again] == [a.class_name for a in annotations]
    for before, after in zip(annotations, again):
        assert after.geometry.symmetric_difference(before.geometry).area < 1e-6 * before.geometry.area


# ------------------------------------------------------------------------------------- real data


def raw_features(path) -> list:
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else data["features"]


def test_all_hubmap_json_exports_parse(shared_data):
    files = sorted((shared_data / "hubmap-json").glob("*.json"))
    assert len(files) == 39
    classes, unclassified_raw, unclassified = set(), 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            annotations = read_annotations(path)
            raw = raw_features(path)
            assert len(annotations) > 0, path
            polygonal = [f for f in raw if f["geometry"]["type"] in ("Polygon", "MultiPolygon")]
            assert len(annotations) == len(polygonal)
            assert all(a.geometry.is_valid and a.geometry.area > 0 for a in annotations)
            classes |= {a.class_name for a in annotations}
            unclassified += sum(a.class_name is None for a in annotations)
            unclassified_raw += sum("classification" not in f.get("properties", {}) for f in raw)
    assert {"G", "FC"} <= classes and None in classes
    assert unclassified == unclassified_raw >= 1


def test_unclassified_feature_warns(shared_data):
    raw_counts = {
        path: sum("classification" not in f.get("properties", {}) for f in raw_features(path))
        for path in sorted((shared_data / "hubmap-json").glob("*.json"))
    }
    path = next(p for p, count in raw_counts.items() if count)
    with pytest.warns(UserWarning, match="no classification"):
        annotations = read_annotations(path)
    assert sum(a.class_name is None for a in annotations) == raw_counts[path]


def test_kidney_he_rasterised_areas_match_polygons(shared_data):
    annotation_files = sorted((shared_data / "kidney-he" / "annotations").glob("*.geojson"))
    assert len(annotation_files) == 21
    for path in annotation_files:
        with Image.open(shared_data / "kidney-he" / "images" / f"{path.stem}.png") as image:
            shape = (image.height, image.width)
        assert shape == (951, 1514)
        annotations = read_annotations(path)
        assert annotations and all(a.class_name == "glomerulus" for a in annotations)
        labels = rasterize(annotations, shape)
        counts = np.bincount(labels.ravel(), minlength=len(annotations) + 1)[1:]
        frame = box(0, 0, shape[1], shape[0])
        for annotation, count in zip(annotations, counts):
            area = annotation.geometry.intersection(frame).area
            # glomeruli here are > 10,000 px, so a 1 % tolerance is ~ the boundary pixel count / 10
            assert area > 10_000
            assert count == pytest.approx(area, rel=0.01), path


def test_overlapping_parts_of_a_hand_made_multipolygon_are_filled():
    overlapping = MultiPolygon([box(0, 0, 10, 10), box(5, 5, 15, 15)])  # invalid: parts overlap
    labels = rasterize([Annotation(overlapping, None, {})], (20, 20))
    assert labels.sum() == 100 + 100 - 25


def test_labels_must_be_integer_2d():
    with pytest.raises(HubmapInputError, match="2-D"):
        labels_to_feature_collection(np.zeros((2, 3, 3), np.int32))
    with pytest.raises(HubmapInputError, match="integer or bool"):
        labels_to_feature_collection(np.zeros((3, 3), np.float32))


@pytest.mark.parametrize("seed", range(5))
def test_pixel_outline_of_noise_is_exact(seed):
    """Noise has every awkward case: pinches, holes, islands in holes, objects on the border."""
    rng = np.random.default_rng(seed)
    for density in (0.2, 0.5, 0.8):
        mask = rng.random((12, 15)) < density
        outline = pixel_outline(mask)
        assert outline.is_valid and outline.area == mask.sum()
        assert np.array_equal(rasterize([Annotation(outline, None, {})], mask.shape) > 0, mask)
