"""The Post-processing panel in a real viewer (Xvfb + Mesa): live preview, apply to slide, threshold search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_hubmap.postprocess import PostprocessConfig, postprocess_region, uint8_cutoff
from napari_hubmap.registry import ModelCard, build_module, save_model
from napari_hubmap.stores.labels import open_labels
from napari_hubmap.stores.probability import ProbabilityStore, open_probability
from napari_gui import click

pytestmark = pytest.mark.gui

SIZE = 1536  # 3 x 3 chunks of the store: napari's view corners snap to chunks
RADIUS = 40


def cone(shape, centre, radius, peak):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return peak * np.clip(1 - np.hypot(yy - centre[0], xx - centre[1]) / (radius * 1.5), 0, 1)


def probability_map() -> np.ndarray:
    """Two touching glomeruli (a figure eight), a faint lone one, a strong lone one; uint8."""
    shape = (SIZE, SIZE)
    prob = np.maximum.reduce([
        cone(shape, (150, 150), RADIUS, 0.95), cone(shape, (150, 200), RADIUS, 0.95),
        cone(shape, (390, 120), RADIUS, 0.6), cone(shape, (380, 380), RADIUS, 0.95),
    ])
    return np.rint(prob * 255).astype(np.uint8)


def open_store(tmp_path, threshold: float = 0.5, min_object_um2: float = 0.0, mpp: float | None = None,
               outline_threshold: float | None = None):
    """An empty ``kidney.prob.zarr`` as the engine starts it, for a real (tiny) registered model (with
    the slide's µm/px recorded when ``mpp`` is given)."""
    card = ModelCard(name="tiny", architecture="Unet", encoder="tu-test_resnet", tile=64, overlap=16,
                     architecture_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})
    torch.manual_seed(0)
    model_dir = save_model(build_module(card).eval(), card, tmp_path / "models" / "tiny")
    settings = {"slide": str(tmp_path / "kidney.tif"), "slide_shape": [SIZE, SIZE], "out_shape": [SIZE, SIZE],
                "models": [{"name": "tiny", "path": str(model_dir), "threshold": threshold, "min_object_um2": min_object_um2,
                            "outline_threshold": outline_threshold}]}
    if mpp is not None:
        settings.update(mpp=mpp, mpp_source="file", mpp_file=mpp)
    path = tmp_path / "kidney.prob.zarr"
    store = ProbabilityStore.open_for_run(path, (SIZE, SIZE), 1.0, settings, "test")
    store.save_progress(complete=False)
    return store, path, model_dir


def fill(store) -> None:
    """What a finished run leaves: every row of :func:`probability_map` final."""
    store.write_rows(0, probability_map())
    store.mark_rows_done(SIZE)
    store.save_progress(complete=True)


@pytest.fixture
def prob_store(tmp_path):
    """``kidney.prob.zarr`` as the engine writes it, made by a real (tiny) registered model."""
    store, path, model_dir = open_store(tmp_path)
    fill(store)
    return path, model_dir


def open_panel(make_napari_viewer, qtbot, prob_path):
    from napari_hubmap._widgets.postprocess_panel import PostprocessPanel

    viewer = make_napari_viewer(show=True)
    levels, meta = open_probability(prob_path)
    viewer.add_image(list(levels), name="kidney probability", multiscale=True, contrast_limits=(0, 255),
                     metadata={"napari_hubmap": {"probability": str(prob_path), "downscale": 1.0}})
    viewer.reset_view()
    panel = PostprocessPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Post-processing")
    qtbot.waitUntil(lambda: panel.last_live.get("objects") is not None, timeout=20_000)
    return viewer, panel


def wait_for_new_preview(qtbot, panel, change):
    token = panel.last_live["token"]
    change()
    assert panel.live_settling  # a preview is due: what `view --screenshot` waits for
    qtbot.waitUntil(lambda: not panel.live_settling, timeout=20_000)
    assert panel.last_live["token"] > token
    return panel.last_live["objects"]


