"""Project manifest: round trip, strict reading of bad input (nothing on disk changes), hashes, review state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.project import (
    FORMAT_VERSION,
    add_slide,
    import_ground_truth,
    init_project,
    open_edits,
    open_project,
    set_state,
    training_set,
)
from napari_hubmap.project.manifest import QUICK_BLOCK, QUICK_HASH, file_hash

from synthetic_maps import disk, write_prob_store

SHAPE = (300, 420)  # full resolution; working scale 1 in these tests


def make_inputs(folder: Path) -> dict:
    """A PNG slide, its GeoJSON ground truth (3 discs) and a probability map that finds them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    slide = folder / "kidney.png"
    Image.fromarray(rng.integers(0, 255, SHAPE + (3,), dtype=np.uint8)).save(slide)
    centres = [(60, 80, 30), (150, 300, 40), (240, 150, 25)]
    features = []
    for cy, cx, r in centres:
        angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        ring = [[float(cx + r * np.cos(a)), float(cy + r * np.sin(a))] for a in angles]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
                         "properties": {"classification": {"name": "Glomerulus"}}})
    gt = folder / "kidney.geojson"
    gt.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    mask = np.zeros(SHAPE, bool)
    for cy, cx, r in centres:
        mask |= disk(SHAPE, (cy, cx), r)
    prob = np.where(mask, 230, 10).astype(np.uint8)
    prob_path = write_prob_store(folder / "kidney.prob.zarr", prob, downscale=1.0)
    return {"slide": slide, "gt": gt, "prob": prob_path, "mask": mask}


@pytest.fixture
def project_dir(tmp_path):
    inputs = make_inputs(tmp_path / "inputs")
    project = init_project(tmp_path / "project", tile=128, downscale=1)
    add_slide(project, inputs["slide"], ground_truth=inputs["gt"], predictions=[inputs["prob"]])
    return tmp_path / "project", inputs


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_round_trip(project_dir):
    root, inputs = project_dir
    project = open_project(root)
    assert project.format_version == FORMAT_VERSION and project.tile_size == 128 and project.downscale == 1.0
    entry = project.slide("kidney")
    assert entry.path == str(inputs["slide"].resolve()) and entry.shape == SHAPE
    assert entry.hash.algorithm == "sha256" and entry.hash.size == inputs["slide"].stat().st_size
    assert entry.ground_truth.objects == 3 and entry.ground_truth.file == "ground_truth/kidney.geojson"
    assert (root / "ground_truth" / "kidney.geojson").read_bytes() == inputs["gt"].read_bytes()
    assert entry.predictions[0].pseudo_labels == "pseudo_labels/kidney.labels.zarr"
    assert entry.edits == "edits/kidney.zarr" and not (root / "edits" / "kidney.zarr").exists()
    text = (root / "project.json").read_text()
    assert json.loads(text)["format_version"] == FORMAT_VERSION and text.count("\n") > 20  # human-readable
    before = project.as_dict()
    project.save()
    assert open_project(root).as_dict() == {**before, "modified": json.loads((root / "project.json").read_text())["modified"]}
    set_state(project, "kidney", "1,2", "dropped", note="blurry")
    reopened = open_project(root)
    assert reopened.review.state("kidney", "1,2") == "dropped"
    assert reopened.review.entry("kidney", "1,2")["note"] == "blurry"
    assert reopened.review.counts() == {"unreviewed": 3 * 4 - 1, "accepted": 0, "corrected": 0, "dropped": 1}


