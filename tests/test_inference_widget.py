"""The Inference panel in a real viewer (Xvfb + Mesa): run, live layer, responsiveness, cancel, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_hubmap.stores.probability import open_probability
from napari_hubmap.registry import ModelCard, build_module, save_model
from napari_hubmap.synth import SynthSpec, write_synthetic_tiff
from napari_gui import click

pytestmark = pytest.mark.gui

TINY_UNET = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}


def tiny_card(name="tiny", **fields) -> ModelCard:
    fields = {"downscale": 1.0, "tile": 64, "overlap": 16, **fields}
    return ModelCard(name=name, architecture="Unet", encoder="tu-test_resnet", architecture_kwargs=dict(TINY_UNET), **fields)


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    """``tmp/models`` holding the tiny model, first on the search path; no user models."""
    root = tmp_path / "models"
    card = tiny_card(metrics={"dice": 0.8125})
    torch.manual_seed(0)
    save_model(build_module(card).eval(), card, root / "tiny")
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(root))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return root


def synthetic_slide(folder, width=1024, height=768):
    path = folder / "slides" / f"kidney{width}.tif"
    path.parent.mkdir(exist_ok=True)
    write_synthetic_tiff(path, SynthSpec(width=width, height=height, seed=1))
    return path


@pytest.fixture
def slide_path(tmp_path):
    return synthetic_slide(tmp_path)


def open_panel(make_napari_viewer, qtbot, slide=None):
    from napari_hubmap._widgets.inference_panel import InferencePanel

    viewer = make_napari_viewer(show=True)  # shown: the tests press the dock's buttons
    panel = InferencePanel(viewer)
    viewer.window.add_dock_widget(panel, name="Inference")
    layer = viewer.open(str(slide), plugin="napari-hubmap")[0] if slide else None
    qtbot.waitUntil(lambda: any(item.text().startswith("tiny") for item in panel.model_items()), timeout=30_000)
    return viewer, panel, layer


def wait_done(qtbot, panel, timeout=30_000):
    qtbot.waitUntil(lambda: not panel.running, timeout=timeout)


def test_panel_lists_models_and_describes_the_run(make_napari_viewer, qtbot, models_root, slide_path):
    viewer, panel, _ = open_panel(make_napari_viewer, qtbot)
    item = next(item for item in panel.model_items() if item.text().startswith("tiny"))
    assert "Unet/tu-test_resnet" in item.text() and "×1" in item.text() and "dice 0.812" in item.text()
    click(qtbot, panel.run_button)
    assert not panel.running and "slide" in panel.status.text()  # no slide yet

    viewer.open(str(slide_path), plugin="napari-hubmap")
    panel.set_checked([])
    click(qtbot, panel.run_button)
    assert not panel.running and "model" in panel.status.text()
    panel.set_checked(["tiny"])
    assert panel.checked_models() == [str(models_root / "tiny")]
    config = panel.config()
    assert (config["tile"], config["overlap"], config["tta"], config["blend"], config["batch"]) == (None, None, "none", "gaussian", 4)
    panel.tile.setValue(128)
    panel.overlap.setValue(0)  # a real zero overlap, not "from card"
    panel.tta.setCurrentText("d4")
    assert (panel.config()["tile"], panel.config()["overlap"], panel.config()["tta"]) == (128, 0, "d4")
    devices = [panel.device.itemText(i) for i in range(panel.device.count())]
    assert devices == ["auto", "cpu", "cuda", "mps"]  # the command line's list (defaults.DEVICES), mps included
    assert config["backend"] == "auto"
    panel.backend.setCurrentText("torch")
    assert panel.config()["backend"] == "torch"  # the run gets what the combo shows
    assert panel.output_folder(slide_path_slide(viewer)) == slide_path.parent / "predictions"
    assert panel.out_folder.placeholderText() == str(slide_path.parent / "predictions")

    (models_root / "tiny").rename(models_root / "renamed")  # Refresh re-reads the search path
    panel.refresh_models()
    from qtpy.QtCore import Qt

    folders = [item.data(Qt.ItemDataRole.UserRole) for item in panel.model_items()]
    assert str(models_root / "renamed") in folders and str(models_root / "tiny") not in folders


def slide_path_slide(viewer):
    from napari_hubmap._widgets.slide_panel import slide_of

    return next(slide_of(layer) for layer in viewer.layers if slide_of(layer) is not None)


def test_run_fills_a_live_probability_layer_without_freezing_the_viewer(
    make_napari_viewer, qtbot, models_root, slide_path, record_property
):
    from qtpy.QtCore import QTimer

    viewer, panel, slide_layer = open_panel(make_napari_viewer, qtbot, slide_path)
    panel.set_checked(["tiny"])
    seen = []
    gaps = {"last": None, "longest": 0.0, "ticks": 0}

    def tick():
        now = time.perf_counter()
        gaps["ticks"] += 1
        if gaps["last"] is not None:
            gaps["longest"] = max(gaps["longest"], now - gaps["last"])
        gaps["last"] = now

    added_while_running = []
    viewer.layers.events.inserted.connect(lambda event: added_while_running.append(panel.result is None))
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    click(qtbot, panel.run_button)
    worker = panel.worker
    assert worker is not None and not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
    worker.yielded.connect(seen.append)
    started = time.perf_counter()
    wait_done(qtbot, panel)
    seconds = time.perf_counter() - started
    timer.stop()
    print(f"\ninference run {seconds:.2f} s, {len(seen)} progress events, longest event-loop stall {gaps['longest']:.3f} s")
    record_property("longest_stall_s", round(gaps["longest"], 4))
    # Measured against this run's own speed: a loaded machine slows the inference and the event loop alike
    # (0.62 s stalls seen beside a benchmark), while inference on the GUI thread stalls for the whole run.
    assert gaps["longest"] < max(0.5, 0.25 * seconds), (gaps["longest"], seconds)
    assert gaps["ticks"] >= seconds / 0.25  # the loop kept turning, not once at the end

    assert panel.error is None, panel.error
    result = panel.result
    assert result.complete and panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert seen and seen[-1].done == seen[-1].total == result.tiles
    assert panel.progress.value() == panel.progress.maximum() == result.tiles
    assert "Done" in panel.status.text() and f"{result.tiles} tiles" in panel.status.text()
    assert f"{result.skipped} skipped" in panel.status.text()

    store = slide_path.parent / "predictions" / "kidney1024.prob.zarr"
    assert result.path == store
    layer = viewer.layers["kidney1024 probability"]
    assert layer is panel.prob_layer
    assert added_while_running == [True]  # shown on the first progress event, before the run ended
    levels, meta = open_probability(store)
    assert meta["downscale"] == 1.0 and meta["progress"]["complete"]
    assert len(levels) == 1 and not layer.multiscale
    assert layer.data.shape == levels[0].shape == (768, 1024)
    np.testing.assert_array_equal(np.asarray(layer.data[:]), levels[0][:])
    assert levels[0][:].max() > 0
    assert tuple(layer.scale) == tuple(slide_layer.scale) and tuple(layer.translate) == tuple(slide_layer.translate)
    assert layer.colormap.name == "magma" and layer.blending == "additive" and layer.opacity == pytest.approx(0.6)
    assert tuple(layer.contrast_limits) == (0, 255)
    shown = np.asarray(layer._slice.image.raw)  # the displayed slice was refreshed after the last rows
    np.testing.assert_array_equal(shown, np.asarray(levels[0][:]))

    click(qtbot, panel.run_button)  # a re-run with the same settings resumes a finished store: nothing to compute
    assert panel.running
    wait_done(qtbot, panel)
    assert panel.result.complete and panel.result.computed == 0
    assert [layer.name for layer in viewer.layers].count("kidney1024 probability") == 1


def test_panel_and_cli_give_an_ome_tif_slide_the_same_map_name(make_napari_viewer, qtbot, models_root, tmp_path, capsys):
    """``kidney.ome.tif`` -> ``kidney.prob.zarr`` from both faces (the panel once wrote ``kidney.ome.prob.zarr``)."""
    from napari_hubmap.cli import main

    slide = tmp_path / "slides" / "kidney.ome.tif"
    slide.parent.mkdir()
    write_synthetic_tiff(slide, SynthSpec(width=256, height=192, seed=1))
    out = tmp_path / "out"
    assert main(["predict", str(slide), "--model", "tiny", "--out", str(out)]) == 0
    cli_out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"]
    viewer, panel, _ = open_panel(make_napari_viewer, qtbot, slide)
    panel.set_checked(["tiny"])
    panel.out_folder.setText(str(out))
    panel.run()
    wait_done(qtbot, panel)
    assert panel.error is None, panel.error
    assert panel.result.path == Path(cli_out) == out / "kidney.prob.zarr"
    assert sorted(p.name for p in out.iterdir()) == ["kidney.prob.zarr"]
    assert "kidney probability" in viewer.layers


def test_ensemble_at_two_scales_gives_an_aligned_multiscale_layer(make_napari_viewer, qtbot, models_root, tmp_path):
    card = tiny_card("coarse", downscale=2.0, tile=128, overlap=32)
    torch.manual_seed(1)
    save_model(build_module(card).eval(), card, models_root / "coarse")
    slide = synthetic_slide(tmp_path, width=2100, height=1100)
    viewer, panel, slide_layer = open_panel(make_napari_viewer, qtbot, slide)
    slide_layer.scale = (0.5, 0.5)
    slide_layer.translate = (10.0, 20.0)
    panel.refresh_models()
    panel.set_checked(["coarse"])
    panel.out_folder.setText(str(tmp_path / "out"))
    panel.tile.setValue(256)
    panel.run()
    wait_done(qtbot, panel)
    assert panel.error is None, panel.error
    layer = viewer.layers["kidney2100 probability"]
    levels, meta = open_probability(tmp_path / "out" / "kidney2100.prob.zarr")
    assert meta["downscale"] == 2.0 and len(levels) == 2 and layer.multiscale
    assert [tuple(level.shape) for level in layer.data] == [(550, 1050), (275, 525)]
    np.testing.assert_array_equal(np.asarray(layer.data[1][:]), levels[1][:])
    assert tuple(layer.scale) == (1.0, 1.0)
    assert tuple(layer.translate) == (10.25, 20.25)  # map pixel centres sit between slide pixels 0 and 1


def start_slow_run(make_napari_viewer, qtbot, slide_path, monkeypatch):
    """The tiny model's run on the slide, each batch slowed by 0.2 s, once its first report is in: (viewer, panel)."""
    from napari_hubmap.inference import engine

    original = engine.forward_probabilities

    def slow(*args, **kwargs):
        time.sleep(0.2)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "forward_probabilities", slow)
    viewer, panel, _ = open_panel(make_napari_viewer, qtbot, slide_path)
    panel.set_checked(["tiny"])
    click(qtbot, panel.run_button)
    qtbot.waitUntil(lambda: panel.last_progress is not None, timeout=30_000)
    return viewer, panel


