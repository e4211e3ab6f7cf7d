"""CLI postprocess / evaluate / export: one JSON line, bad input one error line and exit 2, no partial
output; real annotations evaluated against themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic_maps import blob_map, write_prob_store

from napari_hubmap.annotations import load_labels, read_annotations, read_rle_csv, rle_decode, write_mask
from napari_hubmap.cli import main
from napari_hubmap.postprocess import PostprocessConfig, postprocess_region
from napari_hubmap.stores.labels import open_labels
from napari_hubmap.postprocess.export import upsample_nearest

CLI = [str(Path(sys.executable).with_name("napari-hubmap"))]


def run(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr); usage errors exit through SystemExit."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def one_json_line(out: str) -> dict:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


def assert_one_error_line(code, out, err, *needles):
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-hubmap: error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def prob_store(tmp_path):
    """A 2x-downscaled map of a 599 x 600 slide, with the model's card threshold 0.45 recorded."""
    prob = blob_map((300, 300), seed=4)
    slide = tmp_path / "kid.png"
    Image.fromarray(np.zeros((599, 600, 3), np.uint8)).save(slide)
    settings = {"slide": str(slide), "models": [{"name": "m", "threshold": 0.45}]}
    return write_prob_store(tmp_path / "kid.prob.zarr", prob, downscale=2.0, settings=settings), prob


def test_postprocess_export_evaluate_pipeline(prob_store, tmp_path, capsys):
    store, prob = prob_store
    code, out, _ = run(capsys, "postprocess", store, "--min-size", 5, "--watershed", "--min-distance", 4, "--block", 128, "--out", tmp_path / "kid.labels.zarr")
    assert code == 0
    line = one_json_line(out)
    assert line["threshold"] == 0.45 and line["downscale"] == 2.0 and line["slide_shape"] == [599, 600]
    expected = postprocess_region(prob, PostprocessConfig(threshold=0.45, min_size=5, watershed=True, min_distance=4))
    labels = np.asarray(open_labels(tmp_path / "kid.labels.zarr")[0][0])
    assert np.array_equal(labels, expected) and line["objects"] == expected.max()

    code, out, _ = run(capsys, "export", tmp_path / "kid.labels.zarr", "--format", "rle-csv", "--out", tmp_path / "sub.csv")
    assert code == 0 and one_json_line(out)["id"] == "kid"
    decoded = rle_decode(read_rle_csv(tmp_path / "sub.csv")["kid"], (599, 600))
    assert np.array_equal(decoded, upsample_nearest(labels, (599, 600), 2) > 0)

    code, out, _ = run(capsys, "export", tmp_path / "kid.labels.zarr", "--format", "geojson", "--out", tmp_path / "kid.geojson")
    assert code == 0 and one_json_line(out)["objects"] == labels.max()
    assert len(read_annotations(tmp_path / "kid.geojson")) == labels.max()

    # the labels' own GeoJSON as ground truth: the labels score perfectly, the map at its threshold close
    code, out, _ = run(capsys, "evaluate", tmp_path / "kid.labels.zarr", "--gt", tmp_path / "kid.geojson")
    scores = one_json_line(out)
    assert code == 0 and scores["dice"] == 1.0 and scores["f1"] == 1.0 and scores["kind"] == "labels"
    code, out, _ = run(capsys, "evaluate", store, "--gt", tmp_path / "kid.geojson", "--threshold", 0.45, "--curve")
    scores = one_json_line(out)
    assert code == 0 and scores["kind"] == "probability" and scores["threshold"] == 0.45
    assert scores["dice"] > 0.95 and len(scores["curve"]["dice"]) == 19
    assert scores["curve"]["dice"][scores["curve"]["thresholds"].index(0.45)] == pytest.approx(scores["dice"])


