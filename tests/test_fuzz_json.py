"""Property-based tests of every JSON reader (issue 16, JSON part): GeoJSON/QuPath and LabelMe annotations, the
project manifest with its review file and edits journal, and the model card.

The oracle for any input: the reader returns a correct result (what it read writes back and reads again the same)
or raises one :class:`HubmapInputError` naming the file; never another exception, never a hang (the profile's
per-call deadline), never gigabytes for a small file. Inputs: arbitrary bytes; valid files (the shared data, or
what the code writes) with keys dropped, duplicated or retyped and values replaced by 1e308, 10**400, NaN,
Infinity, negative or empty ones; JSON nested thousands of levels deep; non-UTF-8 bytes and a BOM. Every failure
these properties found is also a named regression test below; benchmarks/fuzz_json_campaign.py runs the
properties for longer.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import Polygon

from napari_hubmap.annotations import convert_annotations, rasterize, read_annotation_file
from napari_hubmap.annotations.geojson import annotations_to_feature_collection, write_geojson
from napari_hubmap.annotations.polygons import MAX_COORDINATE, Annotation
from napari_hubmap.cli import main
from napari_hubmap.errors import HubmapInputError
from napari_hubmap.jsonio import MAX_DEPTH, nesting_depth, parse_json
from napari_hubmap.project.edits import read_journal
from napari_hubmap.project.manifest import FileHash, Project, SlideEntry
from napari_hubmap.registry.card import ModelCard
from napari_hubmap.registry.store import read_card

from conftest import SHARED_DATA

CLI = [sys.executable, "-m", "napari_hubmap.cli"]
MEMORY_CEILING = 64 * 2**20
"""The most a reader may allocate (traced) for a file of a few kilobytes."""
BIG_INT = 10**400
DEEP = 3000


# ------------------------------------------------------------------------------------------- seed files


def _shared(folder: str, count: int) -> list[bytes]:
    paths = sorted((SHARED_DATA / folder).glob("*.json"))[:count]
    return [p.read_bytes() for p in paths]


def _square(x: float, y: float, side: float) -> list:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]


WRITTEN_GEOJSON = json.dumps(annotations_to_feature_collection([
    Annotation(Polygon(_square(10, 10, 20)), "Glomerulus", {"measure": {"area": 400}}),
    Annotation(shapely.MultiPolygon([Polygon(_square(40, 40, 5)), Polygon(_square(60, 60, 5))]), "FC"),
])).encode()
WRITTEN_LABELME = json.dumps({
    "version": "4.5.5", "flags": {}, "imagePath": "x.jpg", "imageData": None, "imageHeight": 60, "imageWidth": 80,
    "shapes": [{"label": "G", "points": [[1, 1], [20, 2], [10, 30]], "shape_type": "polygon"},
               {"label": "G", "points": [[30, 30], [40, 45]], "shape_type": "rectangle"},
               {"label": "C", "points": [[60, 20], [65, 20]], "shape_type": "circle"},
               {"label": "L", "points": [[0, 0], [5, 5]], "shape_type": "line"}],
}).encode()
ANNOTATION_SEEDS = [WRITTEN_GEOJSON, WRITTEN_LABELME, *_shared("hubmap-json", 2), *_shared("hubmap-pas/annotations", 2)]


def _manifest_seed() -> bytes:
    """A manifest as Project.save writes it: one slide with ground truth and a prediction."""
    from napari_hubmap.project.manifest import GroundTruth, PredictionEntry

    slide = SlideEntry(
        id="kidney", path="/data/kidney.tif", hash=FileHash("sha256", "ab" * 32, 1234), shape=(3000, 4200),
        mpp=0.5, mpp_source="file", mpp_file=0.5, edits="edits/kidney.zarr", added="2026-01-01T00:00:00Z",
        ground_truth=GroundTruth("ground_truth/kidney.geojson", "/data/kidney.geojson", "cd" * 32,
                                 "ground_truth/kidney.labels.zarr", 3, median_area=812.5),
        predictions=[PredictionEntry("maps/kidney.prob.zarr", 1, 0.5, ["m"], "pseudo_labels/kidney.labels.zarr",
                                     {"min_size": 10})],
    )
    project = Project(root=Path("."), tile_size=512, downscale=2.0, slides=[slide], models=["m"],
                      created="2026-01-01T00:00:00Z", modified="2026-01-01T00:00:00Z")
    return (json.dumps(project.as_dict(), indent=2) + "\n").encode()


MANIFEST_SEED = _manifest_seed()
REVIEW_SEED = json.dumps({"kind": "napari-hubmap-review", "format_version": 1, "slides": {"kidney": {
    "0,1": {"state": "dropped", "time": "2026-01-01T00:00:00Z", "note": None,
            "history": [{"state": "accepted", "time": "2026-01-01T00:00:00Z"}]}}}}).encode()
CARD_SEED = ModelCard(name="tiny", architecture="Unet", encoder="resnet18", downscale=2.0, tile=256, overlap=32,
                      architecture_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
                      metrics={"dice": 0.8, "runs": {"cv-0": {"f1": 0.7}}}, created="2026-01-01T00:00:00+00:00",
                      ).to_json().encode()


# ------------------------------------------------------------------------------------------- mutations


class _DuplicateKeys(dict):
    """A JSON object written with a key twice (json.dumps takes the pairs from ``items``)."""

    def __init__(self, pairs: list):
        super().__init__(pairs)
        self.pairs = pairs

    def items(self):
        return self.pairs


DEEP_MARK = "\x00deep\x00"
"""Stands for a value nested DEEP levels, put into the text after json.dumps (which cannot write it)."""
ODD_VALUES = [1e308, -1e308, BIG_INT, -BIG_INT, math.nan, math.inf, -math.inf, -1, 0, -0.5, 2**31, 2**63, 10**9, "",
              [], {}, None, True, False, "x" * 300, [[]], [[1e308, 1e308]], [None], DEEP_MARK]
json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _paths(value, prefix=()) -> list[tuple]:
    """Every (key/index path) into a parsed JSON value, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, prefix + (index,))
    return found