def _edit_manifest(root: Path, change) -> None:
    data = json.loads((root / "project.json").read_text())
    change(data)
    (root / "project.json").write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize("change, needles", [
    (lambda d: d["slides"][0]["ground_truth"].update(labels="../../elsewhere.zarr"), ["ground_truth.labels", "escapes"]),
    (lambda d: d["slides"][0].update(edits="/tmp/edits.zarr"), ["slides[0].edits", "not absolute"]),
    (lambda d: d["slides"][0].update(path="../../inputs/kidney.png"), ["slides[0].path", "escapes"]),
    (lambda d: d["slides"][0]["predictions"][0].update(pseudo_labels="pseudo_labels/../../x.zarr"), ["escapes"]),
    (lambda d: d.update(format_version=FORMAT_VERSION + 1), ["newer napari-hubmap", f"format_version {FORMAT_VERSION + 1}"]),
    (lambda d: d.update(kind="something-else"), ["not a napari-hubmap project"]),
    (lambda d: d["slides"][0].update(shape=[300]), ["slides[0].shape"]),
    (lambda d: d["slides"][0].pop("hash"), ["missing field slides[0].hash"]),
    (lambda d: d["slides"].append(dict(d["slides"][0])), ["appears twice"]),
    (lambda d: d["tiles"].update(size="big"), ["tiles.size", "whole number"]),
])
def test_bad_manifests_are_clear_errors_and_nothing_changes(project_dir, change, needles):
    root, _ = project_dir
    _edit_manifest(root, change)
    before = snapshot(root)
    with pytest.raises(HubmapInputError) as error:
        open_project(root)
    assert error.value.path == str(root / "project.json")
    for needle in needles:
        assert needle in str(error.value)
    with pytest.raises(HubmapInputError):
        add_slide(open_project(root, verify=False), root.parent / "inputs" / "kidney.png", slide_id="x")
    assert snapshot(root) == before


def test_a_symlink_out_of_the_folder_escapes(project_dir, tmp_path):
    root, _ = project_dir
    (root / "outside").symlink_to(tmp_path / "inputs")
    _edit_manifest(root, lambda d: d["slides"][0]["ground_truth"].update(labels="outside/kidney.prob.zarr"))
    with pytest.raises(HubmapInputError, match="escapes the project folder"):
        open_project(root)


