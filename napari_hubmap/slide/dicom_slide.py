"""DICOM whole-slide images through ``wsidicom``: a folder of instances (one per level, label, overview)
or one ``.dcm`` file.

Levels are wsidicom's pyramid levels, largest first, read region by region (only the frames a region
overlaps are decoded); µm/px is the base level's pixel spacing; the label and overview (macro) images
are read when asked for.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import HubmapInputError, closed_on_failure
from .levels import as_rgb, check_levels_decode, read_in_blocks
from .scale import plausible_mpp

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM Part 10 file: ``DICM`` after the 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_files_in(folder: str | os.PathLike) -> list[str]:
    """The DICOM files directly inside ``folder`` (sorted); empty when it holds none."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    return [e.path for e in entries if e.is_file() and is_dicom_file(e.path)]


class DicomLevelSource:
    """One wsidicom level as a region source of (h, w, 3) uint8."""

    def __init__(self, slide: "DicomSlideFile", level):
        self.slide = slide
        self.level = level
        self.width, self.height = int(level.size.width), int(level.size.height)
        self.memmapped = False

    def _box(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        from wsidicom.geometry import Point, Region, Size

        try:
            image = self.level.get_region(Region(Point(x0, y0), Size(w, h)))
        except Exception as exc:  # wsidicom errors, decoder errors, a closed file
            raise HubmapInputError(self.slide.path, f"cannot decode image data ({exc})") from exc
        return as_rgb(np.asarray(image.convert("RGB") if image.mode not in ("RGB", "RGBA") else image))

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        return read_in_blocks(self._box, rows, cols)


class DicomSlideFile:
    """An open DICOM WSI: level sources (largest first), µm/px, label and overview images."""

    def __init__(self, path: str):
        from wsidicom import WsiDicom

        self.path = path
        self.vendor = "dicom"
        if os.path.isdir(path):
            files = dicom_files_in(path)
            if not files:
                raise HubmapInputError(path, "is a folder without DICOM files, not a slide")
        else:
            if os.path.getsize(path) == 0:
                raise HubmapInputError(path, "file is empty (0 bytes)")
            files = [path]
        try:
            self.wsi = WsiDicom.open(files)
        except Exception as exc:  # pydicom / wsidicom raise many kinds on bad or partial files
            raise HubmapInputError(path, f"not a readable DICOM whole-slide image ({type(exc).__name__}: {exc})") from exc
        with closed_on_failure(self.close, path, "DICOM whole-slide image"):
            self._describe()

    def _describe(self) -> None:
        levels = sorted(self.wsi.levels.levels, key=lambda level: -int(level.size.width))
        if not levels:
            raise HubmapInputError(self.path, "DICOM files hold no whole-slide image levels")
        self.sources = [DicomLevelSource(self, level) for level in levels]
        try:
            self.mpp = plausible_mpp(float(levels[0].mpp.width))
        except Exception:  # WsiDicomNoResolutionError: no pixel spacing
            self.mpp = None
        self.layout = "dicom:" + str(levels[0].default_instance.dataset.photometric_interpretation)
        self.dtype = "uint8"
        self._associated = {}
        if self.wsi.labels is not None:
            self._associated["label"] = self.wsi.read_label
        if self.wsi.overviews is not None:
            self._associated["macro"] = self.wsi.read_overview
        self.associated_names = sorted(self._associated)
        check_levels_decode(self.sources)

    def associated(self, name: str) -> np.ndarray:
        try:
            image = self._associated[name]()
        except Exception as exc:
            raise HubmapInputError(self.path, f"cannot read the {name} image ({exc})") from exc
        return as_rgb(np.asarray(image))

    def close(self) -> None:
        self.wsi.close()