def _replace(value, path: tuple, change):
    """``value`` with the item at ``path`` replaced by ``change(item)`` (a copy along the path)."""
    if not path:
        return change(value)
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
    else:
        copy = list(value)
    copy[head] = _replace(value[head], rest, change)
    return copy


def _mutation(draw, doc):
    """One structural change at a random place of ``doc``: drop, duplicate or rename a key (drop or repeat an
    array item), retype or replace a value."""
    path = draw(st.sampled_from(_paths(doc)))
    kind = draw(st.sampled_from(["drop", "duplicate", "rename", "odd", "random", "empty", "wrap"]))
    if kind == "rename" and path and isinstance(path[-1], str):
        new_key = draw(st.text(max_size=12))
        return _replace(doc, path[:-1], lambda container: {new_key if k == path[-1] else k: v
                                                            for k, v in container.items()})
    if kind in ("drop", "duplicate", "rename") and path:
        parent, key = path[:-1], path[-1]

        def edit(container):
            if isinstance(container, dict):
                pairs = [(k, v) for k, v in container.items() if k != key or kind == "duplicate"]
                return _DuplicateKeys(pairs + [(key, container[key])]) if kind == "duplicate" else dict(pairs)
            items = list(container)
            return items[:key] + items[key + 1:] if kind == "drop" else items[:key + 1] + items[key:]
        return _replace(doc, parent, edit)
    if kind == "odd":
        odd = draw(st.sampled_from(ODD_VALUES))
        return _replace(doc, path, lambda _: odd)
    if kind == "random":
        new = draw(json_values)
        return _replace(doc, path, lambda _: new)
    if kind == "empty":
        return _replace(doc, path, _emptied)
    return _replace(doc, path, lambda old: [old])


def _emptied(value):
    """The empty value of ``value``'s JSON type (null for numbers, true/false and null)."""
    for kind in (dict, list, str):
        if isinstance(value, kind):
            return kind()
    return None


