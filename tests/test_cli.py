"""The napari-hubmap command line: JSON output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
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
    assert set(info) == {"path", "width", "height", "levels", "mpp", "dtype", "layout"}
    assert (info["width"], info["height"]) == (1800, 2500)
    assert info["levels"] == [[2500, 1800], [1250, 900], [625, 450]]
    assert info["mpp"] == pytest.approx(0.25)
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
