"""Tiny vendor slides written here, offline, in the layouts the readers detect (OpenSlide's vendor sources
say what each needs): Aperio SVS, Philips TIFF, Ventana BIF, Leica SCN, Hamamatsu VMS, VMU and NDPI, and
DICOM WSI.

Each writer takes the level-0 RGB image and returns a :class:`Written`: what a reader must find (level
sizes, µm/px, associated images and the pixels they hold). TIFF-based files use lossless zlib tiles, so
level pixels equal the source (so do VMU's uncompressed NGR files); VMS and NDPI hold JPEGs, whose truth is the
JPEG decoded by Pillow.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

LOSSLESS = {"photometric": "rgb", "compression": "zlib", "metadata": None}


@dataclass
class Written:
    path: Path  # what open_slide is given (a file, or a DICOM folder)
    levels: list[tuple[int, int]]  # (height, width), largest first
    mpp: float | None
    truth: np.ndarray  # what level 0 holds
    associated: dict[str, np.ndarray] = field(default_factory=dict)  # name -> exact pixels
    level0_box: tuple[int, int] = (0, 0)  # where ``truth`` sits in level 0 (row, col)
    level1_truth: np.ndarray | None = None  # what level 1 holds over the box; None: not stored pixels


def half(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[::2, ::2])


def random_rgb(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def write_svs(path: Path, image: np.ndarray, mpp: float = 0.499) -> Written:
    """Aperio: tiled levels (first page's description ``Aperio ...|MPP = ...``), the untiled thumbnail as
    page 1, label and macro as untiled pages named on their description's second line."""
    h, w = image.shape[:2]
    label, macro = random_rgb((60, 80), 11), random_rgb((50, 150), 12)
    head = "Aperio Image Library v12.0.15 \r\n"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), description=f"{head}{w}x{h} [0,0 {w}x{h}] (128x128) -> {w}x{h} RLE|AppMag = 20|MPP = {mpp}",
                  **LOSSLESS)
        tif.write(np.ascontiguousarray(image[::4, ::4]), description=f"{head}{w}x{h} -> {w // 4}x{h // 4} - |AppMag = 20", **LOSSLESS)
        tif.write(half(image), tile=(128, 128), description=f"{head}{w}x{h} -> {w // 2}x{h // 2} RLE|AppMag = 20", **LOSSLESS)
        tif.write(label, subfiletype=1, description=f"{head}label 80x60", **LOSSLESS)
        tif.write(macro, subfiletype=9, description=f"{head}macro 150x50", **LOSSLESS)
    return Written(path, [(h, w), (h // 2, w // 2)], mpp, image, {"label": label, "macro": macro},
                   level1_truth=half(image))


def _philips_xml(spacings_mm: list[float]) -> str:
    def attribute(name, group, element, kind, value):
        return f'<Attribute Name="{name}" Group="{group}" Element="{element}" PMSVR="{kind}">{value}</Attribute>'

    representations = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">'
        + attribute("DICOM_PIXEL_SPACING", "0x0028", "0x0030", "IDoubleArray", f'"{mm:.7f}" "{mm:.7f}"')
        + "</DataObject>"
        for mm in spacings_mm
    )
    wsi = (
        '<DataObject ObjectType="DPScannedImage">'
        + attribute("DICOM_PIXEL_SPACING", "0x0028", "0x0030", "IDoubleArray", f'"{spacings_mm[0]:.7f}" "{spacings_mm[0]:.7f}"')
        + attribute("PIM_DP_IMAGE_TYPE", "0x301D", "0x1004", "IString", "WSI")
        + attribute("PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE", "0x1001", "0x8B01", "IDataObjectArray", f"<Array>{representations}</Array>")
        + "</DataObject>"
    )
    return ('<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
            + attribute("PIM_DP_SCANNED_IMAGES", "0x301D", "0x1003", "IDataObjectArray", f"<Array>{wsi}</Array>")
            + "</DataObject>")


def write_philips(path: Path, image: np.ndarray, mpp: float = 0.25) -> Written:
    """Philips TIFF: Software ``Philips...``, the ``DPUfsImport`` XML in the first ImageDescription (one
    DICOM_PIXEL_SPACING in mm per level), reduced levels flagged as such, label and macro as untiled
    pages described ``Label`` / ``Macro``."""
    h, w = image.shape[:2]
    label, macro = random_rgb((60, 80), 21), random_rgb((50, 150), 22)
    xml = _philips_xml([mpp / 1000, 2 * mpp / 1000])
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), description=xml, software="Philips DP v1.0", **LOSSLESS)
        tif.write(half(image), tile=(128, 128), subfiletype=1, **LOSSLESS)
        tif.write(label, description="Label", **LOSSLESS)
        tif.write(macro, description="Macro", **LOSSLESS)
    return Written(path, [(h, w), (h // 2, w // 2)], mpp, image, {"label": label, "macro": macro},
                   level1_truth=half(image))


def write_ventana(path: Path, image: np.ndarray, mpp: float = 0.25) -> Written:
    """Ventana BIF: the iScan XMP (ScanRes: µm/px) on the first page, which is the slide's overview
    (``Label_Image``, OpenSlide's *macro*: Ventana's only picture of the label), a ``Thumbnail`` page,
    then tiled pyramid pages described ``level=N mag=M``."""
    h, w = image.shape[:2]
    macro, thumbnail = random_rgb((50, 150), 31), np.ascontiguousarray(image[::4, ::4])
    xmp = f'<?xml version="1.0" encoding="utf-8"?><iScan Magnification="40" ScanRes="{mpp}" Z-layers="1" />'.encode()
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(macro, description="Label_Image", extratags=[(700, 1, len(xmp), xmp, True)], **LOSSLESS)
        tif.write(thumbnail, description="Thumbnail", **LOSSLESS)
        tif.write(image, tile=(128, 128), description="level=0 mag=40 quality=95", **LOSSLESS)
        tif.write(half(image), tile=(128, 128), description="level=1 mag=20 quality=95", **LOSSLESS)
    return Written(path, [(h, w), (h // 2, w // 2)], mpp, image, {"macro": macro, "thumbnail": thumbnail},
                   level1_truth=half(image))


LEICA_NS = "http://www.leica-microsystems.com/scn/2010/10/01"


def _leica_image(name: str, dims: str, view: tuple[int, int, int, int], objective: str) -> str:
    size_x, size_y, off_x, off_y = view
    return (f'<image name="{name}"><creationDate>2026-01-01T00:00:00.00Z</creationDate>'
            '<device model="Leica SCN400;Leica SCN" version="1.4.0.10758;1.4.0.10742"/>'
            f'<pixels sizeX="0" sizeY="0">{dims}</pixels>'
            f'<view sizeX="{size_x}" sizeY="{size_y}" offsetX="{off_x}" offsetY="{off_y}" spacingZ="0"/>'
            f'<scanSettings><objectiveSettings><objective>{objective}</objective></objectiveSettings>'
            '<illuminationSettings><numericalAperture>0.4</numericalAperture>'
            '<illuminationSource>brightfield</illuminationSource></illuminationSettings></scanSettings></image>')


def write_leica(path: Path, image: np.ndarray, mpp: float = 0.5, offset: tuple[int, int] = (32, 64)) -> Written:
    """Leica SCN (BigTIFF): the ``scn`` XML in the first ImageDescription places a macro image (the whole
    collection) and the main image (its levels' IFDs) in nanometre 'clicks'; the slide is the collection
    at the main image's resolution, so the main image sits at ``offset`` (rows, cols) in white; µm/px
    from the main image's resolution tags (centimetres)."""
    h, w = image.shape[:2]
    macro = random_rgb((64, 96), 41)
    nm = int(round(mpp * 1000))
    oy, ox = offset
    coll_w, coll_h = (w + 2 * ox) * nm, (h + 2 * oy) * nm
    dims = f'<dimension sizeX="{w}" sizeY="{h}" r="0" ifd="1"/><dimension sizeX="{w // 2}" sizeY="{h // 2}" r="1" ifd="2"/>'
    xml = (f'<?xml version="1.0" encoding="utf-8"?><scn xmlns="{LEICA_NS}">'
           f'<collection name="test" sizeX="{coll_w}" sizeY="{coll_h}"><barcode>TEST-1</barcode>'
           + _leica_image("macro", '<dimension sizeX="96" sizeY="64" r="0" ifd="0"/>', (coll_w, coll_h, 0, 0), "0.15625")
           + _leica_image("main", dims, (w * nm, h * nm, ox * nm, oy * nm), "20")
           + "</collection></scn>")
    per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(macro, tile=(32, 32), description=xml, **LOSSLESS)
        tif.write(image, tile=(128, 128), resolution=(per_cm, per_cm), resolutionunit="CENTIMETER", **LOSSLESS)
        tif.write(half(image), tile=(128, 128), resolution=(per_cm / 2, per_cm / 2), resolutionunit="CENTIMETER", **LOSSLESS)
    return Written(path, [(h + 2 * oy, w + 2 * ox), ((h + 2 * oy) // 2, (w + 2 * ox) // 2)], mpp, image,
                   {"macro": macro}, level0_box=offset, level1_truth=half(image))


def write_vms(folder: Path, image: np.ndarray, mpp: float = 0.5) -> Written:
    """Hamamatsu VMS: a key file (``[Virtual Microscope Specimen]``: ImageFile, MapFile, MacroImage,
    PhysicalWidth in nm) beside baseline JPEGs with restart markers (OpenSlide's tiles). OpenSlide
    adds levels by JPEG scaling (1/2, 1/4, 1/8) and from the map file (H and W multiples of 64 here)."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = image.shape[:2]
    Image.fromarray(image).save(folder / "slide.jpg", quality=95, subsampling=0, restart_marker_rows=1)
    Image.fromarray(np.ascontiguousarray(image[::8, ::8])).save(folder / "slide_map.jpg", quality=95, subsampling=0,
                                                                 restart_marker_rows=1)
    Image.fromarray(random_rgb((50, 150), 51)).save(folder / "slide_macro.jpg", quality=95)
    key = folder / "slide.vms"
    key.write_text("[Virtual Microscope Specimen]\nNoLayers=1\nNoJpegColumns=1\nNoJpegRows=1\nImageFile=slide.jpg\n"
                   f"MapFile=slide_map.jpg\nMacroImage=slide_macro.jpg\nPhysicalWidth={int(w * mpp * 1000)}\n"
                   f"PhysicalHeight={int(h * mpp * 1000)}\n")
    truth = np.asarray(Image.open(folder / "slide.jpg").convert("RGB"))
    macro = np.asarray(Image.open(folder / "slide_macro.jpg").convert("RGB"))
    # base at 1, 1/2, 1/4, 1/8 (JPEG scaling), then the 1/8 map file at 1/2, 1/4, 1/8 of it
    levels = [(h // 2**k, w // 2**k) for k in range(7)]
    return Written(key, levels, mpp, truth, {"macro": macro})


def _write_ngr(path: Path, image: np.ndarray, column: int) -> None:
    """Hamamatsu NGR: ``GN``, width, height and column width (int32 LE at 4, 8, 12), the data offset (at 24),
    then columns ``column`` px wide, top to bottom, of 3 x uint16 LE per pixel holding 12 bits (8 << 4)."""
    h, w = image.shape[:2]
    header = bytearray(32)
    header[0:2] = b"GN"
    struct.pack_into("<iii", header, 4, w, h, column)
    struct.pack_into("<i", header, 24, len(header))
    columns = [(image[:, x : x + column].astype("<u2") << 4).tobytes() for x in range(0, w, column)]
    path.write_bytes(bytes(header) + b"".join(columns))


def write_vmu(folder: Path, image: np.ndarray, mpp: float = 0.5) -> Written:
    """Hamamatsu VMU: a key file (``[Uncompressed Virtual Microscope Specimen]``, BitsPerPixel 36,
    PixelOrder RGB) beside an uncompressed NGR image and a 1/4 NGR map (the two levels), and a macro JPEG.
    The width must be a multiple of 128 (the columns)."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = image.shape[:2]
    _write_ngr(folder / "slide.ngr", image, 128)
    _write_ngr(folder / "slide_map.ngr", np.ascontiguousarray(image[::4, ::4]), 32)
    Image.fromarray(random_rgb((50, 150), 81)).save(folder / "slide_macro.jpg", quality=95)
    key = folder / "slide.vmu"
    key.write_text("[Uncompressed Virtual Microscope Specimen]\nImageFile=slide.ngr\nMapFile=slide_map.ngr\n"
                   "MacroImage=slide_macro.jpg\nBitsPerPixel=36\nPixelOrder=RGB\n"
                   f"PhysicalWidth={int(w * mpp * 1000)}\nPhysicalHeight={int(h * mpp * 1000)}\n")
    macro = np.asarray(Image.open(folder / "slide_macro.jpg").convert("RGB"))
    return Written(key, [(h, w), (-(-h // 4), -(-w // 4))], mpp, image, {"macro": macro},
                   level1_truth=np.ascontiguousarray(image[::4, ::4]))


def _jpeg(image: np.ndarray) -> bytes:
    """Baseline JPEG with a restart marker every 16 blocks (OpenSlide's tiles in NDPI and VMS files)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, subsampling=0, restart_marker_blocks=16)
    return buffer.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def write_ndpi(path: Path, image: np.ndarray, mpp: float = 0.5) -> Written:
    """Hamamatsu NDPI: a TIFF whose pages each hold one JPEG strip with restart markers, tagged with the
    NDPI tags (65420 format flag; 65421 source lens: the magnification of a level, -1 for the macro;
    65422-65424 offsets); µm/px from the level's resolution tags (centimetres). OpenSlide adds levels by
    JPEG scaling of the smallest stored one."""
    h, w = image.shape[:2]
    macro = random_rgb((64, 160), 71)
    pages = [(image, 20.0, mpp), (half(image), 10.0, 2 * mpp), (macro, -1.0, None)]
    encoded = [_jpeg(a) for a, _, _ in pages]
    with tifffile.TiffWriter(path) as tif:
        for (array, lens, page_mpp), data in zip(pages, encoded):
            tags = [(65420, "I", 1, 1, True), (65421, "f", 1, lens, True), (65422, "i", 1, 0, True),
                    (65423, "i", 1, 0, True), (65424, "i", 1, 0, True)]
            resolution = {} if page_mpp is None else {"resolution": (1e4 / page_mpp, 1e4 / page_mpp),
                                                      "resolutionunit": "CENTIMETER"}
            tif.write(iter([data]), shape=array.shape, dtype=np.uint8, photometric="rgb", compression="jpeg",
                      rowsperstrip=array.shape[0], extratags=tags, software="NDP.scan", metadata=None, **resolution)
    levels = [(h // 2**k, w // 2**k) for k in range(5)]
    return Written(path, levels, mpp, _decoded(encoded[0]), {"macro": _decoded(encoded[2])},
                   level1_truth=_decoded(encoded[1]))


def write_dicom(folder: Path, image: np.ndarray, scratch: Path, mpp: float = 0.5) -> Written:
    """DICOM WSI: an OME-TIFF (two levels, µm/px) converted by wsidicomizer into a folder of instances
    (RLE lossless), and a LABEL instance made with pydicom from the smallest level's dataset
    (wsidicomizer's own ``label=`` marks level 0 a label too)."""
    import pydicom
    from pydicom.uid import RLELossless, generate_uid
    from wsidicom.codec import RleSettings
    from wsidicomizer import WsiDicomizer

    h, w = image.shape[:2]
    source = scratch / "dicom-source.ome.tif"
    with tifffile.TiffWriter(source) as tif:
        tif.write(image, tile=(128, 128), photometric="rgb", compression="zlib", subifds=1,
                  metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp})
        tif.write(half(image), tile=(128, 128), photometric="rgb", compression="zlib", subfiletype=1)
    folder.mkdir(parents=True, exist_ok=True)
    WsiDicomizer.convert(source, folder, tile_size=128, encoding=RleSettings(), workers=1, include_label=False,
                         include_overview=False, include_thumbnail=False)
    label = random_rgb((64, 80), 61)
    files = sorted(folder.glob("*.dcm"))
    smallest = min(files, key=lambda f: pydicom.dcmread(f, stop_before_pixels=True).TotalPixelMatrixColumns)
    ds = pydicom.dcmread(smallest)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns = label.shape[:2]
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = label.shape[:2]
    ds.NumberOfFrames = 1
    ds.InstanceNumber = 99
    ds.compress(RLELossless, label)
    ds.save_as(folder / "label.dcm")
    return Written(folder, [(h, w), (h // 2, w // 2)], mpp, image, {"label": label}, level1_truth=half(image))


def level0_file(written: Written) -> Path:
    """The DICOM instance holding level 0 (one file of the folder)."""
    import pydicom

    files = [f for f in sorted(Path(written.path).glob("*.dcm")) if f.name != "label.dcm"]
    return max(files, key=lambda f: pydicom.dcmread(f, stop_before_pixels=True).TotalPixelMatrixColumns)


def truncate(path: Path, keep: float = 0.6) -> Path:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))
    return path


def scramble_tiles(path: Path, page: int) -> Path:
    """Overwrite the tile data of TIFF page ``page`` with 0xFF (IFDs intact: the format is still
    recognised, its pixels cannot be decoded)."""
    with tifffile.TiffFile(path, is_ndpi=False) as tif:  # ours: plain 32-bit offsets
        target = tif.pages[page]
        spans = list(zip(target.dataoffsets, target.databytecounts))
    with open(path, "r+b") as f:
        for offset, count in spans:
            f.seek(offset)
            f.write(b"\xff" * count)
    return path
