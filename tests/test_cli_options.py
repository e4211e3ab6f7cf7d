"""CLI options that no other test runs, each run once through the real command line with an oracle that shows it
took effect: predict's tile plan, background skipping, blending and device; postprocess's hole filling and
watershed seeds; evaluate's match IoU; models and import-model; train's loss, patience, base model, overwrite
and resume; view's screenshot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import ndimage
from synthetic_maps import disk, write_prob_store
from test_cli_postprocess import one_json_line, run
from test_registry import tiny_card, tiny_model
from training_data import disc_image, write_disc_folder

from napari_hubmap.progress import Cancelled
from napari_hubmap.registry import build_module, load_model, read_card, save_model
from napari_hubmap.stores.labels import open_labels
from napari_hubmap.stores.probability import open_probability

TISSUE = (225, 170, 200)
"""The slide's tissue colour (pink), found again in the viewer's screenshot."""


@pytest.fixture
def slide(tmp_path) -> Path:
    """256 x 512 px at 0.5 µm/px: pink tissue on the left half, white glass on the right."""
    rng = np.random.default_rng(0)
    image = np.full((256, 512, 3), 255, np.float32)
    image[:, :256] = TISSUE
    image[:, :256] += rng.normal(0, 6, (256, 256, 3))
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, np.clip(image, 0, 255).astype(np.uint8), tile=(128, 128), photometric="rgb",
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    return path


@pytest.fixture
def model(tmp_path) -> Path:
    """The tiny U-Net at full resolution, 64-px tiles overlapping by 16, saved in ``tmp_path/models``."""
    card = tiny_card("tiny", downscale=1.0, tile=64, overlap=16)
    return save_model(tiny_model(card), card, tmp_path / "models" / "tiny")


def tiles_along(length: int, tile: int, overlap: int) -> int:
    """How many tiles of ``tile`` px overlapping by ``overlap`` cover ``length`` px (the last one ends there)."""
    return 1 if length <= tile else len(range(0, length - tile, tile - overlap)) + 1


def predict(capsys, slide, model, out, *options) -> tuple[dict, np.ndarray, dict]:
    """(JSON line, level-0 map, store metadata) of one ``predict`` run."""
    code, stdout, stderr = run(capsys, "predict", slide, "--model", model, "--out", out, "--backend", "torch", *options)
    assert code == 0, stderr
    line = one_json_line(stdout)
    levels, meta = open_probability(line["out"])
    return line, np.asarray(levels[0][:]), meta


def test_predict_tile_and_overlap_change_the_plan(capsys, tmp_path, slide, model):
    card_line, _, card_meta = predict(capsys, slide, model, tmp_path / "card")
    line, _, meta = predict(capsys, slide, model, tmp_path / "big", "--tile", 128, "--overlap", 32, "--batch", 2)
    assert card_line["downscale"] == line["downscale"] == 1.0
    assert card_line["tiles"] == tiles_along(256, 64, 16) * tiles_along(512, 64, 16) == 5 * 11
    assert line["tiles"] == tiles_along(256, 128, 32) * tiles_along(512, 128, 32) == 3 * 5
    assert (card_meta["models"][0]["tile"], card_meta["models"][0]["overlap"]) == (64, 16)
    assert (meta["models"][0]["tile"], meta["models"][0]["overlap"]) == (128, 32)
    assert (card_meta["batch"], meta["batch"]) == (4, 2)


def test_predict_no_skip_background_computes_the_glass_too(capsys, tmp_path, slide, model):
    skipping, _, skip_meta = predict(capsys, slide, model, tmp_path / "skip")
    every, _, meta = predict(capsys, slide, model, tmp_path / "all", "--no-skip-background")
    assert skipping["skipped_tiles"] > 0 and skipping["computed_tiles"] == skipping["tiles"] - skipping["skipped_tiles"]
    assert every["skipped_tiles"] == 0 and every["computed_tiles"] == every["tiles"] == skipping["tiles"]
    assert skip_meta["skip_background"] is True and meta["skip_background"] is False


def test_predict_blend_centre_and_gaussian_give_different_maps(capsys, tmp_path, slide, model):
    _, gaussian, gaussian_meta = predict(capsys, slide, model, tmp_path / "gaussian", "--no-skip-background")
    _, centre, meta = predict(capsys, slide, model, tmp_path / "centre", "--no-skip-background", "--blend", "centre")
    assert gaussian_meta["blend"] == "gaussian" and meta["blend"] == "centre"
    differ = gaussian.astype(int) != centre.astype(int)
    assert gaussian.shape == centre.shape and differ.any()
    # the maps differ where tiles overlap (a 16-px band around each tile edge), not everywhere
    assert differ.mean() < 0.9


def test_predict_device_reaches_the_engine(capsys, tmp_path, slide, model, monkeypatch):
    """With no GPU, --device cuda is refused before anything is written; --device cpu runs there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, stdout, stderr = run(capsys, "predict", slide, "--model", model, "--out", tmp_path / "gpu", "--device", "cuda")
    assert code == 2 and stdout == "" and "--device cuda" in stderr and "no CUDA GPU" in stderr, stderr
    assert not (tmp_path / "gpu").exists()
    line, prob, _ = predict(capsys, slide, model, tmp_path / "cpu", "--device", "cpu")
    assert line["complete"] and prob.shape == (256, 512)


