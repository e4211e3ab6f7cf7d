"""Issue 16, binary formats: property-based fuzzing of the parsers that read bytes a user hands us.

Oracle for every call: a correct result, or one :class:`HubmapInputError` whose message names the file;
never another exception, a hang (the profile's per-call deadline) or memory beyond a bound (tracemalloc
here; an address-space limit in a child process for the 'huge claim' cases, which native code allocates).
Covered: Kaggle RLE (encode/decode, the CSV), masks (read_mask), slides (open_slide and a region read),
files whose suffix lies about their content, mutated TIFF headers, and safetensors headers (read_weights).
Every failure the fuzzing found is kept below as a named ``test_regression_*``.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from napari_hubmap.annotations import read_mask, read_rle_csv, rle_decode, rle_encode, write_rle_csv
from napari_hubmap.errors import HubmapInputError
from napari_hubmap.registry.store import read_weights
from napari_hubmap.slide import open_slide
from napari_hubmap.slide.sniff import kind_of_bytes

FUZZ = settings(database=None)  # the profile's examples and deadline; nothing written into the checkout
MEMORY_BOUND = 256 << 20
"""Most bytes one call may allocate (tracemalloc peak) on the small files fuzzed here."""
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::ResourceWarning")


# ---------------------------------------------------------------- the oracle


@contextmanager
def memory_bound(limit: int = MEMORY_BOUND):
    """Fail when the block allocates more than ``limit`` bytes (numpy and Python allocations)."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= limit, f"allocated {peak} bytes, more than the bound {limit}"


def result_or_input_error(call, path):
    """``call()``'s result, or None when it raised one HubmapInputError naming ``path`` on one line."""
    try:
        with memory_bound():
            return call()
    except HubmapInputError as error:
        assert str(path) in str(error), f"the error does not name the file: {error}"
        assert "\n" not in str(error), f"the error is not one line: {error!r}"
        return None


def read_slide_corner(path):
    """Open a slide, read its top-left corner and its smallest level, close it."""
    with open_slide(path) as slide:
        corner = slide.levels[0][:4, :4]
        smallest = np.asarray(slide.levels[-1])
        return slide.levels[0].shape, corner, smallest


# ---------------------------------------------------------------- RLE


def reference_decode(pairs: list[tuple[int, int]], shape) -> np.ndarray:
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    for start, length in pairs:
        flat[start - 1 : start - 1 + length] = True
    return flat.reshape(shape[1], shape[0]).T


def runs_are_valid(pairs, total: int) -> bool:
    previous_end = 0
    for start, length in pairs:
        if start < 1 or length < 1 or start - 1 + length > total or start - 1 < previous_end:
            return False
        previous_end = start - 1 + length
    return True


masks = hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=24))
run_values = st.integers(-3, 40) | st.sampled_from([2**31, 2**62, 2**63 - 1, -(2**63)])


@FUZZ
@given(mask=masks | st.sampled_from([np.ones((1, 1), bool), np.ones((7, 5), bool), np.zeros((0, 0), bool)]))
def test_rle_round_trip(mask):
    encoding = rle_encode(mask)
    assert np.array_equal(rle_decode(encoding, mask.shape), mask)
    assert encoding == " ".join(encoding.split())  # canonical: sorted, disjoint, no blank tokens


@FUZZ
@given(pairs=st.lists(st.tuples(run_values, run_values), max_size=8),
       shape=st.tuples(st.integers(0, 7), st.integers(0, 7)))
def test_rle_decode_is_correct_or_one_input_error(pairs, shape):
    encoding = " ".join(f"{start} {length}" for start, length in pairs)
    try:
        decoded = rle_decode(encoding, shape, source="train.csv", row="img1")
    except HubmapInputError as error:
        assert str(error).startswith("train.csv: row 'img1': ")
        assert not runs_are_valid(pairs, shape[0] * shape[1])
        return
    assert runs_are_valid(pairs, shape[0] * shape[1]), f"accepted invalid runs {pairs} on {shape}"
    assert np.array_equal(decoded, reference_decode(pairs, shape))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("0123456789 -+.e\t\nx")), max_size=40))
