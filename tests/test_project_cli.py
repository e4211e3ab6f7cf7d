"""``napari-hubmap project ...``: one JSON line (or JSON lines) per command; bad input exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_hubmap.cli import main
from napari_hubmap.errors import HubmapInputError
from napari_hubmap.project import init_project, open_project

from synthetic_maps import write_prob_store
from test_project_manifest import SHAPE, make_inputs, snapshot

CLI = [str(Path(sys.executable).with_name("napari-hubmap"))]


def run(capsys, *args) -> tuple[int, list[str], list[str]]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def assert_one_line_error(result, *needles):
    code, out, err = result
    assert code == 2 and not out, (out, err)
    assert len(err) == 1 and err[0].startswith("napari-hubmap: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]


@pytest.fixture
def inputs(tmp_path):
    return make_inputs(tmp_path / "inputs")


def test_project_commands(tmp_path, inputs, capsys):
    root = tmp_path / "p"
    code, out, _ = run(capsys, "project", "init", root, "--slide", inputs["slide"], "--ground-truth", f"kidney={inputs['gt']}",
                       "--prediction", f"{inputs['slide']}={inputs['prob']}", "--tile", 128, "--downscale", 1)
    assert code == 0 and len(out) == 1
    line = json.loads(out[0])
    assert line["slides"] == ["kidney"] and line["tile"] == 128 and line["format_version"] == 1

    code, out, _ = run(capsys, "project", "info", root)
    info = json.loads(out[0])
    assert code == 0 and len(out) == 1 and info["counts"]["unreviewed"] == 12 and info["slides"][0]["objects"] == 3

    code, out, _ = run(capsys, "project", "queue", root, "--top", 5)
    assert code == 0 and len(out) == 5
    first = json.loads(out[0])
    assert {"slide", "tile", "dice", "iou", "uncertainty", "score", "state", "y0", "x1"} <= set(first)
    scores = [json.loads(line)["score"] for line in out]
    assert scores == sorted(scores, reverse=True)

    code, out, _ = run(capsys, "project", "review", root, "--slide", "kidney", "--tile", first["tile"], "--state", "dropped")
    assert code == 0 and len(out) == 1 and json.loads(out[0])["counts"]["dropped"] == 1
    code, out, _ = run(capsys, "project", "review", root, "--slide", "kidney", "--tile", "0,0", "--state", "accepted")
    assert code == 0

    code, out, _ = run(capsys, "project", "dataset", root)
    tiles = [json.loads(line) for line in out]
    assert code == 0 and len(tiles) == 11 and first["tile"] not in {t["tile"] for t in tiles}
    accepted = next(t for t in tiles if t["tile"] == "0,0")
    assert accepted["label_source"] == "pseudo_label" and accepted["provenance"]["prediction"] == str(inputs["prob"].resolve())

    code, out, _ = run(capsys, "project", "queue", root)
    assert code == 0 and len(out) == 10  # reviewed tiles leave the queue

    other = tmp_path / "inputs" / "other.png"
    other.write_bytes(inputs["slide"].read_bytes())
    code, out, _ = run(capsys, "project", "add-slide", root, other, "--id", "second")
    assert code == 0 and json.loads(out[0])["slide"] == "second" and json.loads(out[0])["ground_truth"] is None


def test_project_bad_input(tmp_path, inputs, capsys):
    root = tmp_path / "p"
    assert_one_line_error(run(capsys, "project", "init", root, "--slide", inputs["slide"], "--ground-truth", f"nope={inputs['gt']}"),
                          "--ground-truth", "SLIDE=FILE")
    assert not root.exists()
    assert_one_line_error(run(capsys, "project", "init", root, "--slide", inputs["slide"], "--ground-truth",
                              f"kidney={tmp_path / 'missing.geojson'}"), "missing.geojson", "not found")
    assert not root.exists()  # a failed init leaves no half-made project
    assert run(capsys, "project", "init", root, "--slide", inputs["slide"], "--tile", 128, "--downscale", 1)[0] == 0
    before = snapshot(root)
    assert_one_line_error(run(capsys, "project", "init", root), "project.json", "already a project")
    assert_one_line_error(run(capsys, "project", "review", root, "--slide", "kidney", "--tile", "9,9", "--state", "dropped"),
                          "outside the 3x4 grid")
    assert_one_line_error(run(capsys, "project", "review", root, "--slide", "kidney", "--tile", "1-2", "--state", "dropped"),
                          "ROW,COL")
    assert_one_line_error(run(capsys, "project", "review", root, "--slide", "kidney", "--tile", "1,2", "--state", "maybe"),
                          "invalid choice")
    assert_one_line_error(run(capsys, "project", "review", root, "--slide", "nope", "--tile", "1,2", "--state", "dropped"),
                          "no slide 'nope'")
    assert_one_line_error(run(capsys, "project", "queue", root, "--slide", "kidney"), "has no prediction")
    assert_one_line_error(run(capsys, "project", "add-slide", root, inputs["slide"]), "already has a slide 'kidney'")
    assert_one_line_error(run(capsys, "project", "queue", tmp_path / "nowhere"), "nowhere", "not a project folder")
    assert snapshot(root) == before
    manifest = root / "project.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 99
    manifest.write_text(json.dumps(data))
    before = snapshot(root)
    for command in (["info"], ["dataset"], ["add-slide", "--id", "x"]):
        args = ["project", command[0], root] + ([inputs["slide"]] if command[0] == "add-slide" else []) + command[1:]
        assert_one_line_error(run(capsys, *args), "project.json", "newer napari-hubmap")
    assert snapshot(root) == before


def test_project_cli_subprocess_exit_code(tmp_path):
    result = subprocess.run(CLI + ["project", "dataset", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-hubmap: error:") and "project.json" in lines[0]


@pytest.fixture
def coarse_map(tmp_path, inputs):
    """The inputs' map as inference at downscale 4 would write it (75x105 for the 300x420 slide)."""
    assert SHAPE == (300, 420)
    prob = np.where(inputs["mask"][::4, ::4], 230, 10).astype(np.uint8)
    return write_prob_store(tmp_path / "inputs" / "coarse.prob.zarr", prob, downscale=4.0)


