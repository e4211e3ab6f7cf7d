"""Vendor slide formats through OpenSlide (the ``openslide-bin`` wheel: no system library).

Chosen per file (:func:`openslide_vendor`): what OpenSlide recognises as MIRAX (.mrxs), Hamamatsu (.vms,
.vmu, .ndpi), Leica (.scn), Ventana (.bif, Ventana TIFF) or Philips TIFF, and any other vendor it knows
but tifffile does not read as such. Plain TIFF, OME-TIFF and Aperio SVS stay with tifffile (lazier: no
RGBA compositing, memory-mapped uncompressed tiles). Levels read regions on demand
(``read_region``); the parts of a slide that were never scanned (transparent in OpenSlide) come out in
the slide's background colour (white unless the file says otherwise). Associated images (label, macro,
thumbnail) are read when asked for.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import HubmapInputError, closed_on_failure
from .levels import as_rgb, check_levels_decode, read_in_blocks, rgba_on_background
from .scale import plausible_mpp
from .sniff import TIFF_KINDS, sniff

OPENSLIDE_SUFFIXES = (".mrxs", ".vms", ".vmu", ".ndpi", ".scn", ".bif")
"""Vendor files: OpenSlide reads them when it recognises them (a plain TIFF under such a name goes to tifffile)."""

TIFFFILE_VENDORS = ("generic-tiff", "aperio")
"""OpenSlide vendors left to tifffile: plain tiled TIFF and Aperio SVS."""

VENDOR_NAMES = {
    "mirax": "MIRAX", "hamamatsu": "Hamamatsu", "leica": "Leica SCN", "ventana": "Ventana",
    "philips": "Philips TIFF", "aperio": "Aperio SVS", "sakura": "Sakura", "trestle": "Trestle",
    "generic-tiff": "TIFF", "dicom": "DICOM", "zeiss": "Zeiss CZI",
}


def openslide_vendor(path: str) -> str | None:
    """OpenSlide's vendor name for ``path`` (``"philips"``, ``"ventana"``, ...), None when it knows none."""
    import openslide

    try:
        return openslide.OpenSlide.detect_format(path)
    except Exception:  # detection on an unreadable file: not a format OpenSlide knows
        return None


def use_openslide(path: str) -> str | None:
    """The vendor when OpenSlide should read ``path``: a vendor file it recognises that tifffile does not
    read as such; None otherwise (tifffile, PIL, DICOM). A vendor suffix (.mrxs, .vms, .ndpi, ...) that
    OpenSlide does not recognise goes to tifffile when the file is a TIFF, else is an error."""
    vendor = openslide_vendor(path)
    lower = path.lower()
    if vendor is None and lower.endswith(OPENSLIDE_SUFFIXES) and sniff(path) not in TIFF_KINDS:
        kind = os.path.splitext(lower)[1].lstrip(".").upper()
        raise HubmapInputError(path, f"not a readable {kind} slide (OpenSlide does not recognise it)")
    if vendor is None or vendor in TIFFFILE_VENDORS or vendor == "dicom":
        return None
    return vendor


def _background(properties) -> tuple[int, int, int]:
    text = properties.get("openslide.background-color") or ""
    try:
        return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4)) if len(text) == 6 else (255, 255, 255)
    except ValueError:
        return (255, 255, 255)


class OpenSlideLevelSource:
    """One OpenSlide level as a region source of (h, w, 3) uint8."""

    def __init__(self, slide: "OpenSlideFile", level: int):
        self.slide = slide
        self.level = level
        self.width, self.height = slide.handle.level_dimensions[level]
        self.downsample = float(slide.handle.level_downsamples[level])
        self.memmapped = False

    def _box(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        # read_region takes the top-left corner in level-0 pixels
        location = (int(round(x0 * self.downsample)), int(round(y0 * self.downsample)))
        try:
            region = self.slide.handle.read_region(location, self.level, (w, h))
        except Exception as exc:  # openslide.OpenSlideError, or a closed handle
            raise HubmapInputError(self.slide.path, f"cannot decode image data ({exc})") from exc
        return rgba_on_background(np.asarray(region), self.slide.background)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        return read_in_blocks(self._box, rows, cols)


class OpenSlideFile:
    """An open vendor slide: level sources (largest first), µm/px, associated images."""

    def __init__(self, path: str, vendor: str):
        import openslide

        self.path = path
        self.vendor = vendor
        name = VENDOR_NAMES.get(vendor, vendor)
        try:
            self.handle = openslide.OpenSlide(path)
        except Exception as exc:  # OpenSlideError, OpenSlideUnsupportedFormatError, OSError
            raise HubmapInputError(path, f"not a readable {name} slide ({exc})") from exc
        with closed_on_failure(self.close, path, f"{name} slide"):
            self._describe(name)

    def _describe(self, name: str) -> None:
        handle = self.handle
        if handle.level_count == 0 or min(handle.dimensions) <= 0:
            raise HubmapInputError(self.path, f"{name} slide holds no image")
        self.background = _background(handle.properties)
        self.sources = [OpenSlideLevelSource(self, i) for i in range(handle.level_count)]
        self.mpp = plausible_mpp(handle.properties.get("openslide.mpp-x"))
        self.layout = f"openslide:{self.vendor}"
        self.dtype = "uint8"
        self.associated_names = sorted(handle.associated_images.keys())
        check_levels_decode(self.sources)

    def associated(self, name: str) -> np.ndarray:
        try:
            image = self.handle.associated_images[name]
        except Exception as exc:
            raise HubmapInputError(self.path, f"cannot read the {name} image ({exc})") from exc
        return as_rgb(np.asarray(image))

    def close(self) -> None:
        self.handle.close()
