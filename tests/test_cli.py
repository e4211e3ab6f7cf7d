"""The napari-hubmap command line: JSON output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

CLI = [str(Path(sys.executable).with_name("napari-hubmap"))]


def run(*args, check_code: int | None = 0):
    result = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)
    if check_code is not None:
        assert result.returncode == check_code, result.stderr
    return result


def assert_one_line_error(result, *needles):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("napari-hubmap: error:")
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def slide_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (2500, 1800, 3), dtype=np.uint8)
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, data, tile=(256, 256), photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    return path


def test_info_prints_one_json_line(slide_file):
    out = run("info", slide_file).stdout.strip().splitlines()
    assert len(out) == 1
    info = json.loads(out[0])
    assert set(info) == {"path", "width", "height", "levels", "mpp", "mpp_source", "mpp_file", "dtype", "layout", "format",
                         "associated"}
    assert info["format"] == "tiff" and info["associated"] == []
    assert (info["width"], info["height"]) == (1800, 2500)
    assert info["levels"] == [[2500, 1800], [1250, 900], [625, 450]]
    assert info["mpp"] == pytest.approx(0.25) and info["mpp_source"] == "file" and info["mpp_file"] == info["mpp"]
    assert info["dtype"] == "uint8" and info["layout"].startswith("interleaved")


def test_pyramid_builds_the_cache(slide_file, isolated_cache):
    out = json.loads(run("pyramid", slide_file).stdout)
    cache = Path(out["cache"])
    assert cache.parent == isolated_cache and (cache / "1" / ".zarray").is_file()


def test_bad_slide_inputs_give_one_line_and_exit_2(tmp_path, slide_file):
    assert_one_line_error(run("info", tmp_path / "missing.tif", check_code=None), "missing.tif", "not found")
    garbage = tmp_path / "junk.tif"
    garbage.write_bytes(b"\0" * 100)
    assert_one_line_error(run("info", garbage, check_code=None), "junk.tif")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(slide_file.read_bytes()[:200_000])
    assert_one_line_error(run("info", cut, check_code=None), "cut.tif", "truncated")


def test_usage_errors_are_one_line_too():
    assert_one_line_error(run("info", check_code=None))
    assert_one_line_error(run("no-such-command", check_code=None))


def test_convert_annotations_round_trip_through_the_cli(tmp_path, shared_data):
    source = shared_data / "kidney-he" / "annotations" / "C003_region1.geojson"
    csv = tmp_path / "region1.csv"
    mask = tmp_path / "region1.png"
    back = tmp_path / "region1.geojson"
    out = json.loads(run("convert-annotations", source, "--to", "rle", "--shape", "951x1514", "--out", csv).stdout)
    assert out["out"] == str(csv) and csv.read_text().startswith("id,encoding")
    run("convert-annotations", csv, "--to", "mask", "--shape", "951x1514", "--out", mask)
    run("convert-annotations", mask, "--to", "geojson", "--out", back)
    from napari_hubmap.annotations import rasterize, read_annotations

    original = rasterize(read_annotations(source), (951, 1514)) > 0
    again = rasterize(read_annotations(back), (951, 1514)) > 0
    np.testing.assert_array_equal(original, again)


def test_convert_annotations_errors_are_one_line(tmp_path, shared_data):
    source = shared_data / "kidney-he" / "annotations" / "C003_region1.geojson"
    result = run("convert-annotations", source, "--to", "mask", "--out", tmp_path / "m.png", check_code=None)
    assert_one_line_error(result, "C003_region1.geojson", "shape")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,encoding\nx,1 2 3\n")
    result = run("convert-annotations", bad, "--to", "mask", "--shape", "10x10", "--out", tmp_path / "m.png", check_code=None)
    assert_one_line_error(result, "bad.csv", "odd")
    assert not (tmp_path / "m.png").exists()
    notjson = tmp_path / "bad.json"
    notjson.write_text('{"hello": 1}')
    result = run("convert-annotations", notjson, "--to", "mask", "--shape", "10x10", "--out", tmp_path / "m.png", check_code=None)
    assert_one_line_error(result, "bad.json")


def test_synth_writes_a_tiled_tiff_and_its_glomeruli(tmp_path):
    out = tmp_path / "synth.tif"
    info = json.loads(run("synth", out, "--width", 3000, "--height", 2000, "--seed", 5).stdout)
    assert info["glomeruli"] > 0 and Path(info["geojson"]) == tmp_path / "synth.geojson"
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.shape == (2000, 3000, 3)
    slide_info = json.loads(run("info", out).stdout)
    assert slide_info["mpp"] == pytest.approx(0.5)
    features = json.loads(Path(info["geojson"]).read_text())["features"]
    assert len(features) == info["glomeruli"]
    pyramid = tmp_path / "pyramid.tif"
    run("synth", pyramid, "--width", 3000, "--height", 2000, "--pyramid")
    assert json.loads(run("info", pyramid).stdout)["levels"] == [[2000, 3000], [1000, 1500], [500, 750]]


def test_synth_rejects_bad_sizes(tmp_path):
    result = run("synth", tmp_path / "x.tif", "--width", 0, "--height", 10, check_code=None)
    assert_one_line_error(result, "x.tif", "positive")
    assert not (tmp_path / "x.tif").exists()


def tiny_model(tmp_path) -> Path:
    """A depth-3 U-Net imported through the Python API (the card needs its architecture_kwargs)."""
    from napari_hubmap.registry import import_checkpoint

    out = tmp_path / "models" / "tiny"
    import_checkpoint(kaggle_checkpoint(tmp_path), arch="Unet", encoder="tu-test_resnet", out=out, downscale=2.0,
                      tile=64, overlap=16, architecture_kwargs=TINY_KWARGS)
    return out


TINY_KWARGS = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}


def kaggle_checkpoint(tmp_path) -> Path:
    """Random weights of the tiny U-Net saved as a Kaggle-style DataParallel checkpoint."""
    import torch

    from napari_hubmap.registry import ModelCard, build_module

    checkpoint = tmp_path / "kaggle.pth"
    if not checkpoint.exists():
        card = ModelCard(name="x", architecture="Unet", encoder="tu-test_resnet", architecture_kwargs=TINY_KWARGS)
        module = build_module(card)
        torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}, "epoch": 3}, checkpoint)
    return checkpoint


def synthetic_slides(tmp_path, seeds=(1, 2)) -> list[Path]:
    from napari_hubmap.synth import SynthSpec, write_synthetic_tiff

    slides = []
    for seed in seeds:
        slides.append(tmp_path / f"s{seed}.tif")
        write_synthetic_tiff(slides[-1], SynthSpec(width=700, height=500, seed=seed))
    return slides


def test_import_model_then_predict_prints_one_json_line_per_slide(tmp_path):
    checkpoint = kaggle_checkpoint(tmp_path)
    models = tmp_path / "models"
    result = run("import-model", checkpoint, "--arch", "Unet", "--encoder", "tu-test_resnet", "--out", models / "plain",
                 check_code=None)
    assert_one_line_error(result, "kaggle.pth")  # depth-5 model does not match these depth-3 weights
    tiny = tiny_model(tmp_path)
    slides = synthetic_slides(tmp_path)
    command = ["predict", *map(str, slides), "--model", str(tiny), "--out", str(tmp_path / "pred"), "--tta", "flips"]
    out = subprocess.run(CLI + command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [Path(r["out"]).name for r in lines] == ["s1.prob.zarr", "s2.prob.zarr"]
    for row in lines:
        assert {"tiles", "skipped_tiles", "seconds", "tiles_per_s", "peak_rss_mb"} <= set(row) and row["complete"]


def test_predict_backend_is_chosen_and_reported(tmp_path):
    """--backend torch and onnx each run and say so in the JSON line; their maps agree within a grey level."""
    import numpy as np

    from napari_hubmap.stores.probability import open_probability

    tiny, slides = tiny_model(tmp_path), synthetic_slides(tmp_path, seeds=(1,))
    maps = {}
    for backend in ("torch", "onnx"):
        command = ["predict", str(slides[0]), "--model", str(tiny), "--out", str(tmp_path / backend), "--backend", backend]
        out = subprocess.run(CLI + command, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        line = json.loads(out.stdout)
        assert line["backend"] == backend
        maps[backend] = np.asarray(open_probability(line["out"])[0][0][:]).astype(int)
    assert np.abs(maps["torch"] - maps["onnx"]).max() <= 1
    bad = run("predict", slides[0], "--model", tiny, "--out", tmp_path / "x", "--backend", "tensorrt", check_code=None)
    assert bad.returncode == 2 and "tensorrt" in bad.stderr


def test_predict_progress_in_a_log_file_is_plain_lines(tmp_path):
    """stderr to a file (not a terminal): progress as whole lines, no tqdm frames drawn with carriage returns."""
    tiny, slides = tiny_model(tmp_path), synthetic_slides(tmp_path)
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        command = ["predict", *map(str, slides), "--model", str(tiny), "--out", str(tmp_path / "pred")]
        out = subprocess.run(CLI + command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300)
    text = log.read_bytes().decode()
    assert out.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text, repr(text)
    lines = [line for line in text.splitlines() if line.startswith("predict ")]
    assert all(re.fullmatch(r"predict s\d\.tif: \d+/\d+ tiles \(\d+%\)", line) for line in lines), lines
    for slide in slides:  # the last line of each slide says it is done
        last = [line for line in lines if line.startswith(f"predict {slide.name}: ")][-1]
        assert re.fullmatch(rf"predict {slide.name}: (\d+)/\1 tiles \(100%\)", last), lines


def test_progress_off_a_terminal_prints_at_most_every_few_seconds(monkeypatch, capsys):
    from napari_hubmap.cli import progress_bar as cli_progress

    from napari_hubmap.progress import Progress

    clock = {"now": 100.0}
    monkeypatch.setattr(cli_progress.time, "monotonic", lambda: clock["now"])
    with cli_progress.ProgressBar("predict x.tif", unit="tiles") as bar:
        for done in range(0, 101):
            bar.update(Progress(done, 100))
            clock["now"] += 0.125  # 12.5 s in all: lines at 0, 5 and 10 s, then the last one
    assert capsys.readouterr().err.splitlines() == [
        "predict x.tif: 0/100 tiles (0%)", "predict x.tif: 40/100 tiles (40%)", "predict x.tif: 80/100 tiles (80%)",
        "predict x.tif: 100/100 tiles (100%)"]
    with pytest.raises(ValueError), cli_progress.ProgressBar("pyramid y.tif") as bar:
        bar.update(Progress(3, 0))
        bar.update(Progress(4, 0, "loss 0.5"))
        raise ValueError  # after an error, no summary line: the error's own line is the last
    assert capsys.readouterr().err.splitlines() == ["pyramid y.tif: 3"]


def test_predict_with_a_missing_model_is_one_line(tmp_path, slide_file):
    result = run("predict", slide_file, "--model", "nope", "--out", tmp_path, check_code=None)
    assert_one_line_error(result, "nope")


def test_predict_with_a_bad_forward_batch_is_one_line_and_writes_nothing(tmp_path, slide_file):
    out = tmp_path / "out"
    result = run("predict", slide_file, "--model", "nope", "--out", out, "--forward-batch", "0", check_code=None)
    assert_one_line_error(result, "forward_batch must be at least 1")
    assert not out.exists()