def test_sliders_update_the_live_labels_layer(make_napari_viewer, qtbot, prob_store):
    viewer, panel = open_panel(make_napari_viewer, qtbot, prob_store[0])
    assert panel.source.currentText() == "kidney probability"
    layer = panel.live_layer
    level, (y0, y1, x0, x1) = panel.last_live["level"], panel.last_live["window"]
    assert layer in viewer.layers and (y0, x0) == (0, 0)
    assert panel.last_live["objects"] == 3  # the figure eight is one object yet
    shown = np.asarray(open_probability(prob_store[0])[0][level][y0:y1, x0:x1])
    assert np.array_equal(layer.data > 0, shown >= 128)

    assert wait_for_new_preview(qtbot, panel, lambda: panel.watershed.setChecked(True)) == 4  # split in two
    assert wait_for_new_preview(qtbot, panel, lambda: panel.threshold.setValue(0.7)) == 3  # the faint one is gone
    area = int((panel.live_layer.data > 0).sum())
    assert wait_for_new_preview(qtbot, panel, lambda: panel.grow.setValue(4)) == 3  # outlines grown, none joined
    assert int((panel.live_layer.data > 0).sum()) > area and panel.config().grow == 4
    assert wait_for_new_preview(qtbot, panel, lambda: panel.grow.setValue(0)) == 3
    assert int((panel.live_layer.data > 0).sum()) == area
    assert wait_for_new_preview(qtbot, panel, lambda: panel.min_size.setValue(50_000)) == 0
    assert int(panel.live_layer.data.max()) == 0 and "0 glomeruli in the map" in panel.live_status.text()


def test_the_preview_follows_the_view_at_the_shown_level(make_napari_viewer, qtbot, prob_store, monkeypatch):
    """A map larger than the preview's limit (here 1024 px a side; 2048 in use) is previewed where the view is."""
    from napari_hubmap._widgets import probability_maps
    from napari_hubmap._widgets.postprocess_panel import camera_of

    monkeypatch.setattr(probability_maps, "MAX_VIEW_SIDE", 1024)
    viewer, panel = open_panel(make_napari_viewer, qtbot, prob_store[0])
    whole = panel.last_live["window"]
    camera = camera_of(viewer)
    camera.zoom *= 6
    camera.center = (200, 200)
    qtbot.waitUntil(lambda: panel.last_live["window"] != whole and not panel._live_busy, timeout=20_000)
    level, (y0, y1, x0, x1) = panel.last_live["level"], panel.last_live["window"]
    assert level == 0 and (y0, x0) == (0, 0) and y1 - y0 < SIZE and x1 - x0 < SIZE  # only what is on screen
    assert panel.last_live["objects"] == 3 and "3 glomeruli in view" in panel.live_status.text()  # not the map's count
    camera.center = (1100, 1100)  # pan to the empty part of the map
    qtbot.waitUntil(lambda: panel.last_live["window"][0] > 0 and not panel._live_busy, timeout=20_000)
    layer = panel.live_layer
    y0, _, x0, _ = panel.last_live["window"]
    assert panel.last_live["objects"] == 0 and tuple(layer.translate[-2:]) == (y0, x0)
    assert tuple(layer.scale[-2:]) == (1, 1)


def test_a_map_that_fits_is_previewed_whole_whatever_the_view(make_napari_viewer, qtbot, prob_store):
    """With the level shown no larger than the preview's limit, the preview covers all of it, zoomed in or not:
    napari's corners lag a view that grows without a camera event, which left glomeruli half labelled."""
    from napari_hubmap._widgets.postprocess_panel import camera_of

    viewer, panel = open_panel(make_napari_viewer, qtbot, prob_store[0])
    camera = camera_of(viewer)
    camera.zoom *= 6
    camera.center = (1100, 1100)
    qtbot.waitUntil(lambda: panel.last_live["level"] == 0 and not panel.live_settling, timeout=20_000)
    corners = np.asarray(viewer.layers["kidney probability"].corner_pixels)[:, -2:]
    assert (corners[1] + 1 - corners[0]).max() < SIZE  # napari shows a part ...
    assert panel.last_live["window"] == (0, SIZE, 0, SIZE) and panel.live_layer.data.shape == (SIZE, SIZE)  # ... the preview all
    assert panel.last_live["objects"] == 3 and "3 glomeruli in the map" in panel.live_status.text()


