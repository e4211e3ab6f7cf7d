"""convert_annotations between polygon JSON, RLE CSV and mask images, in every direction."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from shapely.geometry import box, mapping
from skimage import measure

from napari_hubmap.annotations import (
    convert_annotations,
    parse_shape,
    rasterize,
    read_annotations,
    read_mask,
    read_rle_csv,
    rle_decode,
    rle_encode,
    write_mask,
    write_rle_csv,
)
from napari_hubmap.errors import HubmapInputError

KIDNEY_SHAPE = (951, 1514)


@pytest.fixture
def kidney_json(shared_data):
    return shared_data / "kidney-he" / "annotations" / "C003_region13.geojson"


@pytest.fixture
def kidney_labels(kidney_json):
    return rasterize(read_annotations(kidney_json), KIDNEY_SHAPE)


def test_parse_shape():
    assert parse_shape("951x1514") == (951, 1514)
    assert parse_shape(" 30000 X 40000 ") == (30000, 40000)
    assert parse_shape("10,20") == (10, 20)
    for bad in ("951", "0x10", "axb", "10x20x3", "-5x4"):
        with pytest.raises(HubmapInputError, match="HEIGHTxWIDTH|positive") as info:
            parse_shape(bad)
        assert info.value.path is None


# ---------------------------------------------------------------------------------- from polygons


def test_polygons_to_mask(tmp_path, kidney_json, kidney_labels):
    out = convert_annotations(kidney_json, "mask", tmp_path / "labels.png", shape=KIDNEY_SHAPE)
    assert out == tmp_path / "labels.png"
    labels = read_mask(out)
    assert labels.max() == 2 and np.array_equal(labels, kidney_labels)


def test_polygons_to_mask_at_a_level(tmp_path, kidney_json, kidney_labels):
    out = convert_annotations(
        kidney_json, "mask", tmp_path / "labels.tif", shape=KIDNEY_SHAPE, downsample=4
    )
    labels = read_mask(out)
    assert labels.shape == (math.ceil(951 / 4), math.ceil(1514 / 4))
    for value in (1, 2):
        assert (labels == value).sum() == pytest.approx((kidney_labels == value).sum() / 16, rel=0.03)


def test_polygons_to_rle(tmp_path, kidney_json, kidney_labels):
    out = convert_annotations(kidney_json, "rle", tmp_path / "train.csv", shape=KIDNEY_SHAPE)
    encodings = read_rle_csv(out)
    assert list(encodings) == [kidney_json.stem]
    assert np.array_equal(rle_decode(encodings[kidney_json.stem], KIDNEY_SHAPE), kidney_labels > 0)
    named = convert_annotations(
        kidney_json, "rle", tmp_path / "named.csv", shape=KIDNEY_SHAPE, rle_id="slide-7"
    )
    assert list(read_rle_csv(named)) == ["slide-7"]


def test_polygons_to_geojson_reexports(tmp_path, shared_data):
    source = shared_data / "hubmap-json" / "SESCAM_102.json"
    out = convert_annotations(source, "geojson", tmp_path / "out.geojson")
    original, again = read_annotations(source), read_annotations(out)
    assert [a.class_name for a in again] == [a.class_name for a in original]
    assert sum(a.geometry.area for a in again) == pytest.approx(sum(a.geometry.area for a in original))


def test_polygons_need_a_shape_for_rasters(tmp_path, kidney_json):
    for target, name in (("mask", "m.png"), ("rle", "r.csv")):
        with pytest.raises(HubmapInputError, match="needs the full-resolution image shape") as info:
            convert_annotations(kidney_json, target, tmp_path / name)
        assert info.value.path == str(kidney_json)
    assert list(tmp_path.iterdir()) == []


def test_polygons_outside_the_image_warn(tmp_path):
    source = tmp_path / "far.json"
    geometry = mapping(box(5000, 10, 5100, 60))  # x 5000..5100: needs a wide image
    properties = {"classification": {"name": "G"}}
    source.write_text(json.dumps([{"type": "Feature", "geometry": geometry, "properties": properties}]))
    with pytest.warns(UserWarning, match="1 of 1 objects lie outside the 8000x100 image"):
        convert_annotations(source, "mask", tmp_path / "m.png", shape=(8000, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = convert_annotations(source, "mask", tmp_path / "m.png", shape=(100, 8000))
    assert read_mask(out).sum() == 100 * 50


# ---------------------------------------------------------------------------------------- from RLE


@pytest.fixture
def rle_csv(tmp_path):
    """Two slides: 'one' with three blobs (two touching at a corner), 'two' empty."""
    mask = np.zeros((60, 80), dtype=bool)
    mask[5:20, 10:30] = True
    mask[30:50, 40:45] = True
    mask[20, 30] = True  # diagonal neighbour of the first blob: same object (8-connectivity)
    mask[55:60, 70:80] = True
    path = tmp_path / "train.csv"
    write_rle_csv(path, {"one": rle_encode(mask), "two": ""})
    return path, mask


def test_rle_to_mask_picks_row(tmp_path, rle_csv):
    path, mask = rle_csv
    out = convert_annotations(path, "mask", tmp_path / "one.png", shape=mask.shape, rle_id="one")
    labels = read_mask(out)
    assert np.array_equal(labels > 0, mask)
    assert labels.max() == 3  # connected components, 8-connected
    empty = convert_annotations(path, "mask", tmp_path / "two.png", shape=mask.shape, rle_id="two")
    assert not read_mask(empty).any()


def test_rle_to_geojson(tmp_path, rle_csv):
    path, mask = rle_csv
    out = convert_annotations(path, "geojson", tmp_path / "one.json", shape=mask.shape, rle_id="one")
    annotations = read_annotations(out)
    assert len(annotations) == 3
    assert sum(a.geometry.area for a in annotations) == mask.sum()
    assert np.array_equal(rasterize(annotations, mask.shape) > 0, mask)


def test_rle_to_rle_keeps_row_id(tmp_path, rle_csv):
    path, mask = rle_csv
    out = convert_annotations(path, "rle", tmp_path / "copy.csv", shape=mask.shape, rle_id="one")
    assert read_rle_csv(out) == {"one": rle_encode(mask)}


def test_rle_downsampled_mask(tmp_path, rle_csv):
    path, mask = rle_csv
    out = convert_annotations(
        path, "mask", tmp_path / "half.png", shape=mask.shape, rle_id="one", downsample=2
    )
    labels = read_mask(out)
    assert labels.shape == (30, 40)
    assert np.array_equal(labels > 0, mask[1::2, 1::2])  # the full-res pixel under each centre


def test_rle_errors(tmp_path, rle_csv):
    path, mask = rle_csv
    with pytest.raises(HubmapInputError, match="has 2 rows; choose one by id"):
        convert_annotations(path, "mask", tmp_path / "m.png", shape=mask.shape)
    with pytest.raises(HubmapInputError, match="no row with id 'three'"):
        convert_annotations(path, "mask", tmp_path / "m.png", shape=mask.shape, rle_id="three")
    with pytest.raises(HubmapInputError, match="needs the full-resolution image shape"):
        convert_annotations(path, "geojson", tmp_path / "m.json", rle_id="one")
    with pytest.raises(HubmapInputError, match="goes past the end") as info:
        convert_annotations(path, "mask", tmp_path / "m.png", shape=(10, 10), rle_id="one")
    assert info.value.path == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]


def test_single_row_needs_no_id(tmp_path):
    path = tmp_path / "single.csv"
    path.write_text("id,predicted\nonly,1 4\n")
    out = convert_annotations(path, "mask", tmp_path / "m.tif", shape=(4, 4))
    assert read_mask(out)[:, 0].all() and read_mask(out).sum() == 4


# --------------------------------------------------------------------------------------- from masks


def test_16x_mask_to_full_resolution_geojson(tmp_path, shared_data):
    source = shared_data / "hubmap-16x" / "masks" / "2f6ecfcdf_10red16.png"
    mask = read_mask(source)
    out = convert_annotations(source, "geojson", tmp_path / "full.geojson", downsample=16)
    annotations = read_annotations(out)
    components = measure.label(mask, connectivity=2)
    assert len(annotations) == components.max() > 0
    for annotation, value in zip(annotations, range(1, components.max() + 1)):
        assert annotation.geometry.area == 256 * (components == value).sum()
    assert np.array_equal(rasterize(annotations, mask.shape, downsample=16), components)
    assert max(a.geometry.bounds[2] for a in annotations) > 256  # full-resolution coordinates


def test_colour_mask_to_rle_and_instances(tmp_path, shared_data):
    source = shared_data / "pas-tiles" / "masks" / "10003.png"
    mask = read_mask(source)
    csv = convert_annotations(source, "rle", tmp_path / "tile.csv")
    assert read_rle_csv(csv) == {"10003": rle_encode(mask)}
    labels = read_mask(convert_annotations(source, "mask", tmp_path / "instances.png"))
    assert np.array_equal(labels > 0, mask) and labels.max() == measure.label(mask, connectivity=2).max()


def test_label_mask_keeps_its_labels(tmp_path):
    labels = np.zeros((30, 30), dtype=np.int32)
    labels[2:10, 2:10] = 7
    labels[10:20, 2:10] = 300  # touching label 7: stays a separate object
    source = tmp_path / "labels.tif"
    write_mask(source, labels)
    out = convert_annotations(source, "geojson", tmp_path / "labels.json")
    areas = sorted(a.geometry.area for a in read_annotations(out))
    assert areas == [64, 80]


def test_mask_shape_must_agree(tmp_path, shared_data):
    source = shared_data / "hubmap-16x" / "masks" / "2f6ecfcdf_10red16.png"
    convert_annotations(source, "rle", tmp_path / "ok.csv", shape=(4096, 4096), downsample=16)
    with pytest.raises(HubmapInputError, match="mask is 256x256 but shape 4096x4096"):
        convert_annotations(source, "rle", tmp_path / "bad.csv", shape=(4096, 4096))


# ------------------------------------------------------------------------------------------ errors


def test_argument_errors(tmp_path, kidney_json):
    with pytest.raises(HubmapInputError, match="unknown target 'png'"):
        convert_annotations(kidney_json, "png", tmp_path / "x.png", shape=KIDNEY_SHAPE)
    with pytest.raises(HubmapInputError, match=r"output for 'mask' must end in \.png or \.tif"):
        convert_annotations(kidney_json, "mask", tmp_path / "x.csv", shape=KIDNEY_SHAPE)
    with pytest.raises(HubmapInputError, match="downsample must be a positive number"):
        convert_annotations(kidney_json, "mask", tmp_path / "x.png", shape=KIDNEY_SHAPE, downsample=0)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(HubmapInputError, match="unsupported source type"):
        convert_annotations(tmp_path / "notes.txt", "rle", tmp_path / "x.csv")
    with pytest.raises(HubmapInputError, match="file not found"):
        convert_annotations(tmp_path / "absent.json", "geojson", tmp_path / "x.json")


def test_core_imports_neither_qt_nor_napari():
    import subprocess
    import sys

    code = (
        "import sys, napari_hubmap.annotations\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
