"""Exports: full-resolution RLE from downscaled labels, GeoJSON round trips, OME-Zarr, TIFF, and
the npe2 writers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage import measure
from synthetic_maps import blob_map, write_prob_store

from napari_hubmap.annotations import read_annotations, read_mask, read_rle_csv, rasterize, rle_decode, rle_encode
from napari_hubmap.errors import HubmapInputError
from napari_hubmap.postprocess import PostprocessConfig, postprocess_slide
from napari_hubmap.postprocess import export
from napari_hubmap.postprocess.export import export_labels, rle_full_resolution, upsample_nearest
from napari_hubmap.stores.labels import LabelsStoreWriter, open_labels


def random_labels(shape, seed=0):
    rng = np.random.default_rng(seed)
    labels = measure.label(rng.random(shape) > 0.55, connectivity=2)
    labels[-1, :] = labels.max() + 1  # runs down to the bottom continue into the next column
    return labels.astype(np.int32)


@pytest.mark.parametrize("downscale, full", [(2, (101, 77)), (3, (100, 98)), (3, (97, 95)), (1, (30, 41)), (2.5, (53, 61))])
def test_rle_of_downscaled_labels_decodes_to_the_nearest_upsampled_mask(downscale, full, monkeypatch):
    small = random_labels((math.ceil(full[0] / downscale), math.ceil(full[1] / downscale)))
    expected = upsample_nearest(small, full, downscale) > 0
    if downscale == int(downscale):  # whole factors: pixel R of the full image is R // d
        d = int(downscale)
        assert np.array_equal(expected, np.repeat(np.repeat(small, d, 0), d, 1)[: full[0], : full[1]] > 0)
    reference = rle_encode(expected)
    for band_pixels in (1 << 24, 3 * small.shape[0], 1):  # one band, a few columns, one column per band
        monkeypatch.setattr(export, "BAND_PIXELS", band_pixels)
        encoding = rle_full_resolution(small, full, downscale)
        assert encoding == reference
    assert np.array_equal(rle_decode(encoding, full), expected)
    assert rle_full_resolution(np.zeros_like(small), full, downscale) == ""


def test_rle_refuses_a_full_shape_that_does_not_fit():
    with pytest.raises(HubmapInputError, match="gives"):
        rle_full_resolution(np.zeros((10, 10), np.int32), (30, 20), 2)


@pytest.fixture
def labels_store(tmp_path):
    """A labels store at downscale 3 of a 301 x 299 slide (not a multiple of 3)."""
    from PIL import Image

    prob = blob_map((101, 100), seed=2)
    slide = tmp_path / "kidney7.png"
    Image.fromarray(np.zeros((301, 299, 3), np.uint8)).save(slide)
    store = write_prob_store(tmp_path / "kidney7.prob.zarr", prob, downscale=3.0, settings={"slide": str(slide)})
    postprocess_slide(store, tmp_path / "kidney7.labels.zarr", PostprocessConfig(min_size=3), block=64)
    return tmp_path / "kidney7.labels.zarr"


def test_rle_csv_export_of_a_store_is_a_full_resolution_submission(labels_store, tmp_path):
    summary = export_labels(labels_store, "rle-csv", tmp_path / "sub.csv")
    assert summary["id"] == "kidney7" and summary["slide_shape"] == [301, 299]
    assert (tmp_path / "sub.csv").read_text().splitlines()[0] == "id,predicted"
    labels = np.asarray(open_labels(labels_store)[0][0])
    decoded = rle_decode(read_rle_csv(tmp_path / "sub.csv")["kidney7"], (301, 299))
    assert np.array_equal(decoded, upsample_nearest(labels, (301, 299), 3) > 0)
    export_labels(labels_store, "rle-csv", tmp_path / "named.csv", rle_id="abc")
    assert list(read_rle_csv(tmp_path / "named.csv")) == ["abc"]


def test_rle_csv_needs_the_full_size_when_unknown(tmp_path):
    labels = random_labels((50, 40))
    writer = LabelsStoreWriter(tmp_path / "l.zarr", labels.shape, 2.0)
    writer.write_block(0, 0, labels)
    with pytest.raises(HubmapInputError, match="--shape"):
        export_labels(tmp_path / "l.zarr", "rle-csv", tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
    export_labels(tmp_path / "l.zarr", "rle-csv", tmp_path / "x.csv", full_shape=(99, 80))
    decoded = rle_decode(read_rle_csv(tmp_path / "x.csv")["l"], (99, 80))
    assert np.array_equal(decoded, upsample_nearest(labels, (99, 80), 2) > 0)


def assert_round_trip(labels, downscale, annotations, full_shape):
    """Same object count, each object's area within 1% after rasterising at full resolution."""
    assert len(annotations) == len(np.unique(labels)) - 1
    assert all(a.class_name == "Glomerulus" for a in annotations)
    back = rasterize(annotations, full_shape, downsample=1.0)
    values = [v for v in np.unique(labels) if v]
    areas = np.bincount(labels.ravel())[values] * downscale**2
    back_areas = np.bincount(back.ravel(), minlength=len(values) + 1)[1:]
    assert np.all(np.abs(back_areas - areas) <= 0.01 * areas), (back_areas, areas)


