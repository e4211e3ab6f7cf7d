"""µm per pixel: given (--mpp, the Slide panel), from the file, or assumed, and always said; slides coarser
than a model's working scale are upsampled (predict -> postprocess -> export in full-resolution pixels)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_hubmap.defaults import DEFAULT_MPP
from napari_hubmap.errors import HubmapInputError
from napari_hubmap.slide import open_slide
from napari_hubmap.slide.scale import SlideScale, check_mpp, recorded_scale, slide_scale
from test_cli_postprocess import assert_one_error_line, one_json_line, run

CLI = [str(Path(sys.executable).with_name("napari-hubmap"))]
TINY_UNET = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
TARGET_MPP = 2.0


def tiny_mpp_model(folder: Path) -> Path:
    """A depth-3 U-Net whose card works at TARGET_MPP µm/px (its fallback downscale 1 is never used)."""
    import torch

    from napari_hubmap.registry import ModelCard, build_module, save_model

    card = ModelCard(name="tiny-mpp", architecture="Unet", encoder="tu-test_resnet",
                     architecture_kwargs=dict(TINY_UNET), downscale=1.0, target_mpp=TARGET_MPP, tile=64, overlap=16)
    torch.manual_seed(0)
    save_model(build_module(card).eval(), card, folder / "tiny-mpp")
    return folder / "tiny-mpp"


def tissue_png(path: Path, shape=(200, 240)) -> Path:
    rng = np.random.default_rng(7)
    image = np.full((*shape, 3), 235, np.uint8)
    h, w = shape
    image[h // 6 : h - h // 6, w // 6 : w - w // 6] = rng.integers(80, 200, (h - 2 * (h // 6), w - 2 * (w // 6), 3))
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def png(tmp_path) -> Path:
    return tissue_png(tmp_path / "kidney.png")


@pytest.fixture
def tagged_tiff(tmp_path) -> Path:
    """A TIFF whose resolution tags say 0.25 µm/px."""
    path = tmp_path / "tagged.tif"
    image = np.full((256, 256, 3), 200, np.uint8)
    tifffile.imwrite(path, image, photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_mpp_model(tmp_path_factory.mktemp("models"))


# --- the rule --------------------------------------------------------------------------------------


def test_the_rule_given_wins_else_the_file_else_assumed():
    assert slide_scale(None) == SlideScale(DEFAULT_MPP, "assumed", None)
    assert slide_scale(0.25) == SlideScale(0.25, "file", 0.25)
    given = slide_scale(0.25, "2")
    assert given == SlideScale(2.0, "option", 0.25) and given.overrides_file
    assert "not the file's 0.25" in given.warning("x.tif")
    assert slide_scale(0.25, 0.25).warning("x.tif") is None  # the file's own value: nothing to say
    assert "assuming 0.5" in slide_scale(None).warning("x.png")
    assert slide_scale(None).as_dict() == {"mpp": 0.5, "mpp_source": "assumed", "mpp_file": None}
    assert recorded_scale({}) == slide_scale(None)
    assert recorded_scale({"mpp": 2.0, "mpp_source": "option", "mpp_file": None}, given=1) == SlideScale(1.0, "option")


@pytest.mark.parametrize("bad", [0, -1, "abc", "nan", "inf", "", True, None])
def test_bad_mpp_values_are_one_clear_error(bad):
    with pytest.raises(HubmapInputError, match="µm per pixel must be a number > 0"):
        check_mpp(bad)


def test_open_slide_takes_a_given_mpp_and_set_mpp_changes_it(png, tagged_tiff):
    with open_slide(png) as slide:
        assert slide.mpp is None and slide.scale.assumed and slide.info()["mpp_source"] == "assumed"
        assert slide.set_mpp("2.0") == SlideScale(2.0, "option", None) and slide.mpp == 2.0
        with pytest.raises(HubmapInputError):
            slide.set_mpp("-3")
        assert slide.mpp == 2.0  # a bad value changes nothing
        assert slide.set_mpp("").assumed and slide.mpp is None
    with open_slide(tagged_tiff, mpp=1.0) as slide:
        assert slide.info()["mpp"] == 1.0 and slide.info()["mpp_file"] == pytest.approx(0.25)
    with pytest.raises(HubmapInputError, match="µm per pixel"):
        open_slide(png, mpp=0)


# --- upsampling a slide coarser than the working scale ---------------------------------------------


def test_plan_never_makes_a_map_finer_than_the_slide():
    from napari_hubmap.inference.plan import ModelRun, make_plan

    plan = make_plan((200, 240), [ModelRun(0, None, 0.5, 64, 16)], None, 4)
    assert plan.out_downscale == 1.0 and plan.out_shape == (200, 240)
    assert plan.runs[0].out_tile == 32 and max(j.out_y0 + j.out_size for j in plan.jobs) >= 200


def test_tile_reader_upsamples_level_0(png):
    from napari_hubmap.inference.tile_reader import TileReader, level_for

    assert level_for([(0, 1.0), (1, 2.0)], 0.5) == 0 and level_for([(0, 1.0), (1, 2.0)], 3.0) == 1
    reader = TileReader(str(png))
    tile = reader.read(40, 60, 64, 0.5)  # working pixels (40, 60) = full-resolution (20, 30), 32 px across
    region = np.asarray(Image.open(png))[20:52, 30:62].astype(int)
    assert tile.shape == (64, 64, 3)
    assert np.abs(tile.astype(int).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)) - region).mean() < 25


# --- the CLI ---------------------------------------------------------------------------------------


def test_predict_follows_mpp_and_says_the_assumption(tmp_path, png, model, capsys):
    from napari_hubmap.stores.probability import open_probability

    lines = {}
    for mpp in ("1", "0.5"):
        code, out, err = run(capsys, "predict", png, "--model", model, "--out", tmp_path / f"at{mpp}", "--mpp", mpp)
        assert code == 0, err
        lines[mpp] = one_json_line(out)
        assert lines[mpp] | {"mpp_source": "option", "mpp": float(mpp), "mpp_file": None} == lines[mpp]
    assert (lines["1"]["downscale"], lines["0.5"]["downscale"]) == (2.0, 4.0)  # TARGET_MPP / mpp
    maps = {mpp: open_probability(line["out"])[1] for mpp, line in lines.items()}
    assert maps["0.5"]["downscale"] == 2 * maps["1"]["downscale"] and maps["1"]["mpp"] == 1.0
    with pytest.warns(UserWarning, match="no µm/px in the file; assuming 0.5"):
        code, out, _ = run(capsys, "predict", png, "--model", model, "--out", tmp_path / "assumed")
    line = one_json_line(out)
    assert code == 0 and line["downscale"] == 4.0
    assert (line["mpp"], line["mpp_source"], line["mpp_file"]) == (0.5, "assumed", None)


def test_a_working_scale_within_one_percent_of_a_whole_shrink_is_that_shrink(tmp_path, png, model, capsys):
    """A scanner's 0.499 µm/px is run as a whole 4x shrink of the slide (2.0 / 0.499 = 4.008: within 1 %), the
    map the one of 0.5 µm/px; 0.45 µm/px (4.44x) keeps its own scale."""
    from napari_hubmap.registry.card import snap_downscale
    from napari_hubmap.stores.probability import open_probability

    assert (snap_downscale(4.008), snap_downscale(4.444), snap_downscale(0.999), snap_downscale(0.9)) == (4.0, 4.444, 1.0, 0.9)
    lines = {}
    for mpp in ("0.499", "0.5", "0.45"):
        code, out, err = run(capsys, "predict", png, "--model", model, "--out", tmp_path / f"at{mpp}", "--mpp", mpp)
        assert code == 0, err
        lines[mpp] = one_json_line(out)
    assert [lines[m]["downscale"] for m in ("0.499", "0.5")] == [4.0, 4.0]
    assert lines["0.45"]["downscale"] == pytest.approx(2.0 / 0.45)
    at499, at5 = (np.asarray(open_probability(lines[m]["out"])[0][0]) for m in ("0.499", "0.5"))
    np.testing.assert_array_equal(at499, at5)


def test_a_slide_coarser_than_the_working_scale_predicts_postprocesses_and_exports(tmp_path, png, model, capsys):
    from napari_hubmap.annotations import read_rle_csv, rle_decode
    from napari_hubmap.stores.labels import open_labels

    code, out, err = run(capsys, "predict", png, "--model", model, "--out", tmp_path, "--mpp", 4)  # working at 0.5
    line = one_json_line(out)
    assert code == 0 and line["complete"] and line["downscale"] == 1.0, err
    prob = tmp_path / "kidney.prob.zarr"
    from napari_hubmap.stores.probability import open_probability

    levels, meta = open_probability(prob)
    assert meta["slide_shape"] == [200, 240] and levels[0].shape == (200, 240) and meta["models"][0]["downscale"] == 0.5
    assert np.asarray(levels[0]).max() > 0
    labels_path = tmp_path / "kidney.labels.zarr"
    assert run(capsys, "postprocess", prob, "--out", labels_path, "--threshold", 0.5)[0] == 0
    labels = np.asarray(open_labels(labels_path)[0][0])
    assert run(capsys, "export", labels_path, "--format", "rle-csv", "--out", tmp_path / "k.csv")[0] == 0
    mask = rle_decode(next(iter(read_rle_csv(tmp_path / "k.csv").values())), (200, 240))
    assert np.array_equal(mask.astype(bool), labels > 0)
    assert run(capsys, "export", labels_path, "--format", "geojson", "--out", tmp_path / "k.geojson")[0] == 0
    features = json.loads((tmp_path / "k.geojson").read_text())["features"]
    points = np.array([p for f in features for ring in f["geometry"]["coordinates"] for p in ring], float)
    assert len(features) and points[:, 0].max() <= 240 and points[:, 1].max() <= 200
    code, out, _ = run(capsys, "evaluate", prob, "--gt", tmp_path / "k.geojson")
    assert code == 0 and one_json_line(out)["mpp"] == 4.0 and one_json_line(out)["mpp_source"] == "option"


def test_info_and_evaluate_take_mpp(png, tagged_tiff, tmp_path, capsys):
    assert one_json_line(run(capsys, "info", png, "--mpp", 2)[1])["mpp_source"] == "option"
    info = one_json_line(run(capsys, "info", tagged_tiff, "--mpp", 1)[1])
    assert (info["mpp"], info["mpp_source"], info["mpp_file"]) == (1.0, "option", pytest.approx(0.25))
    mask = tmp_path / "mask.png"
    Image.fromarray(np.eye(20, dtype=np.uint8) * 255).save(mask)
    line = one_json_line(run(capsys, "evaluate", mask, "--gt", mask)[1])
    assert (line["mpp"], line["mpp_source"]) == (0.5, "assumed") and line["dice"] == 1.0
    assert one_json_line(run(capsys, "evaluate", mask, "--gt", mask, "--mpp", 0.7)[1])["mpp"] == 0.7


def test_project_records_a_given_mpp(tmp_path, png, tagged_tiff, capsys):
    from napari_hubmap.project import open_project
    from napari_hubmap.project.layers import project_layers

    root = tmp_path / "p"
    code, out, err = run(capsys, "project", "init", root, "--slide", tagged_tiff, "--mpp", 0.5)
    assert code == 0, err
    assert one_json_line(out)["scales"] == {"tagged": {"mpp": 0.5, "mpp_source": "option", "mpp_file": 0.25}}
    line = one_json_line(run(capsys, "project", "add-slide", root, png, "--mpp", 2)[1])
    assert (line["mpp"], line["mpp_source"], line["mpp_file"]) == (2.0, "option", None)
    tissue_png(tmp_path / "plain.png")
    line = one_json_line(run(capsys, "project", "add-slide", root, tmp_path / "plain.png")[1])
    assert (line["mpp"], line["mpp_source"]) == (0.5, "assumed")
    entries = {e["id"]: e for e in json.loads((root / "project.json").read_text())["slides"]}
    assert (entries["kidney"]["mpp"], entries["kidney"]["mpp_source"]) == (2.0, "option")
    assert (entries["plain"]["mpp"], entries["plain"]["mpp_source"]) == (None, None)
    project = open_project(root)
    slide = project_layers(project, "kidney")[0][1]["metadata"]["napari_hubmap"]["slide"]
    assert slide.scale == SlideScale(2.0, "option", None)  # later commands and the viewer use the recorded µm/px
    infos = {s["slide"]: s for s in one_json_line(run(capsys, "project", "info", root)[1])["slides"]}
    assert infos["tagged"]["mpp_file"] == 0.25 and infos["kidney"]["mpp"] == 2.0


@pytest.mark.parametrize("bad", ["0", "-1", "abc"])
def test_bad_mpp_is_one_error_line_and_exit_2(tmp_path, png, bad, capsys):
    for command in (["info", png], ["predict", png, "--model", "nope", "--out", tmp_path / "out"],
                    ["evaluate", png, "--gt", png], ["project", "add-slide", tmp_path / "p", png],
                    ["project", "init", tmp_path / "p", "--slide", png]):
        assert_one_error_line(*run(capsys, *command, f"--mpp={bad}"), "--mpp", "µm per pixel must be a number > 0")
    assert not (tmp_path / "out").exists() and not (tmp_path / "p").exists()


def test_bad_mpp_exit_code_in_a_real_process(png):
    done = subprocess.run([*CLI, "predict", str(png), "--model", "x", "--out", "o", "--mpp", "0"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- the Slide panel -------------------------------------------------------------------------------


@pytest.mark.gui
def test_slide_panel_mpp_field_sets_the_scale_the_inference_panel_runs_at(make_napari_viewer, qtbot, tmp_path, png,
                                                                            monkeypatch):
    from qtpy.QtCore import Qt

    from napari_hubmap._widgets.inference_panel import InferencePanel
    from napari_hubmap._widgets.slide_panel import SlidePanel, slide_of
    from napari_hubmap.stores.probability import open_probability

    tiny_mpp_model(tmp_path / "models")
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(tmp_path / "models"))
    from qtpy.QtWidgets import QFileDialog

    from napari_gui import click

    viewer = make_napari_viewer(show=True)  # shown: the test presses the docks' buttons
    slides, inference = SlidePanel(viewer), InferencePanel(viewer)
    viewer.window.add_dock_widget(slides, name="Slide")
    viewer.window.add_dock_widget(inference, name="Inference")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(png), ""))  # the user's answer
    click(qtbot, slides.open_button)
    assert [layer.name for layer in viewer.layers] == ["kidney.png"]
    slide = slide_of(viewer.layers["kidney.png"])
    field = slides.mpp_field
    assert field.text() == "" and "0.5 assumed" in field.placeholderText() and "assumed" in slides.info.text()
    assert "0.5 µm/px assumed" in inference.scale_label.text()

    field.setFocus()
    qtbot.keyClicks(field, "abc")
    qtbot.keyClick(field, Qt.Key.Key_Return)
    assert slide.scale.assumed and "must be a number > 0" in slides.info.text()
    field.clear()
    qtbot.keyClicks(field, "2.0")
    qtbot.keyClick(field, Qt.Key.Key_Return)
    assert slide.mpp == 2.0 and slide.scale.source == "option" and "2 µm/px (given)" in slides.info.text()
    assert field.text() == "2"

    qtbot.waitUntil(lambda: bool(inference.model_items()), timeout=30_000)
    inference.set_checked(["tiny-mpp"])
    click(qtbot, inference.run_button)
    assert "2 µm/px (given)" in inference.status.text() and "2 µm/px (given)" in inference.scale_label.text()
    qtbot.waitUntil(lambda: not inference.running, timeout=60_000)
    assert inference.error is None and inference.result.complete
    meta = open_probability(inference.result.path)[1]
    assert (meta["downscale"], meta["mpp"], meta["mpp_source"]) == (1.0, 2.0, "option")  # TARGET_MPP / 2.0
    assert "slide at 2 µm/px (given)" in inference.status.text()


@pytest.mark.gui
def test_view_mpp_gives_the_slides_their_mpp(make_napari_viewer, png, monkeypatch):
    from napari_hubmap._widgets import launch
    from napari_hubmap._widgets.slide_panel import SlidePanel, slide_of

    monkeypatch.setattr("napari.Viewer", lambda **kwargs: make_napari_viewer(show=False))
    viewer = launch.make_viewer([str(png)], show=False, mpp=2.0)
    layer = viewer.layers["kidney.png"]
    assert slide_of(layer).scale == SlideScale(2.0, "option", None) and layer.metadata["napari_hubmap"]["mpp"] == 2.0
    panel = next(w for w in viewer.window.dock_widgets.values() if isinstance(w, SlidePanel))
    assert panel.mpp_field.text() == "2" and "2 µm/px (given)" in panel.info.text()