def _dumps(doc) -> bytes:
    text = json.dumps(doc)  # NaN, Infinity and 10**400 as Python writes them
    deep = "[" * DEEP + "]" * DEEP
    return text.replace(json.dumps(DEEP_MARK), deep).encode()


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed file with 1 to 4 structural changes, or with its bytes damaged (BOM, cut, a byte flipped)."""
    raw = draw(st.sampled_from(seeds))
    if draw(st.integers(0, 5)) == 0:
        return _damaged(draw, raw)
    doc = json.loads(raw)
    for _ in range(draw(st.integers(1, 4))):
        doc = _mutation(draw, doc)
    return _dumps(doc)


def _damaged(draw, raw: bytes) -> bytes:
    kind = draw(st.sampled_from(["bom", "cut", "flip", "latin1"]))
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    if kind == "cut":
        return raw[: draw(st.integers(0, len(raw)))]
    if kind == "latin1":
        return raw.replace(b'"', b'"\xe9', 1)
    at = draw(st.integers(0, len(raw) - 1))
    return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]


@st.composite
def deeply_nested(draw) -> bytes:
    """Arrays or objects nested MAX_DEPTH+1 to 5000 levels, bare or inside a valid annotation file."""
    depth = draw(st.integers(MAX_DEPTH + 1, 5000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    core = opener * depth + ("1" if opener != "[" else "") + closer * depth
    where = draw(st.sampled_from(["bare", "properties", "coordinates"]))
    if where == "bare":
        return core.encode()
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 5)]},
               "properties": {"x": DEEP_MARK}}
    if where == "coordinates":
        feature["geometry"]["coordinates"] = [DEEP_MARK]
    return json.dumps([feature]).replace(json.dumps(DEEP_MARK), core).encode()


any_bytes = st.binary(max_size=300)


# ------------------------------------------------------------------------------------------- oracles


def _one_error_naming(error: HubmapInputError, path: Path) -> None:
    assert error.path == str(path), error
    assert str(error).startswith(f"{path}: ") and "\n" not in str(error)


def _within_bounds(geometry) -> bool:
    coords = shapely.get_coordinates(geometry)
    return bool(np.isfinite(coords).all() and np.abs(coords).max(initial=0) <= MAX_COORDINATE)


def check_annotation_file(content: bytes) -> None:
    """Read ``content`` as a .json annotation file: a correct result that round-trips, or one input error."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.json"
        path.write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read = read_annotation_file(path)
            except HubmapInputError as error:
                _one_error_naming(error, path)
                return
            for annotation in read.annotations:
                assert annotation.geometry.geom_type in ("Polygon", "MultiPolygon")
                assert annotation.geometry.is_valid and annotation.geometry.area > 0
                assert _within_bounds(annotation.geometry)
            again = Path(folder) / "out.geojson"
            write_geojson(again, annotations_to_feature_collection(read.annotations))
            back = read_annotation_file(again).annotations
        assert [a.class_name for a in back] == [a.class_name for a in read.annotations]
        for before, after in zip(read.annotations, back):
            assert before.geometry.symmetric_difference(after.geometry).area <= 1e-3 * max(1.0, before.geometry.length)
        rasterize(read.annotations, (64, 64))  # any coordinates rasterise into a small image


def _open_project_folder(manifest: bytes, review: bytes | None = None):
    folder = tempfile.TemporaryDirectory()
    root = Path(folder.name)
    (root / "project.json").write_bytes(manifest)
    if review is not None:
        (root / "review.json").write_bytes(review)
    return folder, root


def check_manifest(manifest: bytes, review: bytes | None = None) -> None:
    """Open a project folder holding these files (not verifying slides): a project that writes back and reopens
    the same and answers ``project info``'s questions, or one input error naming project.json or review.json."""
    folder, root = _open_project_folder(manifest, review)
    with folder:
        try:
            project = Project.open(root, verify=False)
        except HubmapInputError as error:
            assert error.path in (str(root / "project.json"), str(root / "review.json")), error
            assert str(error).startswith(f"{error.path}: ") and "\n" not in str(error)
            return
        for entry in project.slides:
            assert all(0 < side for side in project.working_shape(entry.id))
            assert math.isfinite(entry.scale.mpp) and entry.scale.mpp > 0
            project.review.counts(entry.id)
        before = project.as_dict()
        (root / "project.json").write_text(json.dumps(before))  # what save writes, without its fsync (the deadline)
        again = Project.open(root, verify=False).as_dict()
        assert json.dumps(again, sort_keys=True) == json.dumps(before, sort_keys=True)  # NaN in "models" equal too