def postprocess(capsys, store, out, *options) -> np.ndarray:
    code, stdout, stderr = run(capsys, "postprocess", store, "--out", out, *options)
    assert code == 0, stderr
    labels = np.asarray(open_labels(out)[0][0])
    assert one_json_line(stdout)["objects"] == len(np.unique(labels)) - 1
    return labels


def test_postprocess_no_fill_holes_keeps_the_hole(capsys, tmp_path):
    ring = disk((80, 80), (40, 40), 25) & ~disk((80, 80), (40, 40), 8)
    store = write_prob_store(tmp_path / "ring.prob.zarr", np.where(ring, 230, 10).astype(np.uint8))
    filled = postprocess(capsys, store, tmp_path / "filled.labels.zarr")
    kept = postprocess(capsys, store, tmp_path / "kept.labels.zarr", "--no-fill-holes")
    assert filled[40, 40] == filled[40, 20] > 0 and (filled > 0).sum() == disk((80, 80), (40, 40), 25).sum()
    assert kept[40, 40] == 0 and kept[40, 20] > 0 and np.array_equal(kept > 0, ring)


def test_postprocess_grow_brings_the_outline_out_and_says_so(capsys, tmp_path):
    """--grow 3: the disc's labels take in the background within 3 px (all within 17 px of the centre, nothing beyond 18), the JSON line and the
    store's settings record it; a negative value is one error line, exit 2, nothing written."""
    store = write_prob_store(tmp_path / "disc.prob.zarr", np.where(disk((80, 80), (40, 40), 15), 230, 10).astype(np.uint8))
    plain = postprocess(capsys, store, tmp_path / "plain.labels.zarr")
    code, stdout, stderr = run(capsys, "postprocess", store, "--out", tmp_path / "grown.labels.zarr", "--grow", 3)
    assert code == 0, stderr
    grown = np.asarray(open_labels(tmp_path / "grown.labels.zarr")[0][0])
    assert one_json_line(stdout)["grow"] == 3 and open_labels(tmp_path / "grown.labels.zarr")[1]["postprocess"]["grow"] == 3
    assert np.array_equal(plain > 0, disk((80, 80), (40, 40), 15))
    assert (grown[disk((80, 80), (40, 40), 17)] > 0).all() and not grown[~disk((80, 80), (40, 40), 18)].any()
    code, stdout, stderr = run(capsys, "postprocess", store, "--out", tmp_path / "bad.labels.zarr", "--grow", -2)
    assert code == 2 and stdout == "" and "grow must be a whole number" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad.labels.zarr").exists()