def test_project_init_takes_the_maps_downscale(tmp_path, inputs, coarse_map, capsys):
    root = tmp_path / "p"
    code, out, err = run(capsys, "project", "init", root, "--slide", inputs["slide"],
                         "--prediction", f"kidney={coarse_map}")
    assert code == 0 and len(out) == 1, err
    assert json.loads(out[0])["downscale"] == 4
    project = open_project(root)
    assert project.downscale == 4 and project.working_shape("kidney") == (75, 105)
    assert project.slides[0].predictions[0].level == 0
    code, out, err = run(capsys, "project", "init", tmp_path / "plain", "--slide", inputs["slide"])
    assert code == 0 and json.loads(out[0])["downscale"] == 2  # no prediction: the default
    # the library call the GUI makes: downscale None means the maps' scale, else the default
    assert init_project(tmp_path / "api", predictions=[coarse_map]).downscale == 4
    assert init_project(tmp_path / "api-default").downscale == 2


def test_project_init_with_a_conflicting_downscale_is_one_line_and_writes_nothing(tmp_path, inputs, coarse_map, capsys):
    root = tmp_path / "p"
    result = run(capsys, "project", "init", root, "--slide", inputs["slide"], "--prediction", f"kidney={coarse_map}",
                 "--downscale", 2)
    assert_one_line_error(result, "coarse.prob.zarr", "downscale 4", "--downscale 4")
    assert not root.exists()
    with pytest.raises(HubmapInputError, match="--downscale 4"):
        init_project(root, downscale=2, predictions=[coarse_map])
    assert not root.exists()


def test_working_downscale_is_the_finest_scale_every_map_has(tmp_path):
    from napari_hubmap.project.build import working_downscale
    from napari_hubmap.project.manifest import DEFAULT_DOWNSCALE

    fine = write_prob_store(tmp_path / "fine.prob.zarr", np.zeros((1100, 600), np.uint8), downscale=2.0)  # at 2 and 4
    coarse = write_prob_store(tmp_path / "coarse.prob.zarr", np.zeros((100, 60), np.uint8), downscale=4.0)
    assert working_downscale([fine]) == 2
    assert working_downscale([fine, coarse]) == working_downscale([coarse, fine]) == 4
    assert working_downscale([]) == DEFAULT_DOWNSCALE and working_downscale([], 3) == 3
    with pytest.raises(HubmapInputError, match="no level at the project's working downscale 2"):
        working_downscale([coarse], 2)