def check_card(content: bytes) -> None:
    """read_card on a folder holding this card.json: a card that round-trips, or one error naming card.json."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "card.json"
        path.write_bytes(content)
        try:
            card = read_card(folder)
        except HubmapInputError as error:
            _one_error_naming(error, path)
            return
        assert ModelCard.from_json(card.to_json(), source=path) == card


# ------------------------------------------------------------------------------------------- properties


@given(any_bytes)
def test_any_bytes_as_an_annotation_file(content):
    check_annotation_file(content)


@given(mutated(ANNOTATION_SEEDS))
def test_mutated_annotation_files(content):
    check_annotation_file(content)


@given(deeply_nested())
def test_deeply_nested_annotation_files_are_one_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "deep.json"
        path.write_bytes(content)
        with pytest.raises(HubmapInputError, match="nested more than 64 levels deep") as error:
            read_annotation_file(path)
        _one_error_naming(error.value, path)


@given(st.lists(st.tuples(st.floats(allow_nan=False, width=64), st.floats(allow_nan=False, width=64)),
                min_size=3, max_size=8), st.sampled_from(["geojson", "labelme"]))
def test_huge_coordinates(points, kind):
    """Coordinates anywhere in float's range: read within ±2^31 (and round-trip), or refused by name."""
    points = [list(p) for p in points]
    if kind == "geojson":
        doc = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [points + [points[0]]]}}]
    else:
        doc = {"shapes": [{"label": "G", "points": points}]}
    check_annotation_file(json.dumps(doc).encode())


@given(any_bytes)
def test_any_bytes_as_a_project_manifest(content):
    check_manifest(content)


@given(mutated([MANIFEST_SEED]))
def test_mutated_project_manifests(content):
    check_manifest(content)


@given(mutated([REVIEW_SEED]) | any_bytes)
def test_mutated_review_files(content):
    check_manifest(MANIFEST_SEED, content)


@given(mutated([b'{"kind": "napari-hubmap-edits", "format_version": 1, "sequence": 3}']) | any_bytes)
def test_edits_journal_reads_as_an_object_or_none(content):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "journal.json").write_bytes(content)
        journal = read_journal(folder)
    assert journal is None or (isinstance(journal, dict) and type(journal.get("sequence", 0)) is int)


@given(any_bytes)
def test_any_bytes_as_a_model_card(content):
    check_card(content)


@given(mutated([CARD_SEED]))
def test_mutated_model_cards(content):
    check_card(content)


@given(st.integers(0, 200), st.sampled_from("[{"))
def test_nesting_depth_counts_brackets_outside_strings(depth, opener):
    closer = {"[": "]", "{": "}"}[opener]
    inner = '"[[[{{{ \\" ]]"'
    text = ('{"k":' if opener == "{" else "[") * depth + inner + closer * depth
    assert nesting_depth(text) == depth
    if depth > MAX_DEPTH:
        with pytest.raises(HubmapInputError, match="nested more than"):
            parse_json(text, "x.json", "test file")
    else:
        assert parse_json(text, "x.json", "test file") is not None


# ------------------------------------------------------------------------------- regressions: annotations


def _read_error(tmp_path: Path, content: bytes, name: str = "in.json") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(HubmapInputError) as error:
        read_annotation_file(path)
    _one_error_naming(error.value, path)
    return error.value.problem


def test_annotation_file_nested_thousands_deep_is_one_error(tmp_path):
    """Was a RecursionError out of json.loads: a traceback."""
    assert "nested more than 64 levels deep" in _read_error(tmp_path, b"[" * DEEP + b"]" * DEEP)
    assert "nested more than 64 levels deep" in _read_error(tmp_path, b'{"shapes":' + b"[" * DEEP + b"]" * DEEP + b"}")