def test_rle_decode_of_any_text(text):
    result_or_input_error(lambda: rle_decode(text, (6, 5), source="a.csv"), "a.csv")


@FUZZ
@given(content=st.binary(max_size=300) | st.text(alphabet='id,encoding predicted rle\n"\r 0123456789\x00é', max_size=200)
       .map(lambda t: t.encode("utf-8")))
def test_rle_csv_of_any_bytes(tmp_path, content):
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    found = result_or_input_error(lambda: read_rle_csv(path), path)
    assert found is None or all(isinstance(k, str) and k == k.strip() and k for k in found)


@FUZZ
@given(rows=st.dictionaries(st.text(alphabet="abcXYZ019_-,\" ", min_size=1, max_size=8).map(str.strip).filter(bool),
                            masks, max_size=4))
def test_rle_csv_round_trip(tmp_path, rows):
    path = tmp_path / "out.csv"
    write_rle_csv(path, {key: rle_encode(mask) for key, mask in rows.items()})
    back = read_rle_csv(path)
    assert list(back) == list(rows)
    for key, mask in rows.items():
        assert np.array_equal(rle_decode(back[key], mask.shape), mask)


# ---------------------------------------------------------------- masks and slides, lying suffixes


SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".svs", ".dat", "")


def encode_image(array: np.ndarray, fmt: str) -> bytes:
    """``array`` in ``fmt`` (PNG, TIFF, JPEG) as bytes."""
    buffer = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buffer, array, photometric="rgb" if array.ndim == 3 and array.shape[2] in (3, 4) else "minisblack")
    else:
        Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


images = hnp.arrays(np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20), st.sampled_from([3])))


@FUZZ
@given(image=images, fmt=st.sampled_from(["PNG", "TIFF", "JPEG"]), suffix=st.sampled_from(SUFFIXES))
def test_slide_is_read_by_content_whatever_the_suffix(tmp_path, image, fmt, suffix):
    path = tmp_path / f"slide{suffix}"
    path.write_bytes(encode_image(image, fmt))
    shape, corner, smallest = read_slide_corner(path)
    assert shape == image.shape
    if fmt != "JPEG":
        assert np.array_equal(corner, image[:4, :4])
        assert np.array_equal(smallest, image)


binary_masks = hnp.arrays(bool, st.tuples(st.integers(1, 20), st.integers(1, 20)))


@FUZZ
@given(mask=binary_masks, fmt=st.sampled_from(["PNG", "TIFF", "JPEG"]), suffix=st.sampled_from(SUFFIXES))
def test_mask_is_read_by_content_whatever_the_suffix(tmp_path, mask, fmt, suffix):
    path = tmp_path / f"mask{suffix}"
    path.write_bytes(encode_image(mask.astype(np.uint8) * 255, fmt))
    if fmt == "JPEG":
        with pytest.raises(HubmapInputError, match="JPEG image is lossy"):
            read_mask(path)
    else:
        assert np.array_equal(read_mask(path), mask)


@FUZZ
@given(array=hnp.arrays(st.sampled_from([np.uint8, np.uint16, np.float32, np.int16, np.int32]),
                        st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([1, 2, 3, 4, 5, 16]))),
       planar=st.booleans(), suffix=st.sampled_from(SUFFIXES))