def test_the_preview_runs_again_when_inference_fills_the_map(make_napari_viewer, qtbot, tmp_path):
    store, path, _ = open_store(tmp_path)
    viewer, panel = open_panel(make_napari_viewer, qtbot, path)  # the map is still empty
    assert panel.last_live["objects"] == 0
    token = panel.last_live["token"]
    fill(store)
    viewer.layers["kidney probability"].refresh()  # what the Inference panel does as rows land
    qtbot.waitUntil(lambda: panel.last_live["token"] > token and not panel._live_busy and not panel._live_pending,
                    timeout=20_000)
    assert panel.last_live["objects"] == 3 and "3 glomeruli in the map" in panel.live_status.text()


def test_a_map_starts_at_its_models_threshold(make_napari_viewer, qtbot, tmp_path):
    store, path, _ = open_store(tmp_path, threshold=0.7)
    fill(store)
    viewer, panel = open_panel(make_napari_viewer, qtbot, path)
    assert panel.threshold.value() == pytest.approx(0.7)
    qtbot.waitUntil(lambda: not panel._live_busy and not panel._live_pending, timeout=20_000)
    level, (y0, y1, x0, x1) = panel.last_live["level"], panel.last_live["window"]
    shown = np.asarray(open_probability(path)[0][level][y0:y1, x0:x1])
    assert np.array_equal(panel.live_layer.data > 0, shown >= uint8_cutoff(0.7))  # the preview used it


def test_a_map_starts_at_its_models_outline_threshold(make_napari_viewer, qtbot, tmp_path):
    store, path, _ = open_store(tmp_path, threshold=0.9, outline_threshold=0.5)
    fill(store)
    viewer, panel = open_panel(make_napari_viewer, qtbot, path)
    assert panel.outline.value() == pytest.approx(0.5) and panel.config().outline_threshold == 0.5
    qtbot.waitUntil(lambda: not panel._live_busy and not panel._live_pending, timeout=20_000)
    level, (y0, y1, x0, x1) = panel.last_live["level"], panel.last_live["window"]
    shown = np.asarray(open_probability(path)[0][level][y0:y1, x0:x1])
    live = panel.live_layer.data > 0
    assert live.sum() > (shown >= uint8_cutoff(0.9)).sum()  # spread beyond the threshold's pixels
    assert not (live & (shown < uint8_cutoff(0.5))).any()
    assert panel.last_live["objects"] == 3  # the figure eight stays two; the faint one (0.6) never clears 0.9
    wait_for_new_preview(qtbot, panel, lambda: panel.outline.setValue(1.0))
    assert panel.config().outline_threshold is None
    assert np.array_equal(panel.live_layer.data > 0, shown >= uint8_cutoff(0.9))


def test_a_map_starts_at_its_models_smallest_glomerulus(make_napari_viewer, qtbot, tmp_path):
    store, path, _ = open_store(tmp_path, min_object_um2=250.0, mpp=0.5)  # 1000 px of 0.25 µm²
    fill(store)
    viewer, panel = open_panel(make_napari_viewer, qtbot, path)
    assert panel.min_size.value() == 1000
    qtbot.waitUntil(lambda: not panel._live_busy and not panel._live_pending, timeout=20_000)
    assert panel.last_live["objects"] == 2  # the faint lone one (~300 px over 0.5) is under it


def test_apply_to_slide_writes_the_labels_store_and_shows_it(make_napari_viewer, qtbot, prob_store):
    prob_path, _ = prob_store
    viewer, panel = open_panel(make_napari_viewer, qtbot, prob_path)
    panel.watershed.setChecked(True)
    panel.threshold.setValue(0.4)
    qtbot.waitUntil(lambda: not panel._live_busy and not panel._live_pending, timeout=20_000)
    click(qtbot, panel.apply_button)
    assert panel.running and not panel.apply_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
    assert panel.error is None and panel.result.objects == 4
    out = prob_path.parent / "kidney.labels.zarr"
    levels, meta = open_labels(out)
    expected = postprocess_region(probability_map(), PostprocessConfig(threshold=0.4, watershed=True))
    assert np.array_equal(np.asarray(levels[0][:]), expected)
    assert "kidney glomeruli" in viewer.layers and not panel.live_layer.visible
    assert "Done: 4 glomeruli" in panel.status.text()