def test_annotation_file_nested_below_the_recursion_limit_is_refused(tmp_path):
    """600 levels parse, but a recursive reader or the writer could run out of stack further on."""
    assert "nested more than" in _read_error(tmp_path, b'[{"type":"Feature","properties":{"x":' + b"[" * 600
                                             + b"]" * 600 + b'},"geometry":{"type":"Polygon","coordinates":[]}}]')


def test_integer_of_5000_digits_is_one_error(tmp_path):
    """Was a plain ValueError (Python's 4300-digit limit) out of json.loads."""
    content = b'[{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1' + b"0" * 5000 + b',0],[1,1]]]}}]'
    problem = _read_error(tmp_path, content)
    assert "not readable JSON" in problem and "4300" in problem and "set_int_max_str_digits" not in problem


def test_labelme_point_beyond_float_range_is_one_error(tmp_path):
    """10**400 as an integer literal was an OverflowError out of np.asarray(points, dtype=float)."""
    content = json.dumps({"shapes": [{"label": "G", "points": [[0, 0], [BIG_INT, 0], [1, 1]]}]}).encode()
    assert "beyond ±2^31 pixels" in _read_error(tmp_path, content)


def test_labelme_circle_with_a_radius_beyond_float_range_is_refused(tmp_path):
    """A 1e308 edge point made an infinite radius, and a circle of NaN vertices was returned as an annotation."""
    content = json.dumps({"shapes": [{"label": "G", "shape_type": "circle", "points": [[0, 0], [1e308, 1e308]]}]})
    assert "beyond ±2^31" in _read_error(tmp_path, content.encode())


@pytest.mark.parametrize("value", [1e308, 1e300, 2.0**31 + 1, -(2.0**40)])
def test_geojson_coordinates_beyond_2_31_are_refused(tmp_path, value):
    """1e300 was read (an infinite area) and written back as -9223372036854775808 (int64 wrap-around)."""
    content = json.dumps([{"type": "Feature", "geometry": {
        "type": "Polygon", "coordinates": [[[0, 0], [value, 0], [value, value], [0, 0]]]}}]).encode()
    assert "beyond ±2^31 pixels" in _read_error(tmp_path, content)


def test_geojson_integer_coordinate_beyond_float_range_is_one_error(tmp_path):
    content = json.dumps([{"type": "Feature", "geometry": {
        "type": "Polygon", "coordinates": [[[0, 0], [BIG_INT, 0], [1, 1], [0, 0]]]}}]).encode()
    assert "beyond ±2^31 pixels" in _read_error(tmp_path, content)


def test_geojson_true_false_coordinates_are_refused(tmp_path):
    """[true, false] was read as the point [1, 0]."""
    content = json.dumps([{"type": "Feature", "geometry": {
        "type": "Polygon", "coordinates": [[[True, False], [10, 0], [10, 10], [1, 0]]]}}]).encode()
    assert "not a list of numeric [x, y] points" in _read_error(tmp_path, content)


def test_geojson_writer_keeps_integral_coordinates_beyond_int64(tmp_path):
    """Integral floats were written through int64: 1e19 came back as -9223372036854775808."""
    square = Polygon(_square(1e19, 1e19, 1e18))
    write_geojson(tmp_path / "out.geojson", annotations_to_feature_collection([Annotation(square, "G")]))
    ring = json.loads((tmp_path / "out.geojson").read_text())["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == [1e19, 1e19] and min(min(p) for p in ring) > 0


@pytest.mark.filterwarnings("ignore:.*have no classification")
@pytest.mark.parametrize("ring", [[[0, 0], [0, 7.699267574412883e-62], [1, 0]],  # found by the 2000-example campaign
                                  [[0, 0], [1000, 0.00002], [1000, 0.00004]]])
def test_polygons_thinner_than_a_ten_thousandth_survive_a_write_and_read(tmp_path, ring):
    """The writer rounded coordinates to 4 decimals: such a polygon collapsed and read back as nothing."""
    source = tmp_path / "in.json"
    source.write_text(json.dumps([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}]))
    (read,) = read_annotation_file(source).annotations
    write_geojson(tmp_path / "out.geojson", annotations_to_feature_collection([read]))
    (back,) = read_annotation_file(tmp_path / "out.geojson").annotations
    assert back.geometry.equals_exact(read.geometry, 0)