def test_cancel_stops_after_the_current_batch_and_keeps_a_readable_store(
    make_napari_viewer, qtbot, models_root, slide_path, monkeypatch
):
    viewer, panel = start_slow_run(make_napari_viewer, qtbot, slide_path, monkeypatch)
    click(qtbot, panel.cancel_button)
    assert not panel.cancel_button.isEnabled()
    wait_done(qtbot, panel)
    from napari_hubmap.progress import Cancelled

    assert isinstance(panel.error, Cancelled), panel.error
    assert panel.result is None  # not complete
    assert "Cancelled" in panel.status.text()
    assert panel.last_progress.done < panel.last_progress.total
    store = slide_path.parent / "predictions" / "kidney1024.prob.zarr"
    levels, meta = open_probability(store)
    assert levels[0].shape == (768, 1024) and meta["progress"]["complete"] is False
    assert json.loads((store / "progress.json").read_text())["complete"] is False
    assert "kidney1024 probability" in viewer.layers
    assert panel.run_button.isEnabled()


def test_a_panel_deleted_mid_run_stops_its_work_and_hears_nothing_more(
    make_napari_viewer, qtbot, models_root, slide_path, monkeypatch
):
    """The viewer (or the panel) is deleted while the map is computed: the work is cancelled, its store
    stays readable and resumable, and its last reports never touch the deleted widgets (a Qt error)."""
    viewer, panel = start_slow_run(make_napari_viewer, qtbot, slide_path, monkeypatch)
    controls, cancel = panel.controls, panel.cancel_event
    viewer.window.remove_dock_widget(panel)
    with qtbot.waitSignal(controls.destroyed, timeout=10_000):
        panel.deleteLater()
    wait_done(qtbot, panel)  # exceptions raised in Qt's event loop meanwhile fail the test (pytest-qt)
    assert cancel.is_set() and controls.closed.is_set()
    assert panel.result is None and panel.error is None  # nothing handed to the deleted panel
    store = slide_path.parent / "predictions" / "kidney1024.prob.zarr"
    assert json.loads((store / "progress.json").read_text())["complete"] is False
    assert open_probability(store)[0][0].shape == (768, 1024)


