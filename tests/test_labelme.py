"""LabelMe JSON annotations: shapes, label filter, recorded image size, malformed files, CLI and trainer."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_hubmap.annotations import (
    check_image_size,
    convert_annotations,
    load_labels,
    read_annotation_file,
    read_annotations,
    read_mask,
)
from napari_hubmap.errors import HubmapInputError

CLI = [str(Path(sys.executable).with_name("napari-hubmap"))]
GARBAGE_BASE64 = "!!not*base64@@" * 50


def shape(points, label="Glomeruli", shape_type="polygon"):
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type, "flags": {}}


def labelme(shapes, height=60, width=80, image_data=None):
    return {"version": "4.5.5", "flags": {}, "shapes": shapes, "imagePath": "x.jpg", "imageData": image_data,
            "imageHeight": height, "imageWidth": width}


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


SQUARE = [[10, 10], [30, 10], [30, 30], [10, 30]]


# ----------------------------------------------------------------------------------------------- shapes


def test_polygon(tmp_path):
    triangle = [[0, 0], [40, 0], [0, 20]]
    read = read_annotation_file(write(tmp_path / "a.json", labelme([shape(SQUARE), shape(triangle, "Vessel")])))
    assert read.image_shape == (60, 80)
    square, tri = read.annotations
    assert square.class_name == "Glomeruli" and square.geometry.area == 400
    assert square.geometry.bounds == (10, 10, 30, 30)
    assert tri.class_name == "Vessel" and tri.geometry.area == 400


def test_rectangle_is_four_corners(tmp_path):
    (rect,) = read_annotations(write(tmp_path / "r.json", labelme([shape([[30, 25], [10, 5]], "R", "rectangle")])))
    assert rect.geometry.geom_type == "Polygon" and len(rect.geometry.exterior.coords) == 5
    assert rect.geometry.bounds == (10, 5, 30, 25) and rect.geometry.area == 400
    labels, _ = load_labels(tmp_path / "r.json", (60, 80))
    assert (labels > 0).sum() == 400 and labels[5:25, 10:30].all()


def test_circle_area_close_to_pi_r_squared(tmp_path):
    circle = shape([[40, 30], [46, 38]], shape_type="circle")  # radius 10
    (disc,) = read_annotations(write(tmp_path / "c.json", labelme([circle])))
    assert len(disc.geometry.exterior.coords) == 65
    assert disc.geometry.area == pytest.approx(math.pi * 100, rel=0.01)
    assert disc.geometry.centroid.x == pytest.approx(40) and disc.geometry.centroid.y == pytest.approx(30)


def test_image_data_is_never_decoded(tmp_path):
    data = labelme([shape(SQUARE)], image_data=GARBAGE_BASE64)
    (square,) = read_annotations(write(tmp_path / "d.json", data))
    assert square.geometry.area == 400


def test_shapes_without_area_are_skipped_with_one_warning(tmp_path):
    shapes = [shape(SQUARE), shape([[0, 0], [5, 5]], shape_type="line"), shape([[1, 1]], shape_type="point"),
              shape([[0, 0], [5, 5], [9, 0]], shape_type="linestrip"), shape([[1, 1], [5, 5]], shape_type="line")]
    path = write(tmp_path / "s.json", labelme(shapes))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annotations = read_annotations(path)
    assert len(annotations) == 1
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(path) in message and "skipped 4" in message
    assert "line x2" in message and "linestrip x1" in message and "point x1" in message


def test_shape_type_missing_means_polygon(tmp_path):
    data = labelme([{"label": "G", "points": SQUARE}])
    assert read_annotations(write(tmp_path / "m.json", data))[0].geometry.area == 400


# ------------------------------------------------------------------------------------------ label filter


def test_label_filter(tmp_path):
    shapes = [shape(SQUARE), shape([[40, 40], [50, 40], [50, 50]], "Vessel"), shape(SQUARE, "Tubule")]
    path = write(tmp_path / "f.json", labelme(shapes))
    assert len(read_annotations(path)) == 3
    assert [a.class_name for a in read_annotations(path, labels=["Vessel", "Tubule"])] == ["Vessel", "Tubule"]
    assert [a.class_name for a in read_annotations(path, labels="Glomeruli")] == ["Glomeruli"]
    with pytest.warns(UserWarning, match="no object has the label.*Glomerulus.*Glomeruli, Tubule, Vessel"):
        assert read_annotations(path, labels={"Glomerulus"}) == []


def test_label_filter_on_geojson_classification(tmp_path):
    def feature(name):
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [SQUARE + [SQUARE[0]]]},
                "properties": {"classification": {"name": name}}}

    path = write(tmp_path / "g.geojson", {"type": "FeatureCollection", "features": [feature("G"), feature("FC")]})
    assert [a.class_name for a in read_annotations(path, labels=["FC"])] == ["FC"]
    assert read_annotation_file(path).image_shape is None


def test_label_filter_is_for_polygons_only(tmp_path):
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(HubmapInputError, match="label filter applies to polygon annotations"):
        load_labels(tmp_path / "m.png", None, labels=["G"])


# ------------------------------------------------------------------------------------ recorded image size


def test_check_image_size():
    check_image_size("a.json", None, (5, 5))
    check_image_size("a.json", (1200, 1600), (1200, 1600, 3))
    with pytest.raises(HubmapInputError, match=r"a\.json: .*1600x1200 image \(width x height\).* is 1500x1000"):
        check_image_size("a.json", (1200, 1600), (1000, 1500))


def test_size_mismatch_is_an_error_where_the_image_is_known(tmp_path):
    from napari_hubmap.annotations.overlay import load_annotation_labels
    from napari_hubmap.project.build import rasterise_ground_truth

    path = write(tmp_path / "s.json", labelme([shape(SQUARE)], height=60, width=80))
    assert load_labels(path, (60, 80), downsample=2)[0].shape == (30, 40)
    needle = r"80x60 image \(width x height\) but the image is 90x60"
    with pytest.raises(HubmapInputError, match=needle):
        convert_annotations(path, "mask", tmp_path / "m.png", shape=(60, 90))
    with pytest.raises(HubmapInputError, match=needle):
        convert_annotations(path, "mask", tmp_path / "m.png", shape=(60, 90), downsample=2)
    with pytest.raises(HubmapInputError, match=needle):
        convert_annotations(path, "geojson", tmp_path / "m.geojson", shape=(60, 90))
    convert_annotations(path, "geojson", tmp_path / "ok.geojson")  # no shape given: nothing to check
    with pytest.raises(HubmapInputError, match=needle):
        load_annotation_labels(path, (60, 90))  # the Slide panel's import
    with pytest.raises(HubmapInputError, match=needle):
        rasterise_ground_truth(path, (60, 90), 2.0)  # a project's ground truth
    assert rasterise_ground_truth(path, (60, 80), 2.0).max() == 1


# ------------------------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "content, problem",
    [
        ('"a string"', "got JSON str"),
        ('{"shapes": {"label": "G"}}', '"shapes" is not a list'),
        ('{"shapes": [3]}', "shape 1 is not a JSON object"),
        ('{"shapes": [{"label": "G", "shape_type": "polygon"}]}', "shape 1 ('G') has no points"),
        ('{"shapes": [{"label": "G", "points": []}]}', "has no points"),
        ('{"shapes": [{"label": "G", "points": [["a", "b"], [1, 2], [3, 4]]}]}', "not a list of numeric [x, y]"),
        ('{"shapes": [{"label": "G", "points": [[1, 2, 3], [1, 2, 3], [3, 4, 5]]}]}', "numeric [x, y] pairs"),
        ('{"shapes": [{"label": "G", "points": [[1, 2], [3]]}]}', "numeric [x, y] pairs"),
        ('{"shapes": [{"label": "G", "points": [[true, false], [1, 1], [2, 0]]}]}', "numeric [x, y] pairs"),
        ('{"shapes": [{"label": "G", "points": [[NaN, 0], [1, 1], [2, 0]]}]}', "points contain NaN or infinity"),
        ('{"shapes": [{"label": "G", "points": [[0, 0], [5, 5]]}]}', "a polygon needs 3 or more points, got 2"),
        ('{"shapes": [{"points": [[0, 0], [5, 5], [1, 1]], "shape_type": "rectangle"}]}',
         "shape 1: a rectangle needs exactly 2 points, got 3"),
        ('{"shapes": [{"label": "C", "points": [[0, 0]], "shape_type": "circle"}]}',
         "a circle needs exactly 2 points, got 1"),
        ('{"shapes": [], "imageHeight": 0, "imageWidth": 10}', "imageHeight must be a positive integer, got 0"),
        ('{"shapes": [], "imageHeight": "1200", "imageWidth": 10}', "imageHeight must be a positive integer"),
        ('{"shapes": [], "imageHeight": 12.5, "imageWidth": 10}', "imageHeight must be a positive integer"),
        ('{"shapes": [], "imageHeight": true, "imageWidth": 10}', "imageHeight must be a positive integer"),
        ('{"shapes": [], "imageHeight": 10}', "imageWidth must be a positive integer, got None"),
    ],
)
def test_malformed_labelme_raises(tmp_path, content, problem):
    path = write(tmp_path / "bad.json", content)
    with pytest.raises(HubmapInputError) as info:
        read_annotations(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)


# --------------------------------------------------------------------------------------------------- CLI


def run_cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def test_cli_converts_labelme_to_a_mask(tmp_path):
    shapes = [shape(SQUARE), shape([[40, 20], [70, 50]], "Vessel", "rectangle")]
    path = write(tmp_path / "106.json", labelme(shapes, image_data=GARBAGE_BASE64))
    done = run_cli("convert-annotations", path, "--to", "mask", "--shape", "60x80", "--out", tmp_path / "all.png")
    assert done.returncode == 0, done.stderr
    labels = read_mask(tmp_path / "all.png")
    assert labels.shape == (60, 80) and labels.max() == 2 and (labels > 0).sum() == 400 + 900
    done = run_cli("convert-annotations", path, "--to", "mask", "--shape", "60x80", "--label", "Vessel",
                   "--out", tmp_path / "vessel.png")
    assert done.returncode == 0, done.stderr
    assert (read_mask(tmp_path / "vessel.png") > 0).sum() == 900


@pytest.mark.parametrize("content, needle", [
    ('{"shapes": [{"label": "G", "points": [[0, 0], [5, 5]]}]}', "a polygon needs 3 or more points"),
    (json.dumps(labelme([shape(SQUARE)], height=61)), "80x61 image (width x height) but the image is 80x60"),
])
def test_cli_malformed_labelme_is_one_line_exit_2(tmp_path, content, needle):
    path = write(tmp_path / "bad.json", content)
    done = run_cli("convert-annotations", path, "--to", "mask", "--shape", "60x80", "--out", tmp_path / "m.png")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"napari-hubmap: error: {path}: "), done.stderr
    assert needle in lines[0]
    assert not (tmp_path / "m.png").exists()


def test_train_cli_label_option():
    from napari_hubmap.cli import build_parser
    from napari_hubmap.cli.train import config_of

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--label", "Glomeruli", "--label", "G"])
    assert config_of(args).labels == ["Glomeruli", "G"]
    assert config_of(build_parser().parse_args(["train", "--data", "d", "--out", "o"])).labels is None


# ----------------------------------------------------------------------------------------------- trainer


def labelme_folder(folder: Path, image_size=(30, 40), recorded=None) -> Path:
    """``folder/images/pA_<i>.png`` + ``folder/annotations/pA_<i>.json`` (LabelMe: a square and a vessel)."""
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    height, width = recorded or image_size
    for i in range(2):
        Image.fromarray(np.full((*image_size, 3), 200, np.uint8)).save(folder / "images" / f"pA_{i}.png")
        shapes = [shape([[2 + i, 3], [12 + i, 3], [12 + i, 13], [2 + i, 13]]),
                  shape([[20, 5], [30, 15]], "Vessel", "rectangle")]
        write(folder / "annotations" / f"pA_{i}.json", labelme(shapes, height, width, GARBAGE_BASE64))
    return folder


def test_trainer_folder_with_labelme_annotations(tmp_path):
    from napari_hubmap.training import load_sources

    data = labelme_folder(tmp_path / "lm")
    samples = load_sources([data], downscale=1, target_mpp=None)
    assert [s.name for s in samples] == ["lm/pA_0", "lm/pA_1"]
    first = samples[0]
    assert first.mask.shape == (30, 40) and first.mask.dtype == np.uint8
    assert first.positives == 100 + 100 and first.mask[3:13, 2:12].all() and first.mask[5:15, 20:30].all()
    only = load_sources([data], downscale=1, target_mpp=None, labels=["Glomeruli"])
    assert only[1].positives == 100 and only[1].mask[3:13, 3:13].all() and not only[1].mask[5:15, 20:30].any()
    assert load_sources([data], downscale=2, target_mpp=None)[0].mask.shape == (15, 20)


def test_trainer_folder_size_mismatch_names_the_file_and_both_sizes(tmp_path):
    from napari_hubmap.training import load_sources

    data = labelme_folder(tmp_path / "lm", image_size=(30, 40), recorded=(1200, 1600))
    with pytest.raises(HubmapInputError) as info:
        load_sources([data], downscale=1, target_mpp=None)
    message = str(info.value)
    assert message.startswith(str(data / "annotations" / "pA_0.json") + ": ")
    assert "1600x1200" in message and "40x30" in message


# --------------------------------------------------------------------------------------------- real data


def test_hubmap_pas_annotations_all_read(shared_data):
    folder = shared_data / "hubmap-pas" / "annotations"
    files = sorted(folder.glob("*.json"))
    assert len(files) == 110
    total = 0
    for path in files:
        read = read_annotation_file(path)
        assert read.image_shape == (1200, 1600), path
        assert {a.class_name for a in read.annotations} <= {"Glomeruli"}, path
        total += len(read.annotations)
    assert total == 455