def test_any_tiff_is_read_or_one_input_error(tmp_path, array, planar, suffix):
    """Channel counts, sample types and sizes tifffile can write: read by the documented rules, else refused."""
    path = tmp_path / f"odd{suffix}"
    channels = array.shape[2]
    if channels == 1:
        tifffile.imwrite(path, array[..., 0], photometric="minisblack")
    else:
        data = np.moveaxis(array, -1, 0) if planar else array
        tifffile.imwrite(path, data, photometric="minisblack", planarconfig="separate" if planar else "contig")
    slide = result_or_input_error(lambda: read_slide_corner(path), path)
    mask = result_or_input_error(lambda: read_mask(path), path)
    if array.size == 0 or channels not in (1, 2, 3, 4):
        assert slide is None and mask is None, f"{array.shape} {array.dtype}: accepted"
    if slide is not None:
        assert slide[0] == (*array.shape[:2], 3) and array.dtype in (np.uint8, np.uint16)
    if mask is not None:
        assert mask.shape == array.shape[:2]


@FUZZ
@given(head=st.sampled_from([b"II*\x00", b"MM\x00*", b"II+\x00", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"{\"a\": 1}",
                             b"GIF89a", b"PK\x03\x04", b"", b"\x00\x01"]), tail=st.binary(max_size=200),
       suffix=st.sampled_from(SUFFIXES))
def test_any_bytes_are_read_or_one_input_error(tmp_path, head, tail, suffix):
    path = tmp_path / f"blob{suffix}"
    path.write_bytes(head + tail)
    result_or_input_error(lambda: read_slide_corner(path), path)
    result_or_input_error(lambda: read_mask(path), path)


def good_files() -> dict[str, bytes]:
    rgb = (np.arange(24 * 40 * 3) % 251).astype(np.uint8).reshape(24, 40, 3)
    tiled = io.BytesIO()
    tifffile.imwrite(tiled, rgb, photometric="rgb", tile=(16, 16), compression="zlib")
    strips = io.BytesIO()
    tifffile.imwrite(strips, rgb, photometric="rgb", rowsperstrip=5)
    return {"tiled": tiled.getvalue(), "strips": strips.getvalue(), "png": encode_image(rgb, "PNG"),
            "jpeg": encode_image(rgb, "JPEG")}


GOOD_FILES = good_files()


@FUZZ
@given(name=st.sampled_from(sorted(GOOD_FILES)), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6), suffix=st.sampled_from([".tif", ".png"]))
def test_truncated_or_mutated_files(tmp_path, name, cut, flips, suffix):
    data = bytearray(GOOD_FILES[name])
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    data = data[: max(1, int(cut * len(data)))] if cut < 1 else data
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(bytes(data))
    result_or_input_error(lambda: read_slide_corner(path), path)
    result_or_input_error(lambda: read_mask(path), path)


@FUZZ
@given(description=st.text(alphabet="MPP =0123456789.eE+-|Aperio PhysicalSizeX\"", max_size=40),
       resolution=st.none() | st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)), unit=st.sampled_from([1, 2, 3]))
def test_malformed_pixel_size_metadata_never_costs_the_slide(tmp_path, description, resolution, unit):
    """Whatever the description and resolution tags say, the pixels open; the µm/px is plausible or None."""
    path = tmp_path / "meta.tif"
    image = np.full((6, 5, 3), 90, np.uint8)
    extra = {"resolution": resolution, "resolutionunit": unit} if resolution else {}
    tifffile.imwrite(path, image, photometric="rgb", description=description, **extra)
    with open_slide(path) as slide:
        assert np.array_equal(slide.levels[0][:, :], image)
        assert slide.mpp is None or 0.01 <= slide.mpp <= 100


# ---------------------------------------------------------------- TIFF headers written by hand


