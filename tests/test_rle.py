"""Kaggle RLE: column-major 1-based encoding, decoding errors, and the id,encoding CSV files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hubmap.annotations import read_rle_csv, rle_decode, rle_encode, write_rle_csv
from napari_hubmap.errors import HubmapInputError


def reference_encode(mask: np.ndarray) -> str:
    """Textbook Kaggle encoder (padded Fortran-order ravel) to check the blocked one against."""
    flat = np.concatenate([[0], (np.asarray(mask) != 0).ravel(order="F"), [0]]).astype(np.int8)
    runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs[1::2] -= runs[0::2]
    return " ".join(map(str, runs))


@pytest.mark.parametrize("shape", [(1, 1), (4, 6)])
def test_empty_mask_is_empty_string(shape):
    mask = np.zeros(shape, dtype=bool)
    assert rle_encode(mask) == ""
    assert not rle_decode("", shape).any()
    assert rle_decode("", shape).shape == shape


def test_first_last_and_full_masks():
    height, width = 4, 6
    first = np.zeros((height, width), dtype=bool)
    first[0, 0] = True
    last = np.zeros((height, width), dtype=bool)
    last[-1, -1] = True
    full = np.ones((height, width), dtype=bool)
    assert rle_encode(first) == "1 1"
    assert rle_encode(last) == f"{height * width} 1"
    assert rle_encode(full) == f"1 {height * width}"
    for mask in (first, last, full):
        assert np.array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (7, 5), (5, 7), (64, 33), (127, 256)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_random_round_trip(shape, density):
    rng = np.random.default_rng(sum(shape) + int(density * 100))
    mask = rng.random(shape) < density
    encoding = rle_encode(mask)
    assert encoding == reference_encode(mask)
    decoded = rle_decode(encoding, shape)
    assert decoded.dtype == bool and decoded.shape == shape
    assert decoded.flags.c_contiguous
    assert np.array_equal(decoded, mask)


def test_horizontal_line_is_runs_of_length_one():
    height, width = 5, 6
    mask = np.zeros((height, width), dtype=bool)
    mask[2, 1:5] = True
    pairs = np.array(rle_encode(mask).split(), dtype=int).reshape(-1, 2)
    assert pairs[:, 1].tolist() == [1, 1, 1, 1]
    assert pairs[:, 0].tolist() == [col * height + 2 + 1 for col in range(1, 5)]


def test_vertical_line_is_one_run():
    height, width = 5, 6
    mask = np.zeros((height, width), dtype=bool)
    mask[1:4, 3] = True
    assert rle_encode(mask) == f"{3 * height + 1 + 1} 3"


def test_run_continues_across_column_boundary():
    mask = np.zeros((3, 3), dtype=bool)
    mask[2, 0] = mask[0, 1] = True  # pixels 3 and 4 in column-major order
    assert rle_encode(mask) == "3 2"


def test_decode_is_not_transposed():
    decoded = rle_decode("2 1", (3, 4))  # second pixel: row 1 of column 0
    assert decoded[1, 0] and decoded.sum() == 1


def test_nonzero_labels_are_foreground():
    labels = np.array([[0, 2, 255], [7, 0, 1]], dtype=np.uint8)
    assert rle_encode(labels) == rle_encode(labels != 0)


def test_large_mask_blocks_agree(monkeypatch):
    from napari_hubmap.annotations import rle

    monkeypatch.setattr(rle, "_CHUNK_PIXELS", 64)  # force many row blocks
    monkeypatch.setattr(rle, "_MAX_LOOPED_RUNS", 3)  # force the np.repeat painter
    monkeypatch.setattr(rle, "_TILE", 16)
    rng = np.random.default_rng(3)
    mask = rng.random((50, 70)) < 0.3
    encoding = rle_encode(mask)
    assert encoding == reference_encode(mask)
    assert np.array_equal(rle_decode(encoding, mask.shape), mask)


def test_unsorted_and_overlapping_runs_are_refused():
    """Issue 16: runs out of order or overlapping were merged without a word; they mean a corrupt encoding."""
    with pytest.raises(HubmapInputError, match="run 2 starts at 1, before run 1"):
        rle_decode("5 3 1 2 6 4", (4, 3))
    with pytest.raises(HubmapInputError, match=r"run 2 \(start 6\) overlaps run 1"):
        rle_decode("5 3 6 4", (4, 3))
    adjacent = rle_decode("1 2 3 2", (4, 3))  # touching runs are not overlapping
    assert np.array_equal(adjacent, np.array([[1, 0, 0]] * 4, dtype=bool))


@pytest.mark.parametrize("blank", [None, float("nan"), "nan", "   "])
def test_blank_encodings_decode_empty(blank):
    assert not rle_decode(blank, (3, 3)).any()


@pytest.mark.parametrize(
    "encoding, message",
    [
        ("1 2 3 4 5", "RLE has an odd number of tokens (5)"),
        ("1 2 99 10", "RLE run 2 (start 99, length 10) goes past the end of a 10x10 image (100 pixels)"),
        ("1 x", "RLE token 2 ('x') is not a whole number"),
        ("1.5 2", "RLE token 1 ('1.5') is not a whole number"),
        ("0 3", "RLE run 1 has start 0"),
        ("4 0", "RLE run 1 has length 0"),
        ("4 3 9 -2", "RLE run 2 has length -2"),
    ],
)
def test_decode_errors_name_source_and_problem(encoding, message):
    with pytest.raises(HubmapInputError) as info:
        rle_decode(encoding, (10, 10), source="train.csv")
    assert str(info.value).startswith("train.csv: ")
    assert message in str(info.value)


def test_decode_rejects_bad_shape():
    with pytest.raises(HubmapInputError, match="must not be negative"):
        rle_decode("1 1", (-1, 5), source="x.csv")
    with pytest.raises(HubmapInputError, match="goes past the end of a 0x5 image"):  # issue 16: 0-size masks
        rle_decode("1 1", (0, 5), source="x.csv")  # round-trip as "", so a zero shape is no longer refused
    assert rle_decode("", (0, 5)).shape == (0, 5)


def test_csv_round_trip_with_empty_encodings(tmp_path):
    rng = np.random.default_rng(0)
    masks = {"slide_a": rng.random((20, 30)) < 0.2, "slide_b": np.zeros((20, 30), dtype=bool)}
    encodings = {key: rle_encode(mask) for key, mask in masks.items()}
    path = tmp_path / "train.csv"
    write_rle_csv(path, encodings)
    assert path.read_text().splitlines()[0] == "id,encoding"
    read = read_rle_csv(path)
    assert read == encodings and read["slide_b"] == ""
    for key, mask in masks.items():
        assert np.array_equal(rle_decode(read[key], mask.shape), mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]  # no temp files left


@pytest.mark.parametrize("column", ["predicted", "rle", "encoding"])
def test_csv_encoding_column_names(tmp_path, column):
    path = tmp_path / "submission.csv"
    path.write_text(f"id,{column}\nb2dc8411c,1 3 10 2\nempty,\n")
    assert read_rle_csv(path) == {"b2dc8411c": "1 3 10 2", "empty": ""}


def test_csv_written_with_predicted_column(tmp_path):
    path = tmp_path / "submission.csv"
    write_rle_csv(path, {"a": "1 1"}, column="predicted")
    assert path.read_text() == "id,predicted\na,1 1\n"
    assert read_rle_csv(path) == {"a": "1 1"}


def test_csv_holds_whole_slide_sized_encodings(tmp_path):
    encoding = " ".join(f"{i * 10 + 1} 3" for i in range(100_000))  # ~1 MB, beyond csv's default limit
    path = tmp_path / "big.csv"
    write_rle_csv(path, {"big": encoding})
    assert read_rle_csv(path)["big"] == encoding


@pytest.mark.parametrize(
    "content, message",
    [
        ("name,encoding\na,1 2\n", "no 'id' column"),
        ("id,mask\na,1 2\n", "no encoding column"),
        ("id,encoding\na,1 2\na,3 4\n", "duplicate id 'a'"),
        ("", "empty file"),
        ("id,encoding\n,1 2\n", "has no id"),
    ],
)
def test_csv_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(HubmapInputError, match=message) as info:
        read_rle_csv(path)
    assert str(info.value).startswith(str(path))


def test_binary_file_is_not_a_csv(tmp_path):
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x81")
    with pytest.raises(HubmapInputError, match="not a text CSV"):
        read_rle_csv(path)


def test_missing_csv(tmp_path):
    with pytest.raises(HubmapInputError, match="file not found"):
        read_rle_csv(tmp_path / "nope.csv")
