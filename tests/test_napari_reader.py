"""The napari reader and slide panel in a real viewer (Xvfb + Mesa)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_hubmap.reader import get_reader
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