def tiff_bytes(width, height, *, samples=1, bits=8, compression=1, tile=None, rows_per_strip=None,
               data=b"\0" * 64, offset_shift=0, bytecount=None, sampleformat=1) -> bytes:
    """A little-endian classic TIFF with one IFD and one strip or tile, whose tags claim what we say."""
    entries = [(256, 4, [width]), (257, 4, [height]), (258, 3, [bits] * samples), (259, 3, [compression]),
               (262, 3, [2 if samples >= 3 else 1]), (277, 3, [samples]), (284, 3, [1]),
               (339, 3, [sampleformat] * samples)]
    count = len(data) if bytecount is None else bytecount
    if tile:
        entries += [(322, 4, [tile[1]]), (323, 4, [tile[0]]), (324, 4, [8 + offset_shift]), (325, 4, [count])]
    else:
        entries += [(273, 4, [8 + offset_shift]), (278, 4, [rows_per_strip or height]), (279, 4, [count])]
    entries.sort()
    ifd_offset = 8 + len(data) + len(data) % 2
    extra_at = ifd_offset + 2 + 12 * len(entries) + 4
    body, extra = b"", b""
    for code, kind, values in entries:
        raw = struct.pack("<" + ("H" if kind == 3 else "I") * len(values), *values)
        if len(raw) <= 4:
            body += struct.pack("<HHI", code, kind, len(values)) + raw.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", code, kind, len(values), extra_at + len(extra))
            extra += raw
    head = (b"II*\x00" + struct.pack("<I", ifd_offset) + data).ljust(ifd_offset, b"\0")
    return head + struct.pack("<H", len(entries)) + body + struct.pack("<I", 0) + extra


SIZES = st.integers(0, 40) | st.sampled_from([10**5, 10**6, 2**31 - 1, 2**32 - 1])
tiff_claims = st.fixed_dictionaries({
    "width": SIZES, "height": SIZES,
    "samples": st.sampled_from([1, 2, 3, 4, 5, 16]),
    "bits": st.sampled_from([1, 8, 12, 16, 32]),
    "compression": st.sampled_from([1, 5, 7, 8, 32773, 50000]),
    "tile": st.none() | st.tuples(st.sampled_from([0, 16, 2**20]), st.sampled_from([0, 16, 2**20])),
    "offset_shift": st.sampled_from([0, 3, 10**6, 2**31]),
    "bytecount": st.none() | st.sampled_from([0, 1, 2**31]),
    "sampleformat": st.sampled_from([1, 2, 3]),
    "data": st.binary(max_size=200) | st.sampled_from([zlib.compress(b"\0" * 4096), b"\0" * 1024]),
})


@FUZZ
@given(claims=tiff_claims, suffix=st.sampled_from([".tif", ".png", ".jpg"]))
def test_mutated_tiff_headers(tmp_path, claims, suffix):
    path = tmp_path / f"claims{suffix}"
    path.write_bytes(tiff_bytes(**claims))
    result_or_input_error(lambda: read_slide_corner(path), path)
    mask = result_or_input_error(lambda: read_mask(path), path)
    assert mask is None or mask.shape == (claims["height"], claims["width"])


@FUZZ
@given(width=SIZES.filter(lambda n: n < 2**31), height=SIZES.filter(lambda n: n < 2**31),
       pixels=st.binary(max_size=64) | st.just(bytes(5000)), suffix=st.sampled_from([".png", ".tif"]))
def test_png_headers_claiming_any_size(tmp_path, width, height, pixels, suffix):
    path = tmp_path / f"claims{suffix}"
    path.write_bytes(png_claiming(width, height, pixels))
    result_or_input_error(lambda: read_slide_corner(path), path)
    result_or_input_error(lambda: read_mask(path), path)


# ---------------------------------------------------------------- safetensors


def safetensors_bytes(header, data: bytes = b"", header_length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_length is None else header_length) + raw + data


DTYPES = st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "Q99", "f32", ""])
tensor_entries = st.fixed_dictionaries({
    "dtype": DTYPES,
    "shape": st.lists(st.integers(-2, 6) | st.just(10**9), max_size=3),
    "data_offsets": st.lists(st.integers(-1, 80) | st.just(2**62), min_size=0, max_size=3),
})
headers = st.dictionaries(st.text(min_size=1, max_size=5), tensor_entries, max_size=3)


@FUZZ
@given(header=headers | st.binary(max_size=40), data=st.binary(max_size=80),
       header_length=st.none() | st.sampled_from([0, 1, 7, 10**10, 2**63, 2**64 - 1]))