@pytest.fixture
def touching_discs(tmp_path) -> Path:
    """Two overlapping discs (radius 24 and 16, centres 35 px apart): one blob with a neck."""
    shape = (100, 140)
    both = disk(shape, (50, 45), 24) | disk(shape, (50, 80), 16)
    return write_prob_store(tmp_path / "pair.prob.zarr", np.where(both, 230, 10).astype(np.uint8))


def object_sizes(labels: np.ndarray) -> list[int]:
    return sorted(np.bincount(labels.ravel())[1:].tolist())


def test_postprocess_markers_h_and_compactness_shape_the_split(capsys, tmp_path, touching_discs):
    def sizes(name, *options):
        return object_sizes(postprocess(capsys, touching_discs, tmp_path / f"{name}.labels.zarr", *options))

    assert len(sizes("plain")) == 1  # no watershed: one blob
    # distance peaks 35 px apart cannot both be seeds 40 px apart; the h-maxima seeds ignore that distance
    assert len(sizes("far", "--watershed", "--min-distance", 40)) == 1
    split = sizes("hmax", "--watershed", "--min-distance", 40, "--markers", "h-maxima")
    assert len(split) == 2 and sum(split) == sum(sizes("plain"))
    # the small disc's maximum (16) is ~6 above the neck (10): h 10 drops it, the default h 2 keeps it
    assert len(sizes("deep", "--watershed", "--markers", "h-maxima", "--h", 10)) == 1
    # a compact watershed cuts nearer the middle between the seeds: the small disc gains pixels
    compact = sizes("compact", "--watershed", "--markers", "h-maxima", "--compactness", 1000)
    assert len(compact) == 2 and compact[0] > split[0] + 50 and sum(compact) == sum(split)


def test_evaluate_iou_decides_what_counts_as_a_match(capsys, tmp_path):
    truth, loose = disk((100, 120), (50, 50), 20), disk((100, 120), (50, 59), 20)  # IoU 0.56
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "gt.png")
    Image.fromarray(loose.astype(np.uint8)).save(tmp_path / "pred.png")
    lenient, strict = (one_json_line(run(capsys, "evaluate", tmp_path / "pred.png", "--gt", tmp_path / "gt.png", *options)[1])
                       for options in ([], ["--iou", 0.9]))
    assert lenient["iou"] == strict["iou"] == pytest.approx((truth & loose).sum() / (truth | loose).sum())
    assert (lenient["tp"], lenient["fp"], lenient["fn"], lenient["iou_threshold"]) == (1, 0, 0, 0.5)
    assert (strict["tp"], strict["fp"], strict["fn"], strict["iou_threshold"]) == (0, 1, 1, 0.9)


def listed_models(capsys) -> dict[str, dict]:
    code, stdout, stderr = run(capsys, "models")
    assert code == 0, stderr
    return {row["name"]: row for row in map(json.loads, stdout.strip().splitlines())}


def test_models_lists_the_folder_and_import_model_adds_a_loadable_one(capsys, tmp_path, model, monkeypatch):
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(tmp_path / "models"))
    before = listed_models(capsys)
    assert list(before) == ["tiny"] and Path(before["tiny"]["path"]) == model and before["tiny"]["tile"] == 64
    # a Kaggle-style checkpoint of the default-depth U-Net (the only shape the CLI builds without extra options)
    torch.manual_seed(1)
    module = build_module(tiny_card("x", architecture_kwargs={})).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, tmp_path / "fold0.pth")
    code, stdout, stderr = run(capsys, "import-model", tmp_path / "fold0.pth", "--arch", "Unet", "--encoder", "tu-test_resnet",
                               "--out", tmp_path / "models" / "kaggle", "--name", "kaggle-fold0", "--downscale", 3,
                               "--tile", 128, "--overlap", 32, "--threshold", 0.4)
    assert code == 0, stderr
    assert Path(one_json_line(stdout)["model"]) == tmp_path / "models" / "kaggle"
    after = listed_models(capsys)
    assert sorted(after) == ["kaggle-fold0", "tiny"]
    assert (after["kaggle-fold0"]["downscale"], after["kaggle-fold0"]["tile"]) == (3.0, 128)
    loaded = load_model(after["kaggle-fold0"]["path"])
    assert (loaded.card.overlap, loaded.card.threshold) == (32, 0.4)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module.eval()(x), module(x))


