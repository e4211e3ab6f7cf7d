"""The napari reader and slide panel in a real viewer (Xvfb + Mesa)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_hubmap.reader import get_reader
from napari_hubmap.writers import NapariWriteError
from napari_hubmap.slide.levels import SlideLevel

pytestmark = pytest.mark.gui


@pytest.fixture
def flat_slide(tmp_path):
    rng = np.random.default_rng(3)
    image = np.full((3000, 4000, 3), 240, np.uint8)
    image[500:2500, 800:3200] = rng.integers(60, 200, (2000, 2400, 3), dtype=np.uint8)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image, tile=(512, 512), photometric="rgb")
    return path, image


def test_get_reader_declines_what_it_cannot_read(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert get_reader(str(text)) is None
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "missing.tif")) is None


def test_reader_gives_a_lazy_multiscale_layer(make_napari_viewer, flat_slide, monkeypatch):
    path, image = flat_slide

    def whole_file_read(*args, **kwargs):
        raise AssertionError("the reader must never read the whole file")

    monkeypatch.setattr(tifffile, "imread", whole_file_read)
    monkeypatch.setattr(tifffile.TiffFile, "asarray", whole_file_read)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-hubmap")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.multiscale and layer.rgb
    assert all(isinstance(level, SlideLevel) for level in layer.data)
    assert [tuple(level.shape[:2]) for level in layer.data] == [(3000, 4000), (1500, 2000), (750, 1000)]
    np.testing.assert_array_equal(layer.data[0][1000:1100, 1000:1100], image[1000:1100, 1000:1100])
    assert layer.metadata["napari_hubmap"]["layout"] == "interleaved:YXS"


def test_viewer_shows_the_slide_and_the_panel_tracks_the_cache(make_napari_viewer, flat_slide, qtbot):
    from napari_hubmap._widgets.slide_panel import SlidePanel

    path, image = flat_slide
    viewer = make_napari_viewer(show=True)
    panel = SlidePanel(viewer)
    viewer.window.add_dock_widget(panel)
    layer = viewer.open(str(path), plugin="napari-hubmap")[0]
    assert "4000 × 3000" in panel.info.text()
    slide = layer.metadata["napari_hubmap"]["slide"]
    qtbot.waitUntil(lambda: slide.cache.complete, timeout=60_000)
    qtbot.waitUntil(lambda: panel.cache_label.text() == "pyramid cache: ready", timeout=5_000)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.shape[2] == 4
    tissue = shot[..., :3].astype(int).sum(axis=2) < 3 * 220
    assert tissue.mean() > 0.05  # the dark tissue block is drawn, not a blank canvas


def test_panel_imports_qupath_polygons_over_a_real_region(make_napari_viewer, shared_data):
    from shapely.geometry import shape as to_shape
    import json

    from napari_hubmap._widgets.slide_panel import SlidePanel

    image = shared_data / "kidney-he" / "images" / "C003_region1.png"
    geojson = shared_data / "kidney-he" / "annotations" / "C003_region1.geojson"
    viewer = make_napari_viewer()
    panel = SlidePanel(viewer)
    slide_layer = viewer.open(str(image), plugin="napari-hubmap")[0]
    labels_layer = panel.import_annotations(str(geojson))
    assert labels_layer.data.shape == (951, 1514)
    features = json.loads(geojson.read_text())["features"]
    assert labels_layer.data.max() == len(features)
    polygon_area = sum(to_shape(f["geometry"]).area for f in features)
    assert abs((labels_layer.data > 0).sum() - polygon_area) / polygon_area < 0.01
    np.testing.assert_allclose(labels_layer.scale, slide_layer.scale)


def test_sample_data_opens_slide_and_ground_truth(make_napari_viewer, monkeypatch):
    import napari_hubmap.sample_data as sample_data

    monkeypatch.setattr(sample_data, "SAMPLE_SIZE", (1536, 2048))  # small in tests; 8192 x 6144 for users
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-hubmap", "synthetic-pas")
    image, labels = layers
    assert image.multiscale and image.data[0].shape == (1536, 2048, 3)
    assert labels.data.shape == (384, 512) and labels.data.max() > 0
    np.testing.assert_allclose(labels.scale, (4, 4))
    # ground truth sits on the glomeruli: darker (nuclei-dense) than the average tissue
    level = np.asarray(image.data[0][2::4, 2::4])  # the slide pixels at the label pixels' centres
    inside = level[labels.data > 0].mean()
    assert inside < level.mean()


def test_launcher_docks_the_widgets(make_napari_viewer, monkeypatch, tmp_path, flat_slide):
    from napari_hubmap._widgets import launch

    path, _ = flat_slide
    viewers = []

    def fake_viewer(**kwargs):
        viewers.append(make_napari_viewer(show=False))
        return viewers[-1]

    monkeypatch.setattr("napari.Viewer", fake_viewer)
    viewer = launch.make_viewer([str(path)], show=False)
    assert [layer.name for layer in viewer.layers] == ["flat.tif"]
    assert "Slide (napari-hubmap)" in viewer.window.dock_widgets


def disc_labels() -> np.ndarray:
    """Three glomeruli (discs, one touching the right edge) on a 60 x 80 working-scale canvas."""
    yy, xx = np.mgrid[:60, :80]
    labels = np.zeros((60, 80), np.int32)
    for value, (cy, cx, r) in enumerate([(15, 20, 9), (40, 45, 12), (30, 76, 8)], start=1):
        labels[np.hypot(yy - cy, xx - cx) <= r] = value
    return labels


def test_napari_save_writes_every_declared_labels_format_that_reads_back(make_napari_viewer, tmp_path):
    """File > Save Selected Layers with each extension napari.yaml declares, through napari's own save path."""
    from test_export import assert_round_trip

    from napari_hubmap.annotations import read_annotations, read_mask, read_rle_csv, rle_decode
    from napari_hubmap.postprocess.export import upsample_nearest
    from napari_hubmap.stores.labels import open_labels

    viewer = make_napari_viewer()
    labels = disc_labels()
    full = (119, 160)  # an odd slide height: the working scale is half of it, rounded up
    viewer.add_labels(labels, name="glomeruli", scale=(2, 2),
                      metadata={"napari_hubmap": {"downscale": 2.0, "slide_shape": list(full), "id": "slide7"}})
    saved = {suffix: viewer.layers.save(str(tmp_path / f"out{suffix}"), selected=True, plugin="napari-hubmap")
             for suffix in (".tif", ".tiff", ".zarr", ".geojson", ".csv")}
    assert saved == {suffix: [str(tmp_path / f"out{suffix}")] for suffix in saved}
    assert np.array_equal(read_mask(tmp_path / "out.tif"), labels) and np.array_equal(read_mask(tmp_path / "out.tiff"), labels)
    levels, meta = open_labels(tmp_path / "out.zarr")
    assert np.array_equal(np.asarray(levels[0][:]), labels) and meta["downscale"] == 2.0
    assert tuple(meta["slide_shape"]) == full
    assert_round_trip(labels, 2, read_annotations(tmp_path / "out.geojson"), full)
    mask = rle_decode(read_rle_csv(tmp_path / "out.csv")["slide7"], full)
    assert np.array_equal(mask, upsample_nearest(labels, full, 2) > 0)