def test_bad_inputs_are_one_line_and_leave_no_output(prob_store, tmp_path, capsys):
    store, _ = prob_store
    out = tmp_path / "o.zarr"
    assert_one_error_line(*run(capsys, "postprocess", tmp_path / "none.prob.zarr", "--out", out), "none.prob.zarr", "not found")
    assert_one_error_line(*run(capsys, "postprocess", store, "--threshold", 1.5, "--out", out), "threshold")
    assert_one_error_line(*run(capsys, "postprocess", tmp_path / "kid.png", "--out", out), "not a probability store")
    assert_one_error_line(*run(capsys, "export", store, "--format", "geojson", "--out", tmp_path / "x.geojson"), "probability")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "small.png")
    assert_one_error_line(*run(capsys, "evaluate", store, "--gt", tmp_path / "small.png"), "small.png", "10x12", "300x300")
    run(capsys, "postprocess", store, "--out", out)
    assert_one_error_line(*run(capsys, "export", out, "--format", "tiff", "--out", tmp_path / "x.png"), ".tif")
    assert_one_error_line(*run(capsys, "evaluate", out, "--gt", tmp_path / "nothing.geojson"), "nothing.geojson")
    assert_one_error_line(*run(capsys, "evaluate", out, "--gt", tmp_path / "kid.png", "--curve"), "--curve")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["kid.png", "kid.prob.zarr", "o.zarr", "small.png"], names


def test_save_threshold_into_the_card_or_an_ensemble_beside_the_map(tmp_path, capsys):
    """The Post-processing panel's *Save threshold* as a command: the map's one model's card, or ensemble.json."""
    from napari_hubmap.postprocess import read_ensemble_config
    from napari_hubmap.registry import ModelCard, read_card

    folders = []
    for name in ("a", "b"):
        folders.append(tmp_path / name)
        folders[-1].mkdir()
        (folders[-1] / "card.json").write_text(ModelCard(name=name, architecture="Unet", encoder="resnet18").to_json())
        (folders[-1] / "model.safetensors").write_bytes(b"")
    prob = blob_map((40, 40), seed=1)
    one = write_prob_store(tmp_path / "one" / "s.prob.zarr", prob, settings={"models": [{"name": "a", "path": str(folders[0])}]})
    code, out, _ = run(capsys, "save-threshold", one, 0.35)
    assert code == 0 and one_json_line(out) == {"prob": str(one), "threshold": 0.35, "saved": str(folders[0] / "card.json")}
    assert read_card(folders[0]).threshold == 0.35
    both = write_prob_store(tmp_path / "two" / "s.prob.zarr", prob,
                            settings={"models": [{"name": n, "path": str(f)} for n, f in zip("ab", folders, strict=True)]})
    code, out, _ = run(capsys, "save-threshold", both, 0.4)
    assert code == 0 and one_json_line(out)["saved"] == str(tmp_path / "two" / "ensemble.json")
    assert read_ensemble_config(tmp_path / "two" / "ensemble.json") == {"models": [str(f) for f in folders], "threshold": 0.4}
    assert_one_error_line(*run(capsys, "save-threshold", one, 1.5), "threshold")
    assert read_card(folders[0]).threshold == 0.35
    none = write_prob_store(tmp_path / "none.prob.zarr", prob)
    assert_one_error_line(*run(capsys, "save-threshold", none, 0.5), "none.prob.zarr", "no model")
    assert_one_error_line(*run(capsys, "save-threshold", tmp_path / "missing.prob.zarr", 0.5), "missing.prob.zarr")


def test_entry_point_usage_error_is_one_line(tmp_path):
    result = subprocess.run(CLI + ["export", str(tmp_path / "a.zarr"), "--format", "pdf", "--out", "x"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_evaluate_real_annotations_against_themselves(shared_data, tmp_path, capsys):
    annotations = shared_data / "kidney-he" / "annotations"
    for name in ("C003_region13", "C004_region4"):
        source = annotations / f"{name}.geojson"
        labels, _ = load_labels(source, (951, 1514))
        write_mask(tmp_path / f"{name}.tif", labels)
        code, out, _ = run(capsys, "evaluate", tmp_path / f"{name}.tif", "--gt", source)
        scores = one_json_line(out)
        assert code == 0 and scores["dice"] == 1.0 and scores["iou"] == 1.0 and scores["f1"] == 1.0
        assert scores["gt_count"] == scores["pred_count"] == labels.max() > 0
        code, out, _ = run(capsys, "export", tmp_path / f"{name}.tif", "--format", "geojson", "--out", tmp_path / f"{name}.geojson")
        assert code == 0 and one_json_line(out)["format"] == "geojson"
        back, _ = load_labels(tmp_path / f"{name}.geojson", (951, 1514))
        assert back.max() == labels.max() and np.array_equal(back > 0, labels > 0)