def test_a_key_with_a_newline_stays_on_the_error_line(tmp_path):
    """Found by the 2000-example campaign (seed 777): {"\\n": null} listed its keys raw, a two-line error."""
    problem = _read_error(tmp_path, json.dumps({"\n": None, "a" * 100: 1}).encode())
    assert "got a JSON object with keys: " in problem and "'\\n'" in problem and "a" * 41 not in problem


def test_bom_and_utf16_annotation_files_are_read(tmp_path):
    for name, content in [("bom.json", b"\xef\xbb\xbf" + WRITTEN_GEOJSON),
                          ("utf16.json", WRITTEN_GEOJSON.decode().encode("utf-16"))]:
        (tmp_path / name).write_bytes(content)
        assert [a.class_name for a in read_annotation_file(tmp_path / name).annotations] == ["Glomerulus", "FC"]


def test_latin1_annotation_file_is_one_error(tmp_path):
    assert "not UTF-8 text" in _read_error(tmp_path, '[{"properties": {"n": "\xe9"}}]'.encode("latin-1"))


def test_a_huge_recorded_labelme_size_allocates_nothing_before_the_size_check(tmp_path):
    """imageHeight/imageWidth of 10**9 must be compared with the image before any mask is made."""
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"shapes": [{"label": "G", "points": [[1, 1], [9, 1], [5, 8]]}],
                                "imageHeight": 10**9, "imageWidth": 10**9}))
    tracemalloc.start()
    try:
        assert read_annotation_file(path).image_shape == (10**9, 10**9)
        with pytest.raises(HubmapInputError, match="made on a 1000000000x1000000000 image"):
            convert_annotations(path, "mask", tmp_path / "out.png", shape=(50, 60))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_CEILING and not (tmp_path / "out.png").exists()


# ---------------------------------------------------------------------------------- regressions: manifest


def _manifest_error(tmp_path: Path, change) -> str:
    data = json.loads(MANIFEST_SEED)
    change(data)
    (tmp_path / "project.json").write_text(json.dumps(data))
    with pytest.raises(HubmapInputError) as error:
        Project.open(tmp_path, verify=False)
    _one_error_naming(error.value, tmp_path / "project.json")
    return error.value.problem


def _slide(data) -> dict:
    return data["slides"][0]


@pytest.mark.parametrize("change, needle", [
    # OverflowError from float(10**400):
    (lambda d: d["tiles"].update(downscale=BIG_INT), "tiles.downscale must be a finite number >= 1"),
    (lambda d: _slide(d).update(mpp=BIG_INT), "slides[0].mpp must be a finite number > 0"),
    (lambda d: _slide(d)["predictions"][0].update(threshold=BIG_INT), "threshold must be a finite number in [0, 1]"),
    (lambda d: _slide(d)["ground_truth"].update(median_area=-BIG_INT), "median_area must be a finite number >= 0"),
    # accepted before, and broke what reads them later:
    (lambda d: d["tiles"].update(downscale=math.inf), "tiles.downscale must be a finite number"),
    (lambda d: _slide(d).update(mpp=math.nan), "slides[0].mpp must be a finite number > 0"),
    (lambda d: _slide(d).update(mpp=-0.5, mpp_source="option"), "slides[0].mpp must be a finite number > 0"),
    (lambda d: _slide(d).update(mpp_file=math.inf), "slides[0].mpp_file must be a finite number"),
    (lambda d: _slide(d)["hash"].update(size=-1), "slides[0].hash.size must be a whole number >= 0"),
    (lambda d: _slide(d)["ground_truth"].update(objects=-3), "ground_truth.objects must be a whole number >= 0"),
    (lambda d: _slide(d).update(shape=[2**31, 10]), "slides[0].shape must be [height, width]"),
])
def test_manifest_numbers_out_of_range_are_one_error(tmp_path, change, needle):
    assert needle in _manifest_error(tmp_path, change)


