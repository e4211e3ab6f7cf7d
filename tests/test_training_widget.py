"""The Training panel in a real viewer (Xvfb + Mesa) driving the real trainer (``napari-hubmap train``).

The data is tiny (four random 96 x 96 images with one blob each) and the settings tinier (2 steps an
epoch), so a run takes seconds; what is checked is the panel: the command line, progress and curves
from the trainer's events, Cancel (SIGTERM, checkpoint, process gone), a finished model compared with
its parent, Inference panels refreshed, and closing the viewer stopping the trainer.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from napari_gui import click

pytestmark = pytest.mark.gui

PRESET = "unet-resnet18"
TINY = {"batch": 2, "samples": 4, "tile": 64, "workers": 0}  # 2 steps an epoch, tiles loaded in the trainer


@pytest.fixture
def data_folder(tmp_path):
    """``images/`` and ``masks/`` (0/1, same stems): four 96 x 96 RGB images, one bright blob each."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    for i in range(4):
        image = rng.integers(0, 160, (96, 96, 3), dtype=np.uint8)
        mask = (np.hypot(yy - 30 - 10 * i, xx - 40 - 5 * i) < 14).astype(np.uint8)
        image[mask > 0] = (230, 120, 200)
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    (root / "dataset.json").write_text(json.dumps({"mpp": 2.0}))  # the working scale: no resampling
    return root


@pytest.fixture
def isolated_models(tmp_path, monkeypatch):
    """No user models; new ones go to ``tmp/xdg/napari-hubmap/models``."""
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "napari-hubmap" / "models"


def open_panel(make_napari_viewer, qtbot, data=None, **settings):
    from napari_hubmap._widgets.training_panel import PRESET_KIND, TrainingPanel

    viewer = make_napari_viewer(show=True)  # shown: the tests press the dock's buttons
    panel = TrainingPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Training")
    qtbot.waitUntil(lambda: panel.models_folder is not None, timeout=30_000)
    assert panel.set_base(PRESET_KIND, PRESET)
    if data is not None:
        panel.data.setText(str(data))
    for name, value in {**TINY, **settings}.items():
        getattr(panel, name).setValue(value)
    return viewer, panel


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_panel_builds_the_trainer_command(make_napari_viewer, qtbot, isolated_models, data_folder):
    viewer, panel = open_panel(make_napari_viewer, qtbot)
    click(qtbot, panel.start_button)
    assert not panel.running and "folder" in panel.status.text()  # no data yet
    panel.data.setText(str(data_folder))
    panel.epochs.setValue(3)
    panel.lr.setValue(0.0005)
    assert panel.model_name() == f"{PRESET}-trained"
    assert panel.output_folder() == isolated_models / f"{PRESET}-trained"
    command = panel.command()
    assert command[:4] == [sys.executable, "-m", "napari_hubmap.cli", "train"] and command[-1] == "--events"
    options = dict(zip(command[4:-1:2], command[5:-1:2]))
    assert options == {"--data": str(data_folder), "--preset": PRESET, "--epochs": "3",
                       "--out": str(isolated_models / f"{PRESET}-trained"), "--lr": "0.0005",
                       "--batch": "2", "--samples-per-epoch": "4", "--tile": "64", "--workers": "0"}
    panel.folds.setValue(5)
    panel.fold.setValue(2)
    assert command_options(panel)["--folds"] == "5" and command_options(panel)["--fold"] == "2"
    assert "--stain-standardise" not in panel.command()
    panel.stain.setChecked(True)
    assert panel.command()[-2:] == ["--stain-standardise", "--events"]


def command_options(panel) -> dict:
    command = panel.command()
    return dict(zip(command[4:-1:2], command[5:-1:2]))


