"""Vendor formats (OpenSlide) and DICOM WSI (wsidicom) beside tifffile: slides written here offline
(tests/vendor_slides.py) open with their size, levels, µm/px, pixels and label/macro images; a damaged
file of each backend is one error line and exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import vendor_slides as vs
from napari_hubmap.cli import main
from napari_hubmap.slide import is_slide_path, open_slide

H, W = 384, 512


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return vs.random_rgb((H, W), 1)


WRITERS = {  # test id: (the reader's format name, writer)
    "svs": ("aperio", lambda tmp, a: vs.write_svs(tmp / "slide.svs", a)),
    "philips-tiff": ("philips", lambda tmp, a: vs.write_philips(tmp / "slide.tiff", a)),
    "ventana-bif": ("ventana", lambda tmp, a: vs.write_ventana(tmp / "slide.bif", a)),
    "leica-scn": ("leica", lambda tmp, a: vs.write_leica(tmp / "slide.scn", a)),
    "hamamatsu-vms": ("hamamatsu", lambda tmp, a: vs.write_vms(tmp / "vms", a)),
    "hamamatsu-ndpi": ("hamamatsu", lambda tmp, a: vs.write_ndpi(tmp / "slide.ndpi", a)),
    "hamamatsu-vmu": ("hamamatsu", lambda tmp, a: vs.write_vmu(tmp / "vmu", a)),
    "dicom": ("dicom", lambda tmp, a: vs.write_dicom(tmp / "dicom", a, tmp)),
}
READER = {"aperio": "interleaved", "philips": "openslide:philips", "ventana": "openslide:ventana",
          "leica": "openslide:leica", "hamamatsu": "openslide:hamamatsu", "dicom": "dicom:"}
PREVIEW = {"aperio": "label", "philips": "label", "ventana": "macro", "leica": "macro", "hamamatsu": "macro",
           "dicom": "label"}


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_vendor_slide_opens_with_levels_mpp_pixels_and_label(tmp_path, image, case):
    kind, write = WRITERS[case]
    written = write(tmp_path, image)
    assert is_slide_path(written.path)
    with open_slide(written.path) as slide:
        assert slide.format == kind and slide.layout.startswith(READER[kind])
        assert [level.shape[:2] for level in slide.levels] == written.levels
        assert slide.file_mpp == pytest.approx(written.mpp) and slide.scale.source == "file"
        r0, c0 = written.level0_box
        level0 = slide.levels[0]
        np.testing.assert_array_equal(level0[r0 : r0 + H, c0 : c0 + W], written.truth)
        np.testing.assert_array_equal(level0[r0 + 5 : r0 + H : 7, c0 + 3 : c0 + W : 11], written.truth[5::7, 3::11])
        np.testing.assert_array_equal(level0[r0 + 100 : r0 + 131, c0 + 250 : c0 + 260], written.truth[100:131, 250:260])
        if written.level1_truth is not None:  # VMS levels below 0 are JPEG-scaled decodes, not stored pixels
            f = written.levels[0][1] // written.levels[1][1]
            np.testing.assert_array_equal(slide.levels[1][r0 // f : (r0 + H) // f, c0 // f : (c0 + W) // f],
                                          written.level1_truth)
            # a region away from the origin: read_region's level-0 coordinates scaled right
            np.testing.assert_array_equal(slide.levels[1][r0 // f + 10 : r0 // f + 40, c0 // f + 20 : c0 // f + 90],
                                          written.level1_truth[10:40, 20:90])
        if r0 or c0:  # Leica: the collection around the main image was never scanned: white
            assert (np.asarray(level0)[:r0] == 255).all() and (np.asarray(level0)[:, :c0] == 255).all()
        assert set(written.associated) <= set(slide.associated_names)
        for name, pixels in written.associated.items():
            np.testing.assert_array_equal(slide.associated_image(name), pixels)
        name, preview = slide.preview_image()
        assert name == PREVIEW[kind]
        np.testing.assert_array_equal(preview, written.associated[name])
        info = slide.info()
        assert info["format"] == kind and info["associated"] == list(slide.associated_names)
        assert info["levels"] == [list(shape) for shape in written.levels]


def test_one_dicom_instance_opens_alone(tmp_path, image):
    written = vs.write_dicom(tmp_path / "dicom", image, tmp_path)
    with open_slide(vs.level0_file(written)) as slide:
        assert slide.format == "dicom" and [level.shape[:2] for level in slide.levels] == [(H, W)]
        assert slide.file_mpp == pytest.approx(0.5) and slide.associated_names == ()
        np.testing.assert_array_equal(np.asarray(slide.levels[0]), image)
        assert slide.preview_image() is None


def test_the_napari_reader_takes_a_dicom_folder(tmp_path, image):
    from napari_hubmap.reader import get_reader

    written = vs.write_dicom(tmp_path / "dicom", image, tmp_path)
    reader = get_reader(str(written.path))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(written.path))
    assert kind == "image" and kwargs["multiscale"] and [level.shape[:2] for level in data] == written.levels
    assert kwargs["metadata"]["napari_hubmap"]["associated"] == ["label"]
    np.testing.assert_array_equal(np.asarray(data[1]), vs.half(image))
    kwargs["metadata"]["napari_hubmap"]["slide"].close()


def test_plain_tiffs_stay_with_tifffile_whatever_their_name(tmp_path, image):
    """OpenSlide reads only what it recognises as a vendor's; a plain tiled TIFF named .scn/.bif/.ndpi
    (big-endian: tifffile reads a little-endian .ndpi as NDPI) and an OME-TIFF are tifffile's."""
    for name in ("plain.scn", "plain.bif", "plain.ndpi", "plain.ome.tif"):
        path = tmp_path / name
        tifffile.imwrite(path, image, tile=(128, 128), photometric="rgb", byteorder=">" if name.endswith("ndpi") else "<")
        with open_slide(path) as slide:
            assert slide.format == "tiff" and not slide.layout.startswith("openslide")
            np.testing.assert_array_equal(np.asarray(slide.levels[0]), image)