def test_safetensors_header_fuzz(tmp_path, header, data, header_length):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(header, data, header_length))
    tensors = result_or_input_error(lambda: read_weights(path), path)
    if tensors is not None:
        assert set(tensors) <= set(header if isinstance(header, dict) else json.loads(header))


# ---------------------------------------------------------------- the huge claims, under a hard memory limit

HUGE_CLAIMS_SCRIPT = textwrap.dedent('''
    import json, resource, struct, sys, zlib
    sys.path.insert(0, sys.argv[2])
    from test_fuzz_binary import safetensors_bytes, tiff_bytes
    from napari_hubmap.annotations import read_mask
    from napari_hubmap.errors import HubmapInputError
    from napari_hubmap.registry.store import read_weights
    from napari_hubmap.slide import open_slide
    with open("/proc/self/status") as fh:
        used = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.RLIM_INFINITY))  # 1 GiB more, at most
    folder, out = sys.argv[1], {}
    tensor = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    files = {
        "tiff_1e6_square.tif": tiff_bytes(10**6, 10**6),
        "tiff_1e6_square_zlib.tif": tiff_bytes(10**6, 10**6, compression=8, data=zlib.compress(bytes(4096))),
        "tiff_1e6_square_tiled_jpeg.tif": tiff_bytes(10**6, 10**6, compression=7, tile=(1024, 1024)),
        "tiff_huge_tile.tif": tiff_bytes(16, 16, compression=8, tile=(2**20, 2**20)),
        "tiff_rgb16_1e5.tif": tiff_bytes(10**5, 10**5, samples=3, bits=16, compression=32773),
        "weights_header_10GB.safetensors": safetensors_bytes(tensor, bytes(8), 10**10),
        "weights_header_2e64.safetensors": safetensors_bytes(tensor, bytes(8), 2**64 - 1),
        "weights_tensor_1e12.safetensors": safetensors_bytes(
            {"a": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}, bytes(8)),
    }
    for name, blob in files.items():
        path = folder + "/" + name
        with open(path, "wb") as fh:
            fh.write(blob)
        readers = [read_weights] if name.endswith(".safetensors") else [read_mask, lambda p: open_slide(p).levels[0][:8, :8]]
        for reader in readers:
            try:
                reader(path)
                out.setdefault(name, []).append("read")
            except HubmapInputError as error:
                out.setdefault(name, []).append("input error" if path in str(error) else "unnamed: " + str(error))
            except BaseException as error:
                out.setdefault(name, []).append(f"{type(error).__name__}: {error}")
    print(json.dumps(out))
''')