def test_threshold_search_plots_marks_and_saves_the_best(make_napari_viewer, qtbot, prob_store):
    prob_path, model_dir = prob_store
    viewer, panel = open_panel(make_napari_viewer, qtbot, prob_path)
    truth = probability_map() >= uint8_cutoff(0.3)  # the map's objects at 0.3 are the "ground truth"
    viewer.add_labels(truth.astype(np.int32), name="ground truth")
    qtbot.waitUntil(lambda: panel.gt_source.findText("ground truth") >= 0, timeout=5_000)
    assert panel.gt_source.findText("glomeruli (live)") < 0  # the panel's own layers are no ground truth
    panel.gt_source.setCurrentText("ground truth")
    click(qtbot, panel.curve_button)
    qtbot.waitUntil(lambda: panel.curve is not None, timeout=20_000)
    assert panel.curve.best_threshold == pytest.approx(0.3) and panel.curve.best_dice == pytest.approx(1.0)
    assert panel.threshold.value() == pytest.approx(0.3)
    assert panel.axes.lines and panel.axes.lines[-1].get_xdata()[0] == pytest.approx(0.3)  # the best, marked
    click(qtbot, panel.save_button)
    assert json.loads((model_dir / "card.json").read_text())["threshold"] == pytest.approx(0.3)


def test_threshold_search_refuses_ground_truth_of_another_size(make_napari_viewer, qtbot, prob_store):
    viewer, panel = open_panel(make_napari_viewer, qtbot, prob_store[0])
    viewer.add_labels(np.zeros((100, 100), np.int32), name="other")
    qtbot.waitUntil(lambda: panel.gt_source.findText("other") >= 0, timeout=5_000)
    panel.gt_source.setCurrentText("other")
    panel.find_threshold()
    qtbot.waitUntil(lambda: panel.curve_button.isEnabled(), timeout=20_000)
    assert panel.curve is None and "no level of the map has that size" in panel.status.text()


def test_open_map_adds_a_foreign_ome_zarr_map_that_applies_to_the_slide(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Open map… (the folder dialog answered) reads another tool's NGFF 0.4 float map as a probability layer,
    chooses it, and Apply to slide post-processes it; an unreadable folder is the status's error."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFileDialog
    from test_foreign_maps import write_ngff

    from napari_hubmap._widgets.postprocess_panel import PostprocessPanel

    prob = probability_map()
    write_ngff(tmp_path / "other.zarr", prob / 255.0, omero_window=(0, 1))
    viewer = make_napari_viewer(show=True)
    panel = PostprocessPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Post-processing")
    answers = iter([str(tmp_path / "other.zarr"), str(tmp_path)])
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: next(answers))
    qtbot.mouseClick(panel.open_map_button, Qt.LeftButton)
    assert panel.source.currentText() == "other.zarr" and viewer.layers["other.zarr"].metadata["napari_hubmap"]["downscale"] == 1.0
    panel.watershed.setChecked(True)
    panel.threshold.setValue(0.4)
    qtbot.waitUntil(lambda: not panel._live_busy and not panel._live_pending, timeout=20_000)
    qtbot.mouseClick(panel.apply_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
    assert panel.error is None and panel.result.objects == 4
    expected = postprocess_region(prob, PostprocessConfig(threshold=0.4, watershed=True))
    assert np.array_equal(np.asarray(open_labels(tmp_path / "other.labels.zarr")[0][0][:]), expected)
    qtbot.mouseClick(panel.open_map_button, Qt.LeftButton)  # a folder that is no map
    assert "not a probability store" in panel.status.text() and len(viewer.layers) == 3