def select(viewer, name: str) -> None:
    """Select only the layer ``name`` (what *Save Selected Layers* saves)."""
    viewer.layers.selection.active = viewer.layers[name]
    assert list(viewer.layers.selection) == [viewer.layers[name]]


def test_napari_save_to_a_bad_target_is_a_clear_error(make_napari_viewer, tmp_path, monkeypatch):
    import errno
    import os

    from napari_hubmap import atomic

    viewer = make_napari_viewer()
    viewer.add_labels(disc_labels(), name="glomeruli")
    viewer.add_image(np.zeros((60, 80), np.uint8), name="slide")
    (tmp_path / "file").write_text("not a folder")
    select(viewer, "glomeruli")
    with pytest.warns(UserWarning, match="not a valid writer"):  # no writer of this plugin takes .pdf: napari says so
        assert viewer.layers.save(str(tmp_path / "out.pdf"), selected=True, plugin="napari-hubmap") == []
    for suffix in (".tif", ".zarr", ".geojson", ".csv"):  # the folder is a file (was a bare FileExistsError)
        target = tmp_path / "file" / f"out{suffix}"
        with pytest.raises(NapariWriteError, match="cannot write here \\(File exists") as caught:
            viewer.layers.save(str(target), selected=True, plugin="napari-hubmap")
        assert caught.value.path == str(target)
    select(viewer, "slide")
    with pytest.warns(UserWarning, match="not a valid writer"):  # the plugin writes labels, not images
        assert viewer.layers.save(str(tmp_path / "slide.tif"), selected=True, plugin="napari-hubmap") == []

    class FullDisk:  # atomic.py's os, on a disk that fills as the finished file is put in place
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(source, target):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(atomic, "os", FullDisk())
    select(viewer, "glomeruli")
    for suffix in (".tif", ".zarr", ".geojson", ".csv"):  # one clear error naming the target (was a bare OSError)
        target = tmp_path / f"out{suffix}"
        with pytest.raises(NapariWriteError, match="No space left on device") as caught:
            viewer.layers.save(str(target), selected=True, plugin="napari-hubmap")
        assert caught.value.path == str(target) and str(caught.value).startswith(f"{target}: ")
        assert "\n" not in str(caught.value) and ".partial" not in str(caught.value)
    monkeypatch.undo()
    layer = viewer.layers["glomeruli"]
    layer.metadata = {"napari_hubmap": {"downscale": 2.0, "slide_shape": [500, 500]}}  # a slide it cannot cover
    with pytest.raises(NapariWriteError, match="gives") as caught:  # the reason reaches the user (napari made a
        viewer.layers.save(str(tmp_path / "out.csv"), selected=True, plugin="napari-hubmap")  # ValueError "not a valid writer")
    assert caught.value.path == str(tmp_path / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing half-written left behind