@pytest.fixture
def keep_signal_handlers():
    """``train`` in this process sets SIGINT/SIGTERM handlers; give pytest its own back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def discs(tmp_path) -> Path:
    """The disc folder with its validation group pC made of plain tissue (no glomeruli): a model that marks
    nothing there scores Dice 1 on it, and no later epoch can beat that (a plateau)."""
    folder = write_disc_folder(tmp_path / "discs")
    rng = np.random.default_rng(9)
    for stem in ("pC_2", "pC_5"):
        image, mask = disc_image(rng, discs=0)
        Image.fromarray(image).save(folder / "images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8)).save(folder / "masks" / f"{stem}.png")
    return folder


def train_args(data, base, out, *options) -> list[str]:
    return ["train", "--data", str(data), "--base", str(base), "--out", str(out), "--samples-per-epoch", "8",
            "--batch", "4", "--tile", "64", "--infer-tile", "64", "--workers", "0", "--val-groups", "pC",
            *map(str, options)]


def train(capsys, *args) -> tuple[int, list[dict], str]:
    code, stdout, stderr = run(capsys, *args)
    return code, [json.loads(line) for line in stdout.splitlines() if line.startswith("{")], stderr


def test_train_loss_patience_and_device_are_used(capsys, tmp_path, model, discs, keep_signal_handlers):
    code, events, stderr = train(capsys, *train_args(discs, model, tmp_path / "m", "--epochs", 5, "--loss", "focal",
                                                     "--patience", 1, "--device", "cpu", "--events", "--name", "focal-run",
                                                     "--seed", 3, "--select-by", "object_f1", "--positive-fraction", 0.5,
                                                     "--exclude-groups", "pB"))
    assert code == 0, stderr
    epochs = [e for e in events if e["event"] == "epoch"]
    assert events[0]["device"] == "cpu"
    # Dice 1 on the empty validation images from the second epoch on at the latest: with patience 1 the run
    # stops at the first epoch allowed to (min_epochs 3) that did not improve, short of the 5 asked for
    assert epochs[-1]["val_dice"] == 1.0 and not epochs[-1]["best"]
    assert events[-1]["event"] == "done" and events[-1]["epochs_run"] == len(epochs) == 3
    card = read_card(tmp_path / "m")
    config = card.training_data["config"]
    assert (config["loss"], config["patience"], config["device"]) == ("focal", 1, "cpu")
    assert (card.name, config["seed"], config["select_by"], config["positive_fraction"]) == ("focal-run", 3, "object_f1", 0.5)
    assert sorted(card.training_data["train_images"]) == ["discs/pA_0", "discs/pA_3"]  # pB left out, pC validates


def float_weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_model(folder).module.state_dict().items() if v.is_floating_point() and "running" not in k}


def test_train_base_starts_from_its_weights_and_overwrite_replaces(capsys, tmp_path, model, discs, keep_signal_handlers):
    out = tmp_path / "tuned"
    old = tiny_card("old", downscale=1.0)
    save_model(tiny_model(old, seed=5), old, out)  # an earlier model in the way
    args = train_args(discs, model, out, "--epochs", 1, "--lr", 1e-7)
    code, _, stderr = train(capsys, *args)
    assert code == 2 and "already exists" in stderr and "--overwrite" in stderr and read_card(out).name == "old"
    code, _, stderr = train(capsys, *args, "--overwrite")
    assert code == 0, stderr
    card = read_card(out)
    assert (card.name, card.parent) == ("tuned", "tiny")
    base, tuned = float_weights(model), float_weights(out)
    assert base.keys() == tuned.keys()
    assert max((base[k] - tuned[k]).abs().max().item() for k in base) < 1e-4  # lr 1e-7: still the base's weights
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("not a model")
    code, _, stderr = train(capsys, *train_args(discs, model, notes, "--epochs", 1, "--overwrite"))
    assert code == 2 and "not a model folder" in stderr and (notes / "notes.txt").read_text() == "not a model"


def test_train_no_resume_starts_over_although_a_checkpoint_exists(capsys, tmp_path, model, discs, keep_signal_handlers):
    from napari_hubmap.cli import build_parser
    from napari_hubmap.cli.train import config_of
    from napari_hubmap.training import train as train_api
    from napari_hubmap.training.checkpoint import checkpoint_folder

    out = tmp_path / "m"
    args = train_args(discs, model, out, "--epochs", 2, "--events")
    cancel = threading.Event()

    def cancel_at_first_step(progress) -> None:
        if progress.details["event"] == "step":
            cancel.set()

    with pytest.raises(Cancelled):  # the same settings, stopped in epoch 1 after its first step
        train_api(config_of(build_parser().parse_args(args)), [discs], out, progress=cancel_at_first_step, cancel=cancel)
    assert json.loads((checkpoint_folder(out) / "state.json").read_text())["step_in_epoch"] == 1
    code, events, stderr = train(capsys, *args, "--no-resume")
    assert code == 0, stderr
    assert events[0]["resumed_at"] == 0
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 1, 2]  # resumed would start at step 2
    assert events[-1]["epochs_run"] == 2 and not checkpoint_folder(out).exists()


def test_view_screenshot_shows_the_slide(tmp_path, slide):
    """A real napari process (on the display the suite runs in) saves its window with the slide and quits."""
    shot = tmp_path / "shot.png"
    done = subprocess.run([sys.executable, "-m", "napari_hubmap.cli", "view", str(slide), "--screenshot", str(shot)],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "NAPARI_HUBMAP_MODELS": "", "PYTHONFAULTHANDLER": "1"})
    assert done.returncode == 0, done.stderr[-3000:]  # a crash prints its Python stacks (faulthandler)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    height, width, _ = image.shape
    assert width >= 1000 and height >= 600  # the whole window (1500 x 950 asked for), not the canvas alone
    pink = np.abs(image - TISSUE).max(axis=2) <= 25
    parts, _ = ndimage.label(pink)
    rows, cols = np.nonzero(parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1)  # the canvas's (not the thumbnail)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = bottom - top
    # the slide fitted in the canvas: its tissue half a square of pink, its glass half a square of white beside it
    assert side > 200 and abs((right - left) - side) <= 0.05 * side and pink[top:bottom, left:right].mean() > 0.95
    glass = image[top:bottom, right + 2 : right + side - 2]
    assert glass.shape[1] > 0.9 * side and (glass.min(axis=2) >= 245).mean() > 0.95


def test_convert_and_export_take_shape_downsample_and_id(capsys, tmp_path):
    from napari_hubmap.annotations import read_mask, read_rle_csv, rle_decode, rle_encode, write_rle_csv

    first, second = disk((120, 160), (40, 40), 20), disk((120, 160), (80, 110), 24)
    write_rle_csv(tmp_path / "two.csv", {"a": rle_encode(first), "b": rle_encode(second)})
    code, _, stderr = run(capsys, "convert-annotations", tmp_path / "two.csv", "--to", "mask", "--shape", "120x160",
                          "--id", "b", "--downsample", 2, "--out", tmp_path / "b.png")
    assert code == 0, stderr
    mask = read_mask(tmp_path / "b.png")
    assert mask.shape == (60, 80) and mask[40, 55] and not mask[20, 20]  # row b, at half size
    assert abs(int(mask.sum()) - int(second[::2, ::2].sum())) <= 0.05 * second[::2, ::2].sum()
    labels = np.zeros((60, 80), np.uint8)
    labels[10:30, 10:30], labels[40:50, 50:70] = 1, 2
    Image.fromarray(labels).save(tmp_path / "labels.png")
    # 90 x 120 is 1.5 times 60 x 80, no whole downscale the export could infer: --downsample gives it
    code, stdout, stderr = run(capsys, "export", tmp_path / "labels.png", "--format", "rle-csv", "--id", "kid7",
                               "--shape", "90x120", "--downsample", 1.5, "--out", tmp_path / "o.csv")
    assert code == 0, stderr
    assert one_json_line(stdout)["slide_shape"] == [90, 120]
    rows = read_rle_csv(tmp_path / "o.csv")
    source_row, source_col = (np.floor((np.arange(n) + 0.5) / 1.5).astype(int) for n in (90, 120))
    full = (labels > 0)[np.ix_(source_row, source_col)]  # each full-resolution pixel takes the label pixel it lies in
    assert list(rows) == ["kid7"] and np.array_equal(rle_decode(rows["kid7"], (90, 120)), full)


def test_synth_stain_mpp_tile_and_compression(capsys, tmp_path):
    means = {}
    for stain in ("pas", "he"):
        out = tmp_path / f"{stain}.tif"
        code, _, stderr = run(capsys, "synth", out, "--width", 512, "--height", 384, "--seed", 2, "--stain", stain,
                              "--mpp", 0.25, "--tile", 256, "--compression", "zlib")
        assert code == 0, stderr
        with tifffile.TiffFile(out) as tif:
            page = tif.pages[0]
            assert (page.tilewidth, page.compression) == (256, tifffile.COMPRESSION.ADOBE_DEFLATE)
            means[stain] = page.asarray().reshape(-1, 3).mean(axis=0)
        code, stdout, _ = run(capsys, "info", out)
        assert code == 0 and one_json_line(stdout)["mpp"] == 0.25
    assert np.abs(means["pas"] - means["he"]).max() > 5  # another stain, other colours


def test_batch_passes_its_inference_and_postprocess_options_on(capsys, tmp_path, slide, model):
    code, stdout, stderr = run(capsys, "batch", slide, "--model", model, "--out", tmp_path / "out", "--export", "rle-csv",
                               "--tta", "flips", "--device", "cpu", "--backend", "torch", "--threshold", 0, "--min-size", 5,
                               "--watershed", "--markers", "h-maxima", "--no-fill-holes")
    assert code == 0, stderr
    line = one_json_line(stdout)
    assert line["backend"] == "torch" and line["objects"] == 1  # threshold 0: the whole slide is one object
    prob_meta = open_probability(line["prob"])[1]
    assert prob_meta["tta"] == ["identity", "hflip", "vflip", "rot180"] and prob_meta["backend"] == "torch"
    post = open_labels(line["labels"])[1]["postprocess"]
    assert post == {**post, "threshold": 0.0, "min_size": 5, "watershed": True, "markers": "h-maxima", "fill_holes": False}


def test_batch_takes_the_watershed_seed_options_of_postprocess(capsys, tmp_path, slide, model):
    code, stdout, stderr = run(capsys, "batch", slide, "--model", model, "--out", tmp_path / "out", "--export", "rle-csv",
                               "--backend", "torch", "--watershed", "--min-distance", 7, "--h", 0.2, "--compactness", 0.5)
    assert code == 0, stderr
    post = open_labels(one_json_line(stdout)["labels"])[1]["postprocess"]
    assert (post["min_distance"], post["h"], post["compactness"]) == (7, 0.2, 0.5)


def test_a_cohort_without_seed_options_keeps_the_resume_key_it_had():
    """Cohorts finished before batch took --min-distance/--h/--compactness are still skipped on a rerun."""
    from napari_hubmap.cli import build_parser
    from napari_hubmap.cli.batch import cohort_config

    args = build_parser().parse_args(["batch", "s.tif", "--model", "m", "--out", "o", "--watershed"])
    assert cohort_config(args).postprocess == {"watershed": True, "markers": "distance", "fill_holes": True}