def test_corrupt_json(project_dir):
    root, _ = project_dir
    text = (root / "project.json").read_text()
    (root / "project.json").write_text(text[: len(text) // 2])
    before = snapshot(root)
    with pytest.raises(HubmapInputError, match=r"project.json: corrupt JSON: .* line \d+ column \d+"):
        open_project(root)
    (root / "review.json").write_text("{not json")
    (root / "project.json").write_text(text)
    with pytest.raises(HubmapInputError, match="review.json: corrupt JSON"):
        open_project(root)
    assert snapshot(root) == {**before, "project.json": text.encode(), "review.json": b"{not json"}


def test_missing_slide_and_hash_mismatch(project_dir):
    root, inputs = project_dir
    slide = inputs["slide"]
    original = slide.read_bytes()
    before = snapshot(root)
    slide.rename(slide.with_suffix(".moved"))
    with pytest.raises(HubmapInputError) as error:
        open_project(root)
    assert error.value.path == str(slide.resolve()) and "not found" in error.value.problem and "kidney" in error.value.problem
    changed = bytearray(original)
    changed[-20] ^= 0xFF  # same size, other content
    slide.write_bytes(bytes(changed))
    with pytest.raises(HubmapInputError, match="changed since it was added: sha256"):
        open_project(root)
    slide.write_bytes(original + b"x")
    with pytest.raises(HubmapInputError, match="bytes, the manifest records"):
        open_project(root)
    slide.write_bytes(original)
    copy = root / "ground_truth" / "kidney.geojson"
    gt_bytes = copy.read_bytes()
    copy.write_text("[]")
    with pytest.raises(HubmapInputError, match="ground truth .* changed since it was imported"):
        open_project(root)
    copy.write_bytes(gt_bytes)
    shutil.rmtree(root / "pseudo_labels")
    with pytest.raises(HubmapInputError, match="prediction of slide 'kidney' is missing"):
        open_project(root)
    after = snapshot(root)
    assert after["project.json"] == before["project.json"]


def test_quick_hash_reads_three_blocks(tmp_path):
    big = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 255, 3 * QUICK_BLOCK + 1000, dtype=np.uint8).tobytes())
    big.write_bytes(data)
    quick = file_hash(big)
    assert quick.algorithm == QUICK_HASH and quick.size == len(data)
    assert file_hash(big, full=True).algorithm == "sha256"
    for offset, seen in ((10, True), (len(data) // 2, True), (len(data) - 5, True), (QUICK_BLOCK + 10, False)):
        changed = bytearray(data)
        changed[offset] ^= 1
        big.write_bytes(changed)
        assert (file_hash(big).value != quick.value) is seen, offset


def test_init_refuses_an_existing_project_and_adding_twice(project_dir):
    root, inputs = project_dir
    before = snapshot(root)
    with pytest.raises(HubmapInputError, match="already a project"):
        init_project(root)
    with pytest.raises(HubmapInputError, match="already has a slide 'kidney'"):
        add_slide(open_project(root), inputs["slide"])
    with pytest.raises(HubmapInputError, match="not found"):
        import_ground_truth(open_project(root), "kidney", root / "nope.geojson")
    assert snapshot(root) == before


def test_create_project_is_all_or_nothing_and_never_removes_what_it_did_not_make(tmp_path):
    import threading

    from napari_hubmap.progress import Cancelled
    from napari_hubmap.project import NewSlide, create_project

    inputs = make_inputs(tmp_path / "inputs")
    reports = []
    project = create_project(tmp_path / "new", [NewSlide(inputs["slide"], inputs["gt"], (inputs["prob"],))], tile=128,
                             downscale=1, progress=reports.append)
    assert [s.id for s in open_project(tmp_path / "new").slides] == ["kidney"] == [s.id for s in project.slides]
    assert reports and {r.details["slide"] for r in reports} == {str(inputs["slide"])}
    other = tmp_path / "inputs" / "other.png"
    shutil.copyfile(inputs["slide"], other)
    missing = NewSlide(other, tmp_path / "missing.geojson")
    with pytest.raises(HubmapInputError, match="not found"):  # the second slide fails: the folder it made goes
        create_project(tmp_path / "a" / "b", [inputs["slide"], missing], tile=128, downscale=1)
    assert not (tmp_path / "a" / "b").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):  # cancelled: a folder it did not make stays, with what it held
        create_project(mine, [NewSlide(inputs["slide"], inputs["gt"])], tile=128, downscale=1, cancel=stop)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    before = snapshot(tmp_path / "new")
    with pytest.raises(HubmapInputError, match="already a project"):
        create_project(tmp_path / "new", [inputs["slide"]])
    assert snapshot(tmp_path / "new") == before


def test_ground_truth_formats_and_mismatches(tmp_path):
    from napari_hubmap.annotations import rle_encode, write_mask, write_rle_csv

    inputs = make_inputs(tmp_path / "inputs")
    project = init_project(tmp_path / "p", tile=64, downscale=2)
    entry = add_slide(project, inputs["slide"], ground_truth=inputs["gt"])
    assert project.working_shape("kidney") == (150, 210) and entry.ground_truth.objects == 3
    rle = tmp_path / "gt.csv"
    write_rle_csv(rle, {"kidney": rle_encode(inputs["mask"])})
    mask_full = tmp_path / "gt.png"
    write_mask(mask_full, inputs["mask"])
    from napari_hubmap.project import ground_truth_array

    reference = np.asarray(ground_truth_array(project, "kidney")) > 0
    for source in (rle, mask_full):
        import_ground_truth(project, "kidney", source)
        got = np.asarray(ground_truth_array(open_project(project.root), "kidney")) > 0
        assert (got != reference).mean() < 0.01, source
    wrong = tmp_path / "wrong.png"
    write_mask(wrong, np.ones((77, 77), bool))
    before = snapshot(project.root)
    with pytest.raises(HubmapInputError, match="ground truth is 77x77"):
        import_ground_truth(project, "kidney", wrong)
    with pytest.raises(HubmapInputError, match="no level at the project's working downscale 2"):
        from napari_hubmap.project import add_prediction

        add_prediction(project, "kidney", inputs["prob"])
    assert snapshot(project.root) == before


def test_training_set_follows_the_review(project_dir):
    root, _ = project_dir
    project = open_project(root)
    tiles = {t.tile: t for t in training_set(project)}
    assert len(tiles) == 12 and {t.label_source for t in tiles.values()} == {"ground_truth"}
    assert tiles["0,0"].provenance["ground_truth_file"] == "ground_truth/kidney.geojson"
    set_state(project, "kidney", "0,0", "dropped")
    set_state(project, "kidney", "1,2", "accepted")
    with pytest.raises(HubmapInputError, match="no edits yet"):
        set_state(project, "kidney", "2,1", "corrected")
    store = open_edits(project, "kidney")
    store[256:300, 128:256] = 9
    store.close()
    set_state(project, "kidney", "2,1", "corrected")
    with pytest.raises(HubmapInputError, match="outside the 3x4 grid"):
        set_state(project, "kidney", "3,0", "dropped")
    with pytest.raises(HubmapInputError, match="state must be one of"):
        set_state(project, "kidney", "0,1", "maybe")
    tiles = {t.tile: t for t in training_set(open_project(root))}
    assert "0,0" not in tiles and len(tiles) == 11
    assert tiles["1,2"].label_source == "pseudo_label" and tiles["1,2"].labels == "pseudo_labels/kidney.labels.zarr"
    assert tiles["1,2"].provenance["threshold"] == 0.5 and tiles["1,2"].provenance["review"]["state"] == "accepted"
    assert tiles["2,1"].label_source == "corrected" and tiles["2,1"].provenance["edits"] == "edits/kidney.zarr"
    from napari_hubmap.project import read_tile_labels

    assert (read_tile_labels(project, tiles["2,1"])[:, :] == 9).all()
    assert read_tile_labels(project, tiles["1,2"]).any()


def test_layers_restore_the_slide_its_labels_edits_and_review(project_dir):
    from napari_hubmap.project import project_layers

    root, _ = project_dir
    project = open_project(root)
    set_state(project, "kidney", "0,1", "dropped")
    set_state(project, "kidney", "1,1", "accepted")
    store = open_edits(project, "kidney")
    layers = project_layers(open_project(root), "kidney", edits=store)
    roles = [kwargs["metadata"]["napari_hubmap"]["role"] for _, kwargs, _ in layers]
    assert roles == ["slide", "probability", "ground_truth", "pseudo_labels", "edits", "review"]
    assert [kind for *_, kind in layers] == ["image", "image", "labels", "labels", "labels", "shapes"]
    rects, kwargs, _ = layers[-1]
    assert kwargs["properties"]["state"] == ["dropped", "accepted"]
    assert rects[0] == [[0, 128], [0, 256], [128, 256], [128, 128]]
    assert layers[4][0] is store
    from napari.components import ViewerModel

    viewer_model = ViewerModel()  # headless: no Qt
    for data, kwargs, kind in layers:
        viewer_model._add_layer_from_data(data, kwargs, kind)
    assert len(viewer_model.layers) == 6 and viewer_model.layers[-2].editable
    store.close()


def test_training_tiles_of_a_project_follow_the_slides_given_mpp(tmp_path):
    """A PNG carries no µm/px: the one given at add-slide (1 µm/px) sets the working scale of its training
    tiles (2 µm/px: half size), not the model's fallback downscale (4: quarter size)."""
    from napari_hubmap.training import load_sources

    inputs = make_inputs(tmp_path / "inputs")
    project = init_project(tmp_path / "project", tile=128, downscale=1)
    add_slide(project, inputs["slide"], ground_truth=inputs["gt"], mpp=1.0)
    samples = load_sources([tmp_path / "project"], downscale=4.0, target_mpp=2.0)
    shapes = {s.name.split("/", 1)[1]: s.image.shape[:2] for s in samples}
    assert shapes["0,0"] == (64, 64) and shapes["2,3"] == (22, 18)
    assert all(s.mask.shape == s.image.shape[:2] for s in samples)
