"""One progress protocol: every long-running core function reports Progress (done <= total, the total
constant, or growing where its docstring says so) and raises Cancelled once its cancel event is set, leaving
on disk what it documents. Tiny inputs throughout."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_hubmap.progress import Cancelled, Progress, Steps, check_cancelled, with_message

from synthetic_maps import blob_map, disk, write_prob_store


def checked(reports: list, *, growing: bool = False, finished: bool = True) -> list[Progress]:
    """``reports`` are Progress objects counting up to their total (constant, or growing if ``growing``)."""
    assert reports and all(isinstance(p, Progress) for p in reports), reports
    assert all(0 <= p.done <= p.total for p in reports), reports
    done = [p.done for p in reports]
    totals = [p.total for p in reports]
    assert done == sorted(done), done
    assert totals == sorted(totals) if growing else len(set(totals)) == 1, totals
    if finished:
        assert reports[-1].done == reports[-1].total
    return reports


def is_set() -> threading.Event:
    cancel = threading.Event()
    cancel.set()
    return cancel


# --- the protocol itself ------------------------------------------------------------------------


def test_cancelled_is_an_interrupted_error_and_steps_count_then_check():
    assert issubclass(Cancelled, InterruptedError)
    check_cancelled(None)
    check_cancelled(threading.Event())
    with pytest.raises(Cancelled, match="stop now"):
        check_cancelled(is_set(), "stop now")
    seen = []
    cancel = threading.Event()
    steps = Steps(2, seen.append, cancel)
    steps()
    steps.grow(1)
    steps(2)
    assert seen == [Progress(1, 2), Progress(3, 3)] and seen[-1].fraction == 1.0
    cancel.set()
    with pytest.raises(Cancelled):
        steps()
    assert steps.done == 3  # nothing counted once cancelled
    relabelled = []
    with_message(relabelled.append, "pseudo-labels x")(Progress(1, 2))
    with_message(relabelled.append, "pseudo-labels x")(Progress(2, 2, "own"))
    assert [p.message for p in relabelled] == ["pseudo-labels x", "own"] and with_message(None, "x") is None


# --- slide pyramid cache ------------------------------------------------------------------------


@pytest.fixture
def flat_slide(tmp_path) -> Path:
    """A compressed single-level slide (its reduced levels need the pyramid cache)."""
    rgb = np.random.default_rng(0).integers(0, 256, (1300, 2100, 3), dtype=np.uint8)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, rgb, tile=(512, 512), photometric="rgb", compression="zlib")
    return path


def test_pyramid_cache_build_reports_and_cancels(flat_slide, isolated_cache):
    from napari_hubmap.slide import open_slide

    with open_slide(flat_slide) as slide:
        with pytest.raises(Cancelled):
            slide.build_cache(cancel=is_set())
        assert not slide.cache.complete and list(isolated_cache.iterdir()) == []  # no cache, no partial one
        reports = []
        slide.build_cache(progress=reports.append, cancel=threading.Event())
        checked(reports)
        assert slide.cache.complete
    with open_slide(flat_slide) as again:
        assert again.build_cache(progress=reports.append) is None  # built: nothing to do, nothing reported


def test_background_pyramid_build_stops_with_the_given_event(flat_slide, isolated_cache):
    from napari_hubmap.slide import open_slide

    with open_slide(flat_slide) as slide:
        state = slide.build_cache(background=True, cancel=is_set())
        state.thread.join(60)
        assert state.finished and isinstance(state.error, Cancelled)
        assert not slide.cache.complete and list(isolated_cache.iterdir()) == []


# --- synthetic slides ---------------------------------------------------------------------------


def test_synthetic_slide_writing_reports_and_cancels(tmp_path):
    from napari_hubmap.synth import SynthSpec, write_synthetic_tiff

    reports = []
    write_synthetic_tiff(tmp_path / "s.tif", SynthSpec(600, 500, seed=1), tile=256, progress=reports.append)
    assert checked(reports)[-1].total == 2 * 3
    with pytest.raises(Cancelled):
        write_synthetic_tiff(tmp_path / "c.tif", SynthSpec(600, 500, seed=1), tile=256, cancel=is_set())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]  # no partial slide


# --- inference ----------------------------------------------------------------------------------


def toy_model():
    import torch

    from napari_hubmap.registry import LoadedModel, ModelCard

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1))
    card = ModelCard(name="toy", architecture="Unet", encoder="tu-test_resnet", downscale=1.0, tile=64, overlap=16,
                     normalization={"mean": [0.5] * 3, "std": [0.25] * 3, "max_pixel_value": 255.0})
    return LoadedModel(card, net.eval(), Path("toy"))


@pytest.fixture
def small_slide(tmp_path) -> Path:
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, np.random.default_rng(1).integers(0, 256, (200, 260, 3), dtype=np.uint8), tile=(128, 128),
                     photometric="rgb")
    return path


def test_prediction_reports_tiles_and_a_cancel_keeps_a_resumable_store(tmp_path, small_slide):
    from napari_hubmap.inference import InferenceConfig, predict_slide
    from napari_hubmap.stores.probability import open_probability

    config = InferenceConfig(batch=2, skip_background=False, device="cpu")
    reports = []
    result = predict_slide(small_slide, tmp_path / "a.prob.zarr", config, progress=reports.append, models=[toy_model()])
    checked(reports)
    assert reports[-1].total == result.tiles and result.complete
    assert {"tiles_per_s", "eta_s", "rows_done"} <= set(reports[-1].details)
    assert reports[-1].details["rows_done"] == 200

    cancel = threading.Event()
    seen = []

    def stop_after_first(progress):
        seen.append(progress)
        cancel.set()

    out = tmp_path / "b.prob.zarr"
    with pytest.raises(Cancelled):
        predict_slide(small_slide, out, config, progress=stop_after_first, cancel=cancel, models=[toy_model()])
    assert len(seen) == 1 and seen[0].done == 2  # after the batch under way
    assert open_probability(out)[1]["progress"]["complete"] is False  # readable, resumable
    resumed = predict_slide(small_slide, out, config, models=[toy_model()])
    assert resumed.complete


# --- post-processing ----------------------------------------------------------------------------


def test_postprocessing_reports_a_total_that_grows_once_and_cancels_without_output(tmp_path):
    from napari_hubmap.postprocess import PostprocessConfig, postprocess_slide

    store = write_prob_store(tmp_path / "m.prob.zarr", blob_map((200, 200)))
    reports = []
    result = postprocess_slide(store, tmp_path / "m.labels.zarr", PostprocessConfig(), block=64, progress=reports.append)
    checked(reports, growing=True)
    totals = sorted({p.total for p in reports})
    assert len(totals) == 2 and totals[1] - totals[0] == result.objects > 0  # grown by the objects found
    with pytest.raises(Cancelled):
        postprocess_slide(store, tmp_path / "c.labels.zarr", PostprocessConfig(), block=64, cancel=is_set())
    assert not (tmp_path / "c.labels.zarr").exists()


# --- projects -----------------------------------------------------------------------------------


def test_project_pseudo_labels_report_and_a_cancel_rolls_the_slide_back(tmp_path):
    from napari_hubmap.project import add_slide, init_project, open_project

    shape = (160, 200)
    slide = tmp_path / "kidney.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape + (3,), dtype=np.uint8)).save(slide)
    mask = disk(shape, (50, 60), 20) | disk(shape, (110, 140), 25)
    prob = write_prob_store(tmp_path / "kidney.prob.zarr", np.where(mask, 230, 10).astype(np.uint8))
    project = init_project(tmp_path / "project", tile=64, downscale=1)
    manifest = json.loads(project.manifest_path.read_text())
    with pytest.raises(Cancelled):
        add_slide(project, slide, predictions=[prob], cancel=is_set())
    assert json.loads(project.manifest_path.read_text()) == manifest and not project.slides
    assert not list((tmp_path / "project").glob("pseudo_labels/*"))
    reports = []
    add_slide(open_project(tmp_path / "project"), slide, predictions=[prob], progress=reports.append)
    checked(reports, growing=True)
    assert {p.message for p in reports} == {"pseudo-labels kidney"}
    assert open_project(tmp_path / "project").slides[0].predictions[0].pseudo_labels


# --- training -----------------------------------------------------------------------------------


def test_training_reports_steps_and_a_cancel_saves_a_checkpoint(tmp_path):
    from napari_hubmap.training import TrainConfig, train
    from napari_hubmap.training.checkpoint import checkpoint_folder

    from training_data import write_disc_folder

    data = write_disc_folder(tmp_path / "discs")
    config = TrainConfig(preset="effnet-unet", tile=64, infer_tile=64, epochs=2, samples_per_epoch=8, batch=4,
                         workers=0, val_groups=["pC"], thresholds=[0.5])
    reports = []
    train(config, [data], tmp_path / "m", progress=reports.append)
    checked(reports)
    assert reports[0].total == 2 * 2 and [p.details["event"] for p in reports] == [
        "start", "step", "step", "epoch", "step", "step", "epoch"]
    assert reports[1].message.startswith("loss ") and reports[3].message.startswith("epoch 1/2: loss ")
    with pytest.raises(Cancelled):
        train(config, [data], tmp_path / "c", cancel=is_set())
    assert checkpoint_folder(tmp_path / "c").is_dir()  # saved before raising: the next run resumes there
