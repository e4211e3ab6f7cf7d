"""The stores package: one naming rule for every face, one checked open per store, and no torch,
Qt or napari behind it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_maps import write_prob_store

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.stores.labels import LabelsStoreWriter, is_labels_store, open_labels
from napari_hubmap.stores.naming import labels_beside, labels_path, probability_path, progress_path, slide_stem
from napari_hubmap.stores.probability import open_probability

IMPORT_CHECK = """
import sys
import napari_hubmap.stores, napari_hubmap.stores.naming, napari_hubmap.stores.probability, napari_hubmap.stores.labels
roots = ("torch", "napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6")
print(sorted(m for m in sys.modules if m.split(".")[0] in roots or m.startswith("napari_hubmap._widgets")))
"""


def test_stores_import_neither_torch_nor_qt_nor_napari():
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name, stem", [
    ("x.ome.tif", "x"), ("x.OME.TIFF", "x"), ("x.tif", "x"), ("x.svs", "x"), ("a.b.tif", "a.b"),
    ("x.prob.zarr", "x"), ("x.labels.zarr", "x"), ("x.zarr", "x"), ("x.ome.zarr", "x.ome"), ("x", "x"),
])
def test_slide_stem_counts_the_double_suffixes_as_one(name, stem):
    assert slide_stem(Path("/data") / name) == stem


def test_store_names():
    assert probability_path("/slides/x.ome.tif", "/out") == Path("/out/x.prob.zarr")
    assert probability_path("x.tif", "out") == Path("out/x.prob.zarr")
    assert labels_beside("/out/x.prob.zarr") == Path("/out/x.labels.zarr")
    assert labels_path("k.v2", "/p/ground_truth") == Path("/p/ground_truth/k.v2.labels.zarr")  # ids taken as given
    assert progress_path("/out/x.prob.zarr") == Path("/out/x.prob.zarr/progress.json")


def test_each_store_opens_only_as_its_kind(tmp_path):
    prob = write_prob_store(tmp_path / "m.prob.zarr", np.full((40, 30), 200, np.uint8), downscale=2.0)
    levels, meta = open_probability(prob)
    assert levels[0].shape == (40, 30) and meta["downscale"] == 2.0 and meta["progress"]["complete"]
    writer = LabelsStoreWriter(tmp_path / "m.labels.zarr", (40, 30), 2.0)
    writer.write_block(0, 0, np.ones((40, 30), np.uint32))
    writer.finish(objects=1)
    assert is_labels_store(writer.path) and not is_labels_store(prob) and not is_labels_store(tmp_path / "none")
    assert open_labels(writer.path)[1]["objects"] == 1
    with pytest.raises(HubmapInputError, match="is a labels store, not a probability map"):
        open_probability(writer.path)
    with pytest.raises(HubmapInputError, match="is a probability store, not labels"):
        open_labels(prob)
    with pytest.raises(HubmapInputError, match="not found"):
        open_probability(tmp_path / "missing.prob.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(HubmapInputError, match="not a probability store"):
        open_probability(tmp_path / "plain")
