"""Maps and labels from other tools: any NGFF 0.4 / 0.5 single-channel multiscale image post-processes,
evaluates and exports like a map predict wrote; the stores this project writes open with ome-zarr-py
and napari-ome-zarr."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import zarr
from synthetic_maps import write_prob_store

from napari_hubmap.annotations import read_rle_csv, rle_decode
from napari_hubmap.cli import main
from napari_hubmap.postprocess import PostprocessConfig, postprocess_slide
from napari_hubmap.stores.labels import open_labels
from napari_hubmap.stores.probability import open_probability

SIZE = (160, 224)
CENTRES = [(40, 40), (40, 74), (120, 40), (120, 72), (40, 170), (120, 180)]  # two touching pairs, two alone
RADIUS = 18


def disks() -> np.ndarray:
    """uint8 probabilities: six cones (255 at the centre, 128 at the rim); the first two and the next two
    disks overlap into two touching pairs."""
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    prob = np.zeros(SIZE, np.float64)
    for cy, cx in CENTRES:
        distance = np.hypot(yy - cy, xx - cx)
        prob = np.maximum(prob, np.where(distance <= RADIUS, 255 - 127 * distance / RADIUS, 0))
    return np.rint(prob).astype(np.uint8)


def write_ngff(path, image: np.ndarray, *, version="0.4", axes=("c", "y", "x"), scale=1.0, unit=None, labels=False,
               omero_window=None, levels=2) -> None:
    """An OME-Zarr image as another tool writes it: levels 2x apart, NGFF ``version`` (0.4: zarr v2 attrs;
    0.5: zarr v3 and attrs under ``ome``), a leading channel axis by default."""
    group = zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)
    datasets, level = [], image
    for k in range(levels):
        data = level.reshape((1,) * (len(axes) - 2) + level.shape)
        group.create_array(str(k), data=data, chunks=(1,) * (len(axes) - 2) + (64, 64))
        step = scale * 2**k
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * (len(axes) - 2) + [step, step]}]})
        level = level[::2, ::2]
    axis_list = [{"name": a, "type": "channel" if a == "c" else "space", **({"unit": unit} if unit and a in "yx" else {})}
                 for a in axes]
    multiscale = {"axes": axis_list, "datasets": datasets, "name": "foreign"}
    attrs = {"multiscales": [{**multiscale, "version": "0.4"}] if version == "0.4" else [multiscale]}
    if labels:
        attrs["image-label"] = {"version": version}
    if omero_window:
        attrs["omero"] = {"channels": [{"window": dict(zip(("min", "max", "start", "end"), omero_window * 2))}]}
    group.attrs.update(attrs if version == "0.4" else {"ome": {"version": "0.5", **attrs}})


def run(capsys, *args) -> tuple[int, dict | None, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if code == 0 else None), err


def test_a_foreign_ngff_map_postprocesses_with_watershed_and_exports_its_rle(tmp_path, capsys):
    prob = disks()
    write_ngff(tmp_path / "other.zarr", prob)
    code, line, err = run(capsys, "postprocess", tmp_path / "other.zarr", "--watershed", "--min-size", 0,
                          "--out", tmp_path / "other.labels.zarr")
    assert code == 0, err
    assert line["objects"] == 6 and line["downscale"] == 1.0 and line["shape"] == list(SIZE)
    labels = np.asarray(open_labels(tmp_path / "other.labels.zarr")[0][0])
    assert len(np.unique(labels[labels > 0])) == 6
    for a, b in ((0, 1), (2, 3)):  # each touching pair became two objects, one per disk
        assert labels[CENTRES[a]] != labels[CENTRES[b]] and labels[CENTRES[a]] and labels[CENTRES[b]]
    code, line, err = run(capsys, "export", tmp_path / "other.labels.zarr", "--format", "rle-csv", "--id", "other",
                          "--out", tmp_path / "other.csv")
    assert code == 0, err
    decoded = rle_decode(read_rle_csv(tmp_path / "other.csv")["other"], SIZE)
    np.testing.assert_array_equal(decoded, prob >= 128)  # the default threshold 0.5 of 0-255


def test_float_uint16_and_ngff_05_maps_give_the_same_objects(tmp_path):
    prob = disks()
    write_ngff(tmp_path / "u8.zarr", prob)
    write_ngff(tmp_path / "float.zarr", prob / 255.0)  # float 0-1: the type's range, no window
    write_ngff(tmp_path / "u16.zarr", prob.astype(np.uint16) * 257, omero_window=(0, 65535))
    write_ngff(tmp_path / "v05.zarr", prob, version="0.5")
    config = PostprocessConfig(watershed=True, min_size=0)
    found = {}
    for name in ("u8", "float", "u16", "v05"):
        result = postprocess_slide(tmp_path / f"{name}.zarr", tmp_path / f"{name}.labels.zarr", config)
        found[name] = np.asarray(open_labels(result.out)[0][0])
        assert result.objects == 6, name
    for name in ("float", "u16", "v05"):
        np.testing.assert_array_equal(found[name], found["u8"])


def test_a_guessed_value_range_is_said_in_a_warning(tmp_path):
    write_ngff(tmp_path / "u16.zarr", disks().astype(np.uint16) * 257)  # no omero window: 0-65535 guessed
    with pytest.warns(UserWarning, match="no value range recorded; uint16 values read as probabilities 0-65535"):
        levels, meta = open_probability(tmp_path / "u16.zarr")
    np.testing.assert_array_equal(levels[0][:, :], disks())
    assert meta["foreign"]["ngff"] == "0.4" and meta["progress"]["complete"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recorded window is not a guess
        write_ngff(tmp_path / "w.zarr", disks().astype(np.uint16) * 257, omero_window=(0, 65535))
        open_probability(tmp_path / "w.zarr")


def test_the_scale_follows_the_metadata_then_mpp_then_shape(tmp_path):
    write_ngff(tmp_path / "px.zarr", disks(), scale=4.0)  # no unit: 4 full-resolution pixels per map pixel
    assert open_probability(tmp_path / "px.zarr")[1]["downscale"] == 4.0
    write_ngff(tmp_path / "um.zarr", disks(), scale=2.0, unit="micrometer")  # 2 µm per map pixel
    meta = open_probability(tmp_path / "um.zarr")[1]
    assert meta["downscale"] == 1.0 and meta["mpp"] == 2.0 and meta["mpp_source"] == "file"
    meta = open_probability(tmp_path / "um.zarr", mpp=0.5)[1]  # a 0.5 µm/px slide: 4 slide pixels per map pixel
    assert meta["downscale"] == 4.0 and meta["mpp"] == 0.5 and meta["mpp_source"] == "option"
    meta = open_probability(tmp_path / "um.zarr", shape=(SIZE[0] * 3, SIZE[1] * 3), mpp=0.5)[1]
    assert meta["downscale"] == 3.0 and meta["slide_shape"] == [SIZE[0] * 3, SIZE[1] * 3]


def test_a_foreign_labels_image_evaluates_and_exports(tmp_path, capsys):
    from skimage.measure import label

    truth = label(disks() >= 128).astype(np.int32)
    write_ngff(tmp_path / "labels.zarr", truth, axes=("y", "x"), labels=True)
    write_ngff(tmp_path / "map.zarr", disks())
    code, line, err = run(capsys, "evaluate", tmp_path / "map.zarr", "--gt", tmp_path / "labels.zarr")
    assert code == 0, err
    assert line["dice"] == pytest.approx(1.0) and line["kind"] == "probability"
    code, line, err = run(capsys, "evaluate", tmp_path / "labels.zarr", "--gt", tmp_path / "labels.zarr")
    assert code == 0, err
    assert line["kind"] == "labels" and line["dice"] == pytest.approx(1.0)
    code, line, err = run(capsys, "export", tmp_path / "labels.zarr", "--format", "geojson", "--out", tmp_path / "l.geojson")
    assert code == 0, err
    assert len(json.loads((tmp_path / "l.geojson").read_text())["features"]) == truth.max()


@pytest.mark.parametrize("case, expected", [
    ("channels", "has 3 channels; a probability map or labels image has one"),
    ("labels", "is an NGFF labels image, not a probability map"),
    ("plain", "not a probability store"),
    ("int8", "a probability map must be uint8, uint16 or float, got int8"),
])
def test_maps_that_cannot_be_probabilities_are_one_error_line(tmp_path, capsys, case, expected):
    path = tmp_path / f"{case}.zarr"
    if case == "channels":
        group = zarr.open_group(path, mode="w", zarr_format=2)
        group.create_array("0", data=np.zeros((3, 32, 32), np.uint8))
        group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}],
                                       "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}]
    elif case == "labels":
        write_ngff(path, disks().astype(np.int32), labels=True)
    elif case == "plain":
        zarr.open_group(path, mode="w").create_array("0", data=np.zeros((8, 8), np.uint8))
    else:
        write_ngff(path, disks().astype(np.int8) // 2)
    code, _, err = run(capsys, "postprocess", path, "--out", tmp_path / "out.labels.zarr")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0] and path.name in lines[0], err
    assert not (tmp_path / "out.labels.zarr").exists()


def test_our_stores_open_with_ome_zarr_py_and_napari_ome_zarr(tmp_path):
    from napari_ome_zarr import napari_get_reader
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    prob = disks()
    store = write_prob_store(tmp_path / "slide.prob.zarr", prob)
    nodes = list(Reader(parse_url(str(store)))())
    assert nodes, "ome-zarr-py found no image"
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), prob)
    labels = postprocess_slide(store, tmp_path / "slide.labels.zarr", PostprocessConfig(min_size=0)).out
    ours = np.asarray(open_labels(labels)[0][0])
    nodes = list(Reader(parse_url(str(labels)))())
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), ours)
    for path, expected in ((store, prob), (labels, ours)):
        reader = napari_get_reader(str(path))
        assert reader is not None, path
        data = reader(str(path))[0][0]
        np.testing.assert_array_equal(np.asarray(data[0] if isinstance(data, list) else data), expected)