def test_engine_errors_show_in_the_panel_and_never_crash_the_viewer(
    make_napari_viewer, qtbot, models_root, slide_path, monkeypatch
):
    import napari.utils.notifications as notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer, panel, _ = open_panel(make_napari_viewer, qtbot, slide_path)
    panel.set_checked(["tiny"])
    panel.tile.setValue(32)
    panel.overlap.setValue(32)  # overlap must be smaller than the tile: a HubmapInputError
    assert panel.run() is not None
    wait_done(qtbot, panel)
    assert panel.result is None and "overlap must be in [0, tile)" in str(panel.error)
    assert panel.status.text().startswith("Inference failed:") and "overlap" in panel.status.text()
    assert shown and "overlap" in shown[0]
    assert panel.run_button.isEnabled() and "kidney1024 probability" not in viewer.layers


FRESH_VIEWER_SCRIPT = """
import sys, time
import napari
from qtpy.QtCore import QEventLoop, QTimer

viewer = napari.Viewer(show=True)
viewer.open(sys.argv[1], plugin="napari-hubmap")

def wait(condition, seconds):
    loop, end = QEventLoop(), time.perf_counter() + seconds
    timer = QTimer()
    timer.timeout.connect(lambda: (condition() or time.perf_counter() > end) and loop.quit())
    timer.start(20)
    loop.exec()
    timer.stop()
    return condition()

wait(lambda: False, 1.0)  # let the canvas draw: the OpenGL driver (Mesa: libLLVM) is loaded now
assert "torch" not in sys.modules, "torch must not be imported before the panel in this check"
from napari_hubmap._widgets.inference_panel import InferencePanel

panel = InferencePanel(viewer)
viewer.window.add_dock_widget(panel)
assert wait(lambda: panel.model_items(), 90), panel.status.text()
panel.set_checked(["tiny"])
panel.run()
assert wait(lambda: not panel.running, 90), panel.status.text()
print("STATUS", panel.status.text())
viewer.close()
"""


def test_a_fresh_viewer_loads_the_models_and_runs_after_its_gl_context_exists(models_root, tmp_path):
    """torch/smp imported only after napari drew (the plugin-menu path) must not crash the process."""
    import os
    import subprocess
    import sys

    slide = synthetic_slide(tmp_path, width=512, height=384)
    script = tmp_path / "fresh_viewer.py"
    script.write_text(FRESH_VIEWER_SCRIPT)
    env = {**os.environ, "NAPARI_HUBMAP_MODELS": str(models_root), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    result = subprocess.run([sys.executable, str(script), str(slide)], capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, f"rc {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "STATUS Done:" in result.stdout, result.stdout[-2000:]