def test_manifest_error_messages_stay_one_short_line(tmp_path):
    problem = _manifest_error(tmp_path, lambda d: d.update(format_version=BIG_INT))
    assert "newer napari-hubmap" in problem and len(problem) < 300


def test_manifest_nested_thousands_deep_is_one_error(tmp_path):
    """Was a RecursionError out of json.loads (traceback, exit 1 from `project info`)."""
    (tmp_path / "project.json").write_bytes(_dumps({**json.loads(MANIFEST_SEED), "models": DEEP_MARK}))
    with pytest.raises(HubmapInputError, match="project manifest is nested more than 64 levels deep"):
        Project.open(tmp_path, verify=False)


def test_manifest_with_a_bom_is_read(tmp_path):
    (tmp_path / "project.json").write_bytes(b"\xef\xbb\xbf" + MANIFEST_SEED)
    assert Project.open(tmp_path, verify=False).slide("kidney").shape == (3000, 4200)


def test_review_history_that_is_not_a_list_is_one_error(tmp_path):
    """A number there made set_state fail with TypeError (list(3)) on the next review of that tile."""
    review = json.loads(REVIEW_SEED)
    review["slides"]["kidney"]["0,1"]["history"] = 3
    (tmp_path / "project.json").write_bytes(MANIFEST_SEED)
    (tmp_path / "review.json").write_text(json.dumps(review))
    with pytest.raises(HubmapInputError, match=r"review.json: slides.kidney.0,1: history must be a list"):
        Project.open(tmp_path, verify=False)


def test_a_review_key_with_a_newline_stays_on_the_error_line(tmp_path):
    review = json.loads(REVIEW_SEED)
    review["slides"]["kidney"]["0,\n999"] = {"state": "dropped"}
    review["slides"]["kid\nney"] = {}
    (tmp_path / "project.json").write_bytes(MANIFEST_SEED)
    for without in ("kid\nney", "0,\n999"):
        shown = {**review, "slides": {k: v for k, v in review["slides"].items() if k != without}}
        (tmp_path / "review.json").write_text(json.dumps(shown))
        with pytest.raises(HubmapInputError) as error:
            Project.open(tmp_path, verify=False)
        assert "\n" not in str(error.value) and "\\n" in str(error.value)


def test_review_file_nested_thousands_deep_is_one_error(tmp_path):
    (tmp_path / "project.json").write_bytes(MANIFEST_SEED)
    (tmp_path / "review.json").write_bytes(b"{" + b'"a":{' * DEEP + b"}" * DEEP + b"}")
    with pytest.raises(HubmapInputError, match="review.json: the review file is nested more than 64"):
        Project.open(tmp_path, verify=False)


@pytest.mark.parametrize("content", [b"[1, 2]", b'{"kind": "napari-hubmap-edits", "format_version": "1"}',
                                     b'{"kind": "napari-hubmap-edits", "sequence": null}', b"[" * DEEP + b"]" * DEEP])
def test_an_edits_journal_that_is_not_one_reads_as_unreadable(tmp_path, content):
    """A list was returned (EditStore.open then failed with AttributeError), a string version made int() raise,
    deep nesting a RecursionError."""
    (tmp_path / "journal.json").write_bytes(content)
    assert read_journal(tmp_path) is None


# -------------------------------------------------------------------------------------- regressions: card


def _card_error(tmp_path: Path, **changes) -> str:
    data = json.loads(CARD_SEED)
    data.update(changes)
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(HubmapInputError) as error:
        read_card(tmp_path)
    _one_error_naming(error.value, tmp_path / "card.json")
    return error.value.problem


@pytest.mark.parametrize("field", ["threshold", "downscale", "min_object_um2", "target_mpp", "outline_threshold"])
def test_card_number_beyond_float_range_is_one_error(tmp_path, field):
    """10**400 was an OverflowError out of math.isfinite."""
    assert f"card field '{field}': expected a number" in _card_error(tmp_path, **{field: BIG_INT})