def test_geojson_round_trip_keeps_count_and_areas(labels_store, tmp_path):
    summary = export_labels(labels_store, "geojson", tmp_path / "glom.geojson")
    labels = np.asarray(open_labels(labels_store)[0][0])
    assert summary["objects"] == labels.max() > 5
    annotations = read_annotations(tmp_path / "glom.geojson")
    upsampled = upsample_nearest(labels, (303, 300), 3)  # the slide cut to whole label pixels
    assert_round_trip(labels, 3, annotations, (303, 300))
    assert np.array_equal(rasterize(annotations, (303, 300)) > 0, upsampled > 0)


def test_ome_zarr_and_tiff_exports(labels_store, tmp_path):
    labels = np.asarray(open_labels(labels_store)[0][0])
    summary = export_labels(labels_store, "ome-zarr", tmp_path / "copy.zarr")
    levels, meta = open_labels(tmp_path / "copy.zarr")
    assert np.array_equal(np.asarray(levels[0]), labels)
    assert meta["downscale"] == 3.0 and meta["slide_shape"] == [301, 299] and summary["downscale"] == 3.0
    export_labels(labels_store, "tiff", tmp_path / "labels.tif")  # streamed from the store
    assert np.array_equal(read_mask(tmp_path / "labels.tif"), labels)
    export_labels(tmp_path / "labels.tif", "ome-zarr", tmp_path / "from_tiff.zarr", full_shape=(301, 299))
    levels, meta = open_labels(tmp_path / "from_tiff.zarr")
    assert meta["downscale"] == 3.0 and np.array_equal(np.asarray(levels[0]), labels)


def test_export_refuses_bad_requests_without_writing(labels_store, tmp_path):
    for fmt, out, needle in [("rle-csv", "a.json", ".csv"), ("pdf", "a.pdf", "unknown format"), ("tiff", "a.png", ".tif")]:
        with pytest.raises(HubmapInputError, match=needle):
            export_labels(labels_store, fmt, tmp_path / out)
        assert not (tmp_path / out).exists()
    with pytest.raises(HubmapInputError, match="not found"):
        export_labels(tmp_path / "missing.zarr", "geojson", tmp_path / "a.geojson")
    with pytest.raises(HubmapInputError, match="gives"):
        export_labels(labels_store, "rle-csv", tmp_path / "a.csv", full_shape=(900, 900))
    assert not (tmp_path / "a.csv").exists()


def test_npe2_writers(tmp_path):
    from napari_hubmap import writers

    labels = random_labels((40, 30), seed=3)
    meta = {"name": "slide9", "scale": (2.0, 2.0), "metadata": {"napari_hubmap": {"downscale": 2.0, "slide_shape": [79, 60]}}}
    assert writers.write_labels_rle(str(tmp_path / "s.csv"), labels, meta) == [str(tmp_path / "s.csv")]
    decoded = rle_decode(read_rle_csv(tmp_path / "s.csv")["slide9"], (79, 60))
    assert np.array_equal(decoded, upsample_nearest(labels, (79, 60), 2) > 0)
    writers.write_labels_geojson(str(tmp_path / "s.geojson"), [labels, labels[::2, ::2]], meta)
    assert_round_trip(labels, 2, read_annotations(tmp_path / "s.geojson"), (80, 60))
    writers.write_labels_ome_zarr(str(tmp_path / "s.zarr"), labels, {"scale": (2.0, 2.0)})
    assert open_labels(tmp_path / "s.zarr")[1]["downscale"] == 2.0
    writers.write_labels_tiff(str(tmp_path / "s.tif"), labels, {})
    assert np.array_equal(read_mask(tmp_path / "s.tif"), labels)


def test_geojson_round_trip_of_real_annotations(shared_data, tmp_path):
    sources = sorted((shared_data / "kidney-he" / "annotations").glob("*.geojson"))
    assert len(sources) == 21
    total = 0
    for source in sources:
        labels = rasterize(read_annotations(source), (951, 1514))
        export.write_geojson(tmp_path / "back.geojson", export.labels_feature_collection(labels))
        assert_round_trip(labels, 1, read_annotations(tmp_path / "back.geojson"), (951, 1514))
        total += len(np.unique(labels)) - 1
    assert total > 30
