"""A whole cohort: resumable per slide, the same bytes on a Dask LocalCluster, a killed worker and a corrupt
slide changing nothing for the other slides."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from napari_hubmap.annotations.rle import read_rle_csv
from napari_hubmap.batch import COHORT_CSV, CohortConfig, run_cohort
from napari_hubmap.inference import InferenceConfig
from napari_hubmap.stores.probability import open_probability

from test_cli import tiny_model

CLI = [sys.executable, "-m", "napari_hubmap.cli"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from napari_hubmap.synth import SynthSpec, write_synthetic_tiff

    root = tmp_path_factory.mktemp("cohort")
    slides = []
    for seed, height in ((1, 1000), (2, 1000), (3, 2400)):  # slide3's map: 1200 rows, three bands of 512
        slides.append(root / f"slide{seed}.tif")
        write_synthetic_tiff(slides[-1], SynthSpec(width=1400, height=height, seed=seed))
    return root, slides


def config_for(model, band_rows: int = 8192) -> CohortConfig:
    return CohortConfig(inference=InferenceConfig(models=[str(model)]), postprocess={"threshold": 0.5},
                        exports=("rle-csv", "geojson", "ome-zarr"), band_rows=band_rows)


def outputs(out: Path, slides) -> dict:
    """Every array and export of the cohort, as bytes."""
    found = {}
    for slide in slides:
        stem = slide.stem
        levels, meta = open_probability(out / f"{stem}.prob.zarr")
        assert meta["progress"]["complete"]
        found[f"{stem}.prob"] = [np.asarray(level[:]).tobytes() for level in levels]
        found[f"{stem}.geojson"] = (out / f"{stem}.geojson").read_bytes()
        found[f"{stem}.rle.csv"] = (out / f"{stem}.rle.csv").read_bytes()
    found[COHORT_CSV] = (out / COHORT_CSV).read_bytes()
    return found


def test_cohort_here_exports_every_slide_and_skips_finished_ones(tmp_path, cohort):
    _, slides = cohort
    model = tiny_model(tmp_path)
    seen = []
    lines = run_cohort(slides, tmp_path / "out", config_for(model), progress=seen.append)
    assert [line["stem"] for line in lines] == ["slide1", "slide2", "slide3"]
    assert all("error" not in line and not line["skipped"] for line in lines)
    assert set(read_rle_csv(tmp_path / "out" / COHORT_CSV)) == {"slide1", "slide2", "slide3"}
    assert seen[-1].done == seen[-1].total == 3 and set(seen[-1].details["tiles"]) == {"slide1", "slide2", "slide3"}
    tiles = sum(line["tiles"] for line in lines)
    assert seen[-1].message == f"tiles {tiles}/{tiles}"  # what the progress bar shows beside the slide count
    before = outputs(tmp_path / "out", slides)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.geojson")}
    again = run_cohort(slides, tmp_path / "out", config_for(model))
    assert all(line["skipped"] for line in again)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and outputs(tmp_path / "out", slides) == before
    changed = CohortConfig(inference=InferenceConfig(models=[str(model)]), postprocess={"threshold": 0.6},
                           exports=("rle-csv", "geojson", "ome-zarr"))
    assert not any(line["skipped"] for line in run_cohort(slides[:1], tmp_path / "out", changed))


def test_local_cluster_with_bands_writes_the_same_bytes_and_survives_a_killed_worker(tmp_path, cohort):
    _, slides = cohort
    model = tiny_model(tmp_path)
    here = run_cohort(slides, tmp_path / "here", config_for(model))
    killed = []

    def kill_a_busy_worker(progress):
        tiles = progress.details.get("tiles", {})
        if not killed and any(0 < done < total for done, total in tiles.values()):
            # both workers are mid-slide (three slides, two workers); spawn_main: a worker, not the resource tracker
            workers = [c for c in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
            if workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)

    lines = run_cohort(slides, tmp_path / "cluster", config_for(model, band_rows=512), workers=2,
                       progress=kill_a_busy_worker)
    assert killed, "no worker was killed mid-slide"
    assert [line.get("bands") for line in lines] == [None, None, 3]  # the large slide was shared out in bands
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert all("error" not in line for line in lines), lines
    assert [line["objects"] for line in lines] == [line["objects"] for line in here]
    assert outputs(tmp_path / "cluster", slides) == outputs(tmp_path / "here", slides)


def test_a_corrupt_slide_is_its_own_error_line_and_the_others_finish(tmp_path, cohort):
    _, slides = cohort
    model = tiny_model(tmp_path)
    corrupt = tmp_path / "broken.tif"
    corrupt.write_bytes(b"II*\0" + os.urandom(200))
    command = CLI + ["batch", str(slides[0]), str(corrupt), str(slides[1]), "--model", str(model),
                     "--out", str(tmp_path / "out"), "--export", "rle-csv"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 2, done.stderr
    assert [line["stem"] for line in lines] == ["slide1", "broken", "slide2"]
    assert "broken.tif" in lines[1]["error"] and all("error" not in lines[i] for i in (0, 2))
    assert set(read_rle_csv(tmp_path / "out" / COHORT_CSV)) == {"slide1", "slide2"}


def test_bad_cohort_settings_are_one_error_line(tmp_path, cohort):
    _, slides = cohort
    model = tiny_model(tmp_path)
    done = subprocess.run(CLI + ["batch", str(slides[0]), "--model", str(model), "--out", str(tmp_path / "o"),
                                 "--export", "pdf"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "pdf" in done.stderr
    twin = tmp_path / "other" / slides[0].name
    twin.parent.mkdir()
    twin.write_bytes(slides[0].read_bytes())
    done = subprocess.run(CLI + ["batch", str(slides[0]), str(twin), "--model", str(model), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "same name" in done.stderr