def test_metrics_are_compared_with_the_parent(tmp_path, monkeypatch):
    from napari_hubmap._widgets.training_panel import compare_models, format_metrics, free_model_name
    from napari_hubmap.registry import ModelCard, build_module, save_model

    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(tmp_path / "models"))
    tiny = {"architecture": "Unet", "encoder": "tu-test_resnet", "tile": 64, "overlap": 16,
            "architecture_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}
    parent = ModelCard(name="kaggle", metrics={"dice": 0.8125}, **tiny)
    child = ModelCard(name="kaggle-tuned", parent="kaggle", **tiny,
                      metrics={"validation": {"dice": 0.9, "object_f1": 0.75, "epoch": 3, "objects": {"tp": 3}}})
    for card in (parent, child):
        save_model(build_module(card).eval(), card, tmp_path / "models" / card.name)
    assert format_metrics(child.metrics) == "Dice 0.9 · object F1 0.75"
    text = compare_models(tmp_path / "models" / "kaggle-tuned", "kaggle")
    assert text == "kaggle-tuned: Dice 0.9 · object F1 0.75 | parent kaggle: Dice 0.812"
    assert compare_models(tmp_path / "models" / "kaggle", None).endswith("(no parent: trained from a preset)")
    assert "parent gone: not found" in compare_models(tmp_path / "models" / "kaggle", "gone")
    assert free_model_name(tmp_path / "models", "kaggle") == "kaggle-2"
    (tmp_path / "models" / "kaggle.checkpoint").mkdir()  # a cancelled run of that name: resumed, not renamed
    assert free_model_name(tmp_path / "models", "kaggle") == "kaggle"


def test_progress_curves_cancel_resume_and_close(make_napari_viewer, qtbot, isolated_models, data_folder, monkeypatch):
    from napari_hubmap._widgets import training_panel
    from napari_hubmap._widgets.training_panel import CANCELLED_MESSAGE, checkpoint_of

    # the graceful path is under test here: on a loaded machine the step (or validation) that Cancel waits
    # for may outlast the kill deadline, which would turn this into the kill path
    monkeypatch.setattr(training_panel, "KILL_AFTER_S", 300.0)
    viewer, panel = open_panel(make_napari_viewer, qtbot, data_folder, epochs=50)
    click(qtbot, panel.start_button)
    process = panel.process
    assert panel.running and not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: process.processId() > 0, timeout=10_000)
    pid = process.processId()
    qtbot.waitUntil(lambda: len(panel.curves.epochs) >= 1, timeout=90_000)
    assert panel.running and panel.progress.maximum() == 100 and panel.progress.value() >= 2
    assert list(panel.curves.dice_line.get_xdata()) == [1]
    plotted_dice = panel.curves.dice_line.get_ydata()[0]
    assert len(panel.curves.steps[0]) >= 2 and len(panel.curves.epoch_loss_line.get_xdata()) == 1
    assert "Epoch" in panel.status.text()

    click(qtbot, panel.cancel_button)
    qtbot.waitUntil(lambda: not panel.running, timeout=300_000)
    assert panel.status.text() == CANCELLED_MESSAGE
    assert process_gone(pid) and process.exitCode() == 130
    out = isolated_models / f"{PRESET}-trained"
    assert checkpoint_of(out).is_dir() and panel.model_name() == out.name  # the same name: Start resumes
    history = json.loads((checkpoint_of(out) / "state.json").read_text())["history"]
    assert history[0]["epoch"] == 1 and plotted_dice == pytest.approx(history[0]["val_dice"])  # what the trainer measured

    click(qtbot, panel.start_button)
    qtbot.waitUntil(lambda: any(e["event"] == "start" for e in panel.events), timeout=60_000)
    start = next(e for e in panel.events if e["event"] == "start")
    assert start["resumed_at"] >= 1 and "resumed after epoch" in panel.status.text()
    pid = panel.process.processId()
    viewer.close()  # the panel sees its window close: the trainer is stopped, not left running
    assert process_gone(pid) and panel.events[-1]["event"] == "cancelled"  # SIGTERM, so a checkpoint again


def test_the_data_folder_defaults_to_the_review_project(make_napari_viewer, qtbot, tmp_path):
    from napari_hubmap._widgets.review_panel import ReviewPanel
    from napari_hubmap._widgets.training_panel import TrainingPanel
    from napari_hubmap.project import init_project

    init_project(tmp_path / "project", tile=128, downscale=1)
    viewer = make_napari_viewer()
    review = ReviewPanel(viewer)
    viewer.window.add_dock_widget(review, name="Review")
    assert review.open(tmp_path / "project")
    panel = TrainingPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Training")
    assert panel.data.text() == str(tmp_path / "project") and panel.data_folders() == [str(tmp_path / "project")]


def test_a_finished_run_registers_the_model_and_refreshes_inference(make_napari_viewer, qtbot, isolated_models,
                                                                       data_folder):
    from napari_hubmap._widgets.inference_panel import InferencePanel
    from napari_hubmap._widgets.training_panel import MODEL_KIND, checkpoint_of

    viewer, panel = open_panel(make_napari_viewer, qtbot, data_folder, epochs=2)
    inference = InferencePanel(viewer)
    viewer.window.add_dock_widget(inference, name="Inference")
    qtbot.waitUntil(lambda: "no models" in inference.models.item(0).text(), timeout=30_000)
    panel.start()
    qtbot.waitUntil(lambda: panel.process is not None and not panel.running, timeout=120_000)
    out = isolated_models / f"{PRESET}-trained"
    assert (out / "card.json").is_file() and (out / "model.safetensors").is_file()
    assert not checkpoint_of(out).exists() and panel.progress.value() == panel.progress.maximum() == 4
    text = panel.status.text()
    assert text.startswith(f"Done: {out.name}: Dice ") and "object F1" in text and "no parent" in text, text
    assert [len(line.get_xdata()) for line in (panel.curves.dice_line, panel.curves.epoch_loss_line)] == [2, 2]
    assert any(item.text().startswith(out.name) for item in inference.model_items())
    qtbot.waitUntil(lambda: panel.base_index(MODEL_KIND, out.name) >= 0, timeout=30_000)  # fine-tune it next
    assert panel.model_name() == f"{out.name}-2"


def test_a_failing_trainer_shows_its_error(make_napari_viewer, qtbot, isolated_models, tmp_path):
    viewer, panel = open_panel(make_napari_viewer, qtbot, tmp_path / "no-such-data")
    panel.start()
    qtbot.waitUntil(lambda: panel.process is not None and not panel.running, timeout=60_000)
    assert panel.process.exitCode() == 2 and panel.result is None
    assert panel.status.text().startswith("Training failed: ") and "no-such-data" in panel.status.text()
    assert panel.start_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_inference_list_shows_a_trained_model_beside_its_parent():
    from napari_hubmap._widgets.inference_panel import describe_card
    from napari_hubmap.registry import ModelCard

    parent = ModelCard(name="base", architecture="Unet", encoder="resnet18",
                       metrics={"validation": {"dice": 0.7, "object_f1": 0.6}})
    child = parent.replace(name="base-trained", parent="base", metrics={"validation": {"dice": 0.8125, "object_f1": 0.75}})
    line = describe_card(child, parent)
    assert "val Dice 0.812, F1 0.75" in line and "from base (val Dice 0.7, F1 0.6)" in line
    assert "from base" in describe_card(child) and "(val" not in describe_card(child).split("from base")[1]