def test_a_folder_without_dicom_files_is_not_a_slide(tmp_path):
    (tmp_path / "notes.txt").write_text("no slide here")
    assert not is_slide_path(tmp_path)
    assert main(["info", str(tmp_path)]) == 2


def _damaged(kind: str, tmp: Path, image: np.ndarray) -> tuple[Path, str]:
    """A damaged file read by each backend, and a word its one error line holds."""
    if kind == "aperio-truncated":  # tifffile
        return vs.truncate(vs.write_svs(tmp / "slide.svs", image).path), "truncated"
    if kind == "philips-bad-tiles":  # OpenSlide: the format is recognised, its tiles do not decode
        return vs.scramble_tiles(vs.write_philips(tmp / "slide.tiff", image).path, 0), "cannot decode"
    if kind == "ventana-bad-tiles":
        return vs.scramble_tiles(vs.write_ventana(tmp / "slide.bif", image).path, 2), "cannot decode"
    if kind == "leica-bad-tiles":
        return vs.scramble_tiles(vs.write_leica(tmp / "slide.scn", image).path, 1), "cannot decode"
    if kind == "ndpi-bad-jpeg":  # OpenSlide reads the JPEG headers at open
        return vs.scramble_tiles(vs.write_ndpi(tmp / "slide.ndpi", image).path, 0), "not a readable Hamamatsu slide"
    if kind == "vms-truncated-jpeg":
        written = vs.write_vms(tmp / "vms", image)
        vs.truncate(written.path.parent / "slide.jpg", 0.5)
        return written.path, "cannot decode"
    if kind == "vms-missing-jpeg":
        written = vs.write_vms(tmp / "vms", image)
        (written.path.parent / "slide.jpg").unlink()
        return written.path, "not a readable Hamamatsu slide"
    if kind == "mrxs-garbage":
        (tmp / "slide.mrxs").write_text("[GENERAL]\nnot really\n")
        return tmp / "slide.mrxs", "not a readable MRXS slide"
    if kind == "dicom-truncated-instance":  # wsidicom: a folder with a cut-off level
        written = vs.write_dicom(tmp / "dicom", image, tmp)
        vs.truncate(vs.level0_file(written))
        return written.path, "cannot decode"
    if kind == "dicom-garbage":
        (tmp / "slide.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 64)
        return tmp / "slide.dcm", "not a readable DICOM"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["aperio-truncated", "philips-bad-tiles", "ventana-bad-tiles", "leica-bad-tiles",
                                  "ndpi-bad-jpeg", "vms-truncated-jpeg", "vms-missing-jpeg", "mrxs-garbage", "dicom-truncated-instance",
                                  "dicom-garbage"])
def test_a_damaged_file_is_one_error_line_and_exit_2(tmp_path, image, capfd, kind):
    path, words = _damaged(kind, tmp_path, image)
    capfd.readouterr()  # what writing the file printed (wsidicomizer's warnings)
    assert main(["info", str(path)]) == 2
    out, err = capfd.readouterr()  # file-descriptor level: C libraries (libtiff, libjpeg) included
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"napari-hubmap: error: {path}: ") and words in lines[0]


@pytest.mark.gui
def test_slide_panel_shows_the_label_image(make_napari_viewer, tmp_path, image):
    from napari_hubmap._widgets.slide_panel import SlidePanel

    written = vs.write_philips(tmp_path / "slide.tiff", image)
    viewer = make_napari_viewer()
    panel = SlidePanel(viewer)
    assert not panel.preview.isVisibleTo(panel)
    viewer.open(str(written.path), plugin="napari-hubmap")
    assert panel.preview_name == "label" and panel.preview.isVisibleTo(panel)
    shown = panel.preview.pixmap().toImage()
    label = written.associated["label"]
    assert (shown.width(), shown.height()) == (label.shape[1], label.shape[0])
    for y, x in ((0, 0), (7, 5), (59, 79)):
        color = shown.pixelColor(x, y)
        assert (color.red(), color.green(), color.blue()) == tuple(label[y, x])
    viewer.layers.clear()
    assert not panel.preview.isVisibleTo(panel) and panel.preview_name == ""