def test_huge_claims_allocate_nothing(tmp_path):
    """A tiny file claiming 10**6 x 10**6 pixels or a 10 GB header: one input error, under a 1 GiB
    address-space limit (a MemoryError there means the claimed size was allocated, in Python or native code)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", HUGE_CLAIMS_SCRIPT, str(tmp_path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(outcomes) == 8
    assert all(result == "input error" for results in outcomes.values() for result in results), outcomes


# ---------------------------------------------------------------- the CLI


@pytest.mark.parametrize("content", [b'{"not": "a slide"}', b"II*\x00" + bytes(20), tiff_bytes(10**6, 10**6)])
def test_cli_info_on_a_lying_or_corrupt_file(tmp_path, capsys, content):
    from napari_hubmap.cli import main

    path = tmp_path / "slide.tif"
    path.write_bytes(content)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"napari-hubmap: error: {path}: ") and "Traceback" not in err


def test_cli_info_reads_a_png_named_tif(tmp_path, capsys):
    from napari_hubmap.cli import main

    path = tmp_path / "slide.tif"
    path.write_bytes(encode_image(np.zeros((5, 7, 3), np.uint8), "PNG"))
    assert main(["info", str(path)]) == 0
    assert '"width": 7' in capsys.readouterr().out


# ---------------------------------------------------------------- regressions: every failure found above


def test_regression_rle_backwards_runs_refused():
    """Was: runs whose starts go backwards were sorted and merged without a word."""
    with pytest.raises(HubmapInputError, match=r"t.csv: row 'a': RLE run 2 starts at 1, before run 1"):
        rle_decode("5 2 1 2", (3, 3), source="t.csv", row="a")


def test_regression_rle_overlapping_runs_refused():
    """Was: overlapping runs were merged without a word."""
    with pytest.raises(HubmapInputError, match=r"RLE run 2 \(start 3\) overlaps run 1"):
        rle_decode("1 4 3 2", (3, 3), source="t.csv")


def test_regression_rle_run_overflowing_int64_refused():
    """Was: start + length past 2**63 wrapped negative, passed the 'past the end' check and decoded an
    empty mask (data silently lost)."""
    with pytest.raises(HubmapInputError, match="goes past the end of a 3x3 image"):
        rle_decode("9223372036854775807 9223372036854775807", (3, 3), source="t.csv")


def test_regression_rle_encode_of_zero_size_masks():
    """Was: IndexError from rle_encode on a 0xW or Hx0 mask."""
    for shape in [(0, 0), (0, 3), (3, 0)]:
        assert rle_encode(np.zeros(shape, bool)) == ""
        assert rle_decode("", shape).shape == shape


def test_regression_png_named_tif_is_a_slide_and_a_mask(tmp_path):
    """Was: 'not a readable TIFF file (not a TIFF file: header=b'\\x89PNG')' from both readers."""
    path = tmp_path / "tile.tif"
    mask = np.zeros((6, 9), bool)
    mask[2:4, 3:8] = True
    path.write_bytes(encode_image(mask.astype(np.uint8) * 255, "PNG"))
    assert np.array_equal(read_mask(path), mask)
    assert read_slide_corner(path)[0] == (6, 9, 3)


def test_regression_tiff_named_jpg_is_a_mask_and_goes_to_tifffile(tmp_path):
    """Was: read_mask refused it as lossy by its suffix; open_slide read it through PIL, whole."""
    path = tmp_path / "mask.jpg"
    tifffile.imwrite(path, np.full((4, 4), 255, np.uint8))
    assert read_mask(path).all()
    with open_slide(path) as slide:
        assert slide.format == "tiff"


def test_regression_jpeg_named_png_refused_as_a_mask(tmp_path):
    """Was: read as a mask, its JPEG artefacts becoming instance labels."""
    path = tmp_path / "mask.png"
    path.write_bytes(encode_image(np.full((16, 16), 255, np.uint8), "JPEG"))
    with pytest.raises(HubmapInputError, match="mask.png: a JPEG image is lossy"):
        read_mask(path)


def test_regression_json_named_tif_names_its_content(tmp_path):
    path = tmp_path / "slide.tif"
    path.write_text(json.dumps({"type": "FeatureCollection"}))
    with pytest.raises(HubmapInputError, match="slide.tif: not a readable TIFF file: its content looks like JSON text"):
        open_slide(path)
    with pytest.raises(HubmapInputError, match="content looks like JSON text"):
        read_mask(path)


@pytest.mark.parametrize("channels", [5, 16])
def test_regression_channel_pages_other_than_1_to_4_refused(tmp_path, channels):
    """Was: a 5- or 16-page channel axis was read as RGB from its first three pages, without a word."""
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((channels, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(HubmapInputError, match=f"unsupported: {channels} channels"):
        open_slide(path)
    interleaved = tmp_path / "interleaved.tif"
    tifffile.imwrite(interleaved, np.zeros((8, 8, channels), np.uint8), photometric="minisblack", planarconfig="contig")
    with pytest.raises(HubmapInputError, match=f"has {channels} channels; a mask has 1, 2"):
        read_mask(interleaved)


def test_regression_two_channels_are_grey_plus_alpha_without_a_misleading_warning(tmp_path, recwarn):
    """Was: 'axes YXS have no colour axis; showing the first plane' on a grey + alpha TIFF."""
    path = tmp_path / "la.tif"
    data = np.zeros((8, 8, 2), np.uint8)
    data[..., 0] = 200
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig")
    with open_slide(path) as slide:
        assert (slide.levels[0][:, :] == 200).all()
    assert not any("colour axis" in str(w.message) for w in recwarn)


def test_regression_huge_claimed_mask_is_refused_before_allocating(tmp_path):
    """Was: MemoryError ('Unable to allocate 931. GiB') from read_mask on a 200-byte TIFF."""
    path = tmp_path / "huge.tif"
    path.write_bytes(tiff_bytes(10**6, 10**6, compression=8, data=zlib.compress(bytes(1000))))
    with memory_bound(1 << 20), pytest.raises(HubmapInputError, match="corrupt header"):
        read_mask(path)


def test_regression_huge_compressed_strip_refused_at_open(tmp_path):
    """Was: open_slide succeeded and the first region read raised MemoryError (a 10**6 x 10**6 strip)."""
    path = tmp_path / "huge.tif"
    path.write_bytes(tiff_bytes(10**6, 10**6, compression=8, data=zlib.compress(bytes(1000))))
    with pytest.raises(HubmapInputError, match="corrupt header: one strip"):
        open_slide(path)


def test_regression_uncompressed_claim_larger_than_its_data_refused_at_open(tmp_path):
    """Was: opened, then every read failed ('mmap length is greater than file size')."""
    path = tmp_path / "lying.tif"
    path.write_bytes(tiff_bytes(5000, 5000))
    with pytest.raises(HubmapInputError, match="more than the 64 bytes of uncompressed data"):
        open_slide(path)


def test_regression_zero_tile_size_is_one_input_error(tmp_path):
    """Was: ZeroDivisionError from read_mask."""
    path = tmp_path / "tile0.tif"
    path.write_bytes(tiff_bytes(16, 16, tile=(0, 0)))
    with pytest.raises(HubmapInputError, match="tile0.tif: "):
        read_mask(path)


@pytest.mark.parametrize("samples", [1, 2])
def test_regression_tiff_decoded_to_the_wrong_shape_is_one_input_error(tmp_path, samples):
    """Was: IndexError in read_mask: tifffile logs a failed decode (1-bit signed samples) and returns
    an array of another shape than its series claims."""
    path = tmp_path / "bits1.tif"
    path.write_bytes(tiff_bytes(1, 1, samples=samples, bits=1, sampleformat=2, data=b"\x01"))
    with pytest.raises(HubmapInputError, match="bits1.tif: not a readable TIFF"):
        read_mask(path)


def png_claiming(width: int, height: int, pixels: bytes = bytes(100)) -> bytes:
    """A PNG whose header claims width x height RGB pixels over one tiny IDAT chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def test_regression_png_claiming_400_megapixels_is_one_input_error(tmp_path):
    """Was: PIL's DecompressionBombError out of open_slide (not an input error) for a 20000 x 20000 claim; our
    own limit (MAX_FLAT_IMAGE_PIXELS) and the claimed-size check now decide, before anything is allocated."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(20000, 20000))
    for read in (open_slide, read_mask):
        with memory_bound(16 << 20), pytest.raises(HubmapInputError, match="bomb.png: corrupt header: it claims a 20000x20000"):
            read(path)


def test_regression_malformed_mpp_text_does_not_refuse_the_slide(tmp_path):
    """Was: 'corrupt TIFF structure (ValueError: could not convert string to float: '0.5.1')': a slide
    whose description held a malformed MPP could not be opened at all."""
    path = tmp_path / "mpp.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), photometric="rgb", description="Aperio | MPP = 0.5.1")
    with open_slide(path) as slide:
        assert slide.mpp is None and slide.levels[0].shape == (8, 8, 3)


def test_regression_all_empty_chunks_claiming_176_mib_refused(tmp_path):
    """Found by the campaign (seed 20261203): a strip of 0 bytes claiming 23 x 10**6 x 4 12-bit samples made
    read_mask allocate 276 MB of zeros (the bound is 256 MiB)."""
    path = tmp_path / "sparse.tif"
    path.write_bytes(tiff_bytes(23, 10**6, samples=4, bits=12, compression=7, data=b""))
    for read in (read_mask, open_slide):
        with memory_bound(16 << 20), pytest.raises(HubmapInputError, match="has no image data"):
            read(path)


def test_regression_empty_tiles_of_a_wide_image_refused_at_once(tmp_path):
    """Found by the campaign: 100000 x 27 in 16 px LZW tiles holding no bytes took read_mask 7 s (deadline)."""
    path = tmp_path / "wide.png"
    path.write_bytes(tiff_bytes(100000, 27, samples=4, bits=12, compression=5, tile=(16, 16), offset_shift=3, data=b""))
    with pytest.raises(HubmapInputError, match="wide.png: corrupt header: the image needs 12500 tiles"):
        read_mask(path)


def test_regression_fewer_tiles_than_the_image_needs_refused(tmp_path):
    """Found by the campaign (seed 20261204): a 1 x 10**6 image in 16 px JPEG tiles listing one tile made
    read_mask decode 62500 missing tiles (3.5 s under load, past the deadline)."""
    path = tmp_path / "few.tif"
    path.write_bytes(tiff_bytes(1, 10**6, compression=7, tile=(16, 16), data=b"\x00"))
    for read in (read_mask, open_slide):
        with pytest.raises(HubmapInputError, match="the image needs 62500 tiles, the file lists 1"):
            read(path)


def test_regression_zero_size_mask_refused(tmp_path):
    """Was: read_mask returned a (0, 0) array."""
    path = tmp_path / "empty.tif"
    path.write_bytes(tiff_bytes(0, 0, rows_per_strip=1))
    with pytest.raises(HubmapInputError, match="zero size"):
        read_mask(path)


@pytest.mark.parametrize("blob, message", [
    (safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), 10**10),
     "its header claims 10000000000 bytes, the file has"),
    (safetensors_bytes(b"{not json"), "corrupt header: not JSON"),
    (safetensors_bytes(b"[" * 100_000), "corrupt header: not JSON"),
    (safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 10**12]}}, bytes(8)),
     r"tensor 'a': data_offsets \[0, 1000000000000\] outside the file's 8 data bytes"),
    (safetensors_bytes({"a": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "unknown dtype 'Q99'"),
    (safetensors_bytes({"a": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 8]}}, bytes(8)),
     "does not fill its 8 bytes"),
    (b"\x80\x04\x95" + bytes(20), "not a readable safetensors file"),  # a pickle: never unpickled
])
def test_safetensors_header_errors_name_the_problem(tmp_path, blob, message):
    """Each corrupt header is one error naming the file and the problem, from our own check of the header
    (safetensors refused them too, but with its internal wording)."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(blob)
    with memory_bound(16 << 20), pytest.raises(HubmapInputError, match=message) as info:
        read_weights(path)
    assert str(info.value).startswith(f"{path}: ")


def test_sniff_names_the_common_kinds():
    assert kind_of_bytes(b"II*\x00rest") == "tiff" and kind_of_bytes(b"MM\x00+") == "bigtiff"
    assert kind_of_bytes(b"\x89PNG\r\n\x1a\n") == "png" and kind_of_bytes(b"\xff\xd8\xff\xe0") == "jpeg"
    assert kind_of_bytes(b'  {"a": 1}') == "json" and kind_of_bytes(b"") == "empty"
    assert kind_of_bytes(bytes(128) + b"DICM") == "dicom"
    assert kind_of_bytes(safetensors_bytes({"a": 1})) == "safetensors"
