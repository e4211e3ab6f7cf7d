"""Mask images: binary / colour / label PNG and TIFF reading, writing with the smallest dtype."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_hubmap.annotations import read_mask, write_mask
from napari_hubmap.errors import HubmapInputError


def test_pas_tile_colour_masks(shared_data):
    paths = sorted((shared_data / "pas-tiles" / "masks").glob("*.png"))
    assert len(paths) == 12
    for path in paths:
        mask = read_mask(path)
        raw = np.asarray(Image.open(path))
        assert mask.dtype == bool and mask.shape == raw.shape[:2] == (1024, 1024)
        assert 0 < mask.mean() < 0.5
        assert np.array_equal(mask, raw[..., 0] == 255)  # red = glomerulus


def test_hubmap_16x_binary_masks(shared_data):
    paths = sorted((shared_data / "hubmap-16x" / "masks").glob("*.png"))
    assert len(paths) == 12
    empty = 0
    for path in paths:
        mask = read_mask(path)
        raw = np.asarray(Image.open(path))
        assert mask.dtype == bool and mask.shape == (256, 256)
        assert np.array_equal(mask, raw == 1)
        if raw.max() == 0:
            empty += 1
            assert not mask.any()
        else:
            assert mask.mean() > 0
    assert empty == 3


def label_image(top: int, shape=(40, 60)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int64)
    labels[5:15, 5:20] = 1
    labels[20:30, 30:50] = top
    labels[0, -1] = top // 2
    return labels


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_bool_round_trip(tmp_path, suffix):
    mask = np.random.default_rng(0).random((33, 47)) < 0.3
    path = tmp_path / f"mask{suffix}"
    write_mask(path, mask)
    stored = np.asarray(Image.open(path)) if suffix == ".png" else tifffile.imread(path)
    assert stored.dtype == np.uint8 and set(np.unique(stored)) == {0, 255}
    back = read_mask(path)
    assert back.dtype == bool and np.array_equal(back, mask)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("top, dtype", [(200, np.uint8), (5000, np.uint16)])
def test_label_round_trip_uses_smallest_dtype(tmp_path, suffix, top, dtype):
    labels = label_image(top)
    path = tmp_path / f"labels{suffix}"
    write_mask(path, labels)
    stored = np.asarray(Image.open(path)) if suffix == ".png" else tifffile.imread(path)
    assert stored.dtype == dtype
    back = read_mask(path)
    assert back.dtype.kind == "i" and np.array_equal(back, labels)


def test_uint32_labels_need_tiff(tmp_path):
    labels = label_image(70_000)
    with pytest.raises(HubmapInputError, match=r"16-bit PNG; write a \.tif"):
        write_mask(tmp_path / "big.png", labels)
    assert not (tmp_path / "big.png").exists()
    write_mask(tmp_path / "big.tif", labels)
    assert tifffile.imread(tmp_path / "big.tif").dtype == np.uint32
    assert np.array_equal(read_mask(tmp_path / "big.tif"), labels)


def test_mode_1_rgba_and_palette_pngs(tmp_path):
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    Image.fromarray(mask).save(tmp_path / "one.png")
    assert np.array_equal(read_mask(tmp_path / "one.png"), mask)
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha is not foreground
    rgba[mask, 1] = 200
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_mask(tmp_path / "rgba.png"), mask)
    palette = Image.fromarray(mask.astype(np.uint8) * 3).convert("P")
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_mask(tmp_path / "palette.png") > 0, mask)


def test_zero_255_grey_is_binary_other_values_are_labels(tmp_path):
    grey = np.zeros((8, 8), dtype=np.uint8)
    grey[2:4, 2:4] = 255
    Image.fromarray(grey).save(tmp_path / "binary.png")
    assert read_mask(tmp_path / "binary.png").dtype == bool
    grey[6, 6] = 3
    Image.fromarray(grey).save(tmp_path / "labels.png")
    labels = read_mask(tmp_path / "labels.png")
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 3, 255}


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: tifffile.imwrite(p, np.zeros((3, 10, 10), np.uint8), photometric="minisblack"),
            "expected one 2-D mask",
        ),
        (lambda p: tifffile.imwrite(p, np.full((10, 10), 0.5, np.float32)), "non-integer values"),
        (lambda p: tifffile.imwrite(p, np.full((10, 10), -1, np.int16)), "negative values"),
        (lambda p: p.write_bytes(b"this is not an image"), "not a readable"),
    ],
)
def test_bad_tiffs(tmp_path, make, message):
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(HubmapInputError, match=message) as info:
        read_mask(path)
    assert str(info.value).startswith(str(path))


def test_planar_and_interleaved_rgb_tiffs(tmp_path):
    mask = np.zeros((10, 12), dtype=bool)
    mask[3:6, 2:9] = True
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[mask, 0] = 255
    tifffile.imwrite(tmp_path / "contig.tif", rgb, photometric="rgb")
    planar = np.moveaxis(rgb, -1, 0)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_mask(tmp_path / "contig.tif"), mask)
    assert np.array_equal(read_mask(tmp_path / "planar.tif"), mask)


def test_bad_pngs_and_suffixes(tmp_path):
    (tmp_path / "bad.png").write_text("not a png")
    with pytest.raises(HubmapInputError, match="not a readable image"):
        read_mask(tmp_path / "bad.png")
    with pytest.raises(HubmapInputError, match="lossy"):
        read_mask(tmp_path / "mask.jpg")
    with pytest.raises(HubmapInputError, match="file not found"):
        read_mask(tmp_path / "absent.png")
    with pytest.raises(HubmapInputError, match="use .png or .tif"):
        write_mask(tmp_path / "mask.bmp", np.zeros((4, 4), bool))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 4, 4), bool), "must be 2-D"),
        (np.full((4, 4), -2, np.int32), "must not be negative"),
        (np.zeros((4, 4), np.float32), "bool or integer"),
    ],
)
def test_write_errors_leave_no_file(tmp_path, array, message):
    with pytest.raises(HubmapInputError, match=message):
        write_mask(tmp_path / "out.png", array)
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_existing_file(tmp_path):
    path = tmp_path / "mask.png"
    write_mask(path, np.ones((4, 4), bool))
    write_mask(path, np.zeros((4, 4), bool))
    assert not read_mask(path).any()
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]