def test_card_normalisation_of_10_9_channels_is_refused_before_allocating(tmp_path):
    """in_channels 10**9 repeated a one-value mean to a list of 10**9 floats (8 GB) before any check failed."""
    tracemalloc.start()
    try:
        problem = _card_error(tmp_path, in_channels=10**9,
                              normalization={"mean": [0.5], "std": [0.25], "max_pixel_value": 255})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "card field 'in_channels': must be >= 1 and <= 256" in problem and peak < MEMORY_CEILING


def test_card_tile_of_a_billion_pixels_is_refused(tmp_path):
    assert "card field 'tile': must be >= 1 and <= 16384" in _card_error(tmp_path, tile=10**9, overlap=0)


def test_a_normalisation_key_with_a_newline_stays_on_the_error_line(tmp_path):
    """Found by the 2000-example campaign (seed 4242): the normalisation's keys were listed raw, a two-line error."""
    problem = _card_error(tmp_path, normalization={"mean\n": [0.5], "std": [0.25], "max_pixel_value": 255})
    assert "needs exactly the keys mean, std, max_pixel_value, got 'mean\\n', max_pixel_value, std" in problem


def test_card_nested_thousands_deep_is_one_error(tmp_path):
    (tmp_path / "card.json").write_bytes(_dumps({**json.loads(CARD_SEED), "notes": DEEP_MARK}))
    with pytest.raises(HubmapInputError, match="the model card is nested more than 64 levels deep"):
        read_card(tmp_path)


def test_card_with_a_bom_is_read(tmp_path):
    (tmp_path / "card.json").write_bytes(b"\xef\xbb\xbf" + CARD_SEED)
    assert read_card(tmp_path).name == "tiny"


# ------------------------------------------------------------------------------------------- command line


def _one_error_line(stderr: str, path: Path) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"napari-hubmap: error: {path}: "), stderr
    assert "Traceback" not in stderr


def test_cli_convert_deeply_nested_json_is_exit_2_and_one_line(tmp_path):
    """The known bug: `convert-annotations` on JSON nested thousands deep printed a traceback and exited 1."""
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 5000 + b"]" * 5000)
    result = subprocess.run([*CLI, "convert-annotations", str(path), "--to", "mask", "--shape", "40x40",
                             "--out", str(tmp_path / "out.png")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    _one_error_line(result.stderr, path)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("content", [
    json.dumps({"shapes": [{"label": "G", "points": [[0, 0], [BIG_INT, 0], [1, 1]]}]}).encode(),
    b"\xff\xfe\x00garbage",
    b'[{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1' + b"0" * 5000 + b',0],[1,1]]]}}]',
])
def test_cli_convert_bad_annotation_files(tmp_path, capsys, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert main(["convert-annotations", str(path), "--to", "geojson", "--out", str(tmp_path / "o.geojson")]) == 2
    _one_error_line(capsys.readouterr().err, path)


@pytest.mark.parametrize("content", [b"{" * DEEP + b"}" * DEEP, MANIFEST_SEED.replace(b'"size": 1234', b'"size": -1'),
                                     MANIFEST_SEED.replace(b'"mpp": 0.5', b'"mpp": 1' + b"0" * 400)])
def test_cli_project_info_on_a_bad_manifest(tmp_path, capsys, content):
    (tmp_path / "project.json").write_bytes(content)
    assert main(["project", "info", str(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, tmp_path / "project.json")


def test_cli_predict_with_a_bad_card(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "card.json").write_bytes(CARD_SEED.replace(b'"threshold": 0.5', b'"threshold": 1' + b"0" * 400))
    (folder / "model.safetensors").write_bytes(b"")
    slide = tmp_path / "slide.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(slide)
    assert main(["predict", str(slide), "--model", str(folder), "--out", str(tmp_path / "out")]) == 2
    _one_error_line(capsys.readouterr().err, folder / "card.json")
