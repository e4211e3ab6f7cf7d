"""Find the RGB image in a TIFF / BigTIFF / OME-TIFF / SVS file: its levels, layout and pixel size.

Layouts handled: interleaved (H, W, 3|4), planar (3, H, W) in one page, one page per channel
(OME ``CYX``, ``TZCYX`` with singletons, or three plain single-channel pages), grayscale
(replicated to RGB with a warning), grey + alpha (the grey). Channel counts other than 1-4 (interleaved
samples, or pages along a channel axis) are refused with one error naming the count. 16-bit data is
scaled to 8 bits with a warning; other sample types (float, signed, 32-bit) are refused.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings

import numpy as np
import tifffile

from ..errors import HubmapInputError, closed_on_failure
from .levels import as_rgb
from .scale import plausible_mpp
from .tiff_pages import PageReader, check_page_data, file_size

CHANNEL_AXES = "CSIQ"


class TiffLevelSource:
    """One pyramid level as a region source of (h, w, 3) uint8."""

    def __init__(self, readers: list[PageReader], mode: str):
        self.readers = readers
        self.mode = mode  # "rgb", "pages" or "gray"
        self.height, self.width = readers[0].height, readers[0].width
        self.memmapped = all(r.memmapped for r in readers)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        if self.mode == "pages":
            data = np.concatenate([r.read(rows, cols)[:, :, :1] for r in self.readers[:3]], axis=2)
        else:
            data = self.readers[0].read(rows, cols)
            data = data[:, :, :3] if self.mode == "rgb" else np.repeat(data[:, :, :1], 3, axis=2)
        return to_uint8(data)


def to_uint8(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:
        return np.ascontiguousarray(data)
    return (data >> 8).astype(np.uint8)


def _as_page(page) -> tifffile.TiffPage:
    return page if isinstance(page, tifffile.TiffPage) else page.aspage()


def _check_sample_type(page: tifffile.TiffPage, path: str) -> None:
    dtype = np.dtype(page.dtype)
    if dtype not in (np.uint8, np.uint16):
        raise HubmapInputError(
            path, f"unsupported sample type {dtype.name} ({page.bitspersample}-bit); expected 8- or 16-bit unsigned RGB"
        )
    if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
        raise HubmapInputError(path, "palette-colour TIFF is not supported; convert it to RGB")
    if page.imagelength == 0 or page.imagewidth == 0:
        raise HubmapInputError(path, "image has zero size")
    _refuse_channels(page.samplesperpixel, path, "samples per pixel")


SLIDE_CHANNELS = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}
"""The channel counts a slide may have (see :mod:`.open`); any other count is refused."""


def _refuse_channels(count: int, path: str, what: str) -> None:
    if count not in SLIDE_CHANNELS:
        raise HubmapInputError(path, f"unsupported: {count} {what} (a slide has 1 grey, 2 grey + alpha, "
                                     "3 RGB or 4 RGBA channels)")


def _channel_pages(series: tifffile.TiffPageSeries, pages: list, path: str) -> list:
    """The pages holding R, G, B of a level stored one channel per page (the grey page when it has 1 or 2
    channels; first plane of other axes)."""
    axes = series.axes[:-2]
    shape = series.shape[:-2]
    if not axes:
        return pages[:1]
    index = np.arange(int(np.prod(shape))).reshape(shape)
    channel_axis = next((i for i, a in enumerate(axes) if a in CHANNEL_AXES and shape[i] > 1), None)
    if channel_axis is None:
        warnings.warn(f"{path}: axes {series.axes} have no colour axis; showing the first plane", stacklevel=3)
        return [pages[int(index.flat[0])]]
    _refuse_channels(shape[channel_axis], path, f"channels (axis {axes[channel_axis]} of {series.axes})")
    wanted = 3 if shape[channel_axis] >= 3 else 1
    key = tuple(slice(0, wanted) if i == channel_axis else 0 for i in range(len(axes)))
    if any(s > 1 for i, s in enumerate(shape) if i != channel_axis):
        warnings.warn(f"{path}: axes {series.axes}: showing the first plane of the non-colour axes", stacklevel=3)
    return [pages[int(i)] for i in np.atleast_1d(index[key])]


def _level_readers(series, path: str, byteorder: str, size: int) -> tuple[list[PageReader], str]:
    pages = [_as_page(p) for p in series.pages if p is not None]
    if not pages:
        raise HubmapInputError(path, "TIFF series has no pages")
    first = pages[0]
    _check_sample_type(first, path)
    if first.samplesperpixel >= 3:
        chosen, mode = [first], "rgb"
    elif first.samplesperpixel == 2:  # grey + alpha, interleaved: the grey
        chosen, mode = [first], "gray"
    else:
        chosen = _channel_pages(series, pages, path)
        mode = "pages" if len(chosen) >= 3 else "gray"
    for page in chosen:
        check_page_data(page, path, size)
    return [PageReader(p, path, byteorder) for p in chosen], mode


def _separate_page_series(tif: tifffile.TiffFile) -> list | None:
    """Three plain single-channel pages of one size (no OME/ImageJ metadata): R, G, B."""
    series = tif.series
    if len(series) < 3 or series[0].axes != "YX":
        return None
    first = series[0]
    same = all(s.axes == "YX" and s.shape == first.shape and s.dtype == first.dtype for s in series[:3])
    return list(series[:3]) if same else None


@contextlib.contextmanager
def quiet_tifffile():
    """tifffile's log lines (``invalid page offset``, ...) dropped while a file is opened: a file it cannot
    read raises here with one message; one it reads despite them opens."""
    logger = tifffile.logger()

    def drop(record) -> bool:
        return record.levelno >= logging.CRITICAL

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


class TiffSlideFile:
    """An open TIFF slide: level sources (largest first), layout description and mpp."""

    def __init__(self, path: str):
        self.path = path
        size = file_size(path)
        if size == 0:
            raise HubmapInputError(path, "file is empty (0 bytes)")
        with quiet_tifffile():  # its log lines on a malformed file would add to our one error line
            self._open(size)

    def _open(self, size: int) -> None:
        path = self.path
        try:
            self.tif = tifffile.TiffFile(path)
        except Exception as exc:  # tifffile raises many kinds on malformed headers
            raise HubmapInputError(path, f"not a readable TIFF file ({exc})") from exc
        with closed_on_failure(self.close, path, "TIFF structure"):  # malformed IFDs: arbitrary errors in tifffile
            self._describe(size)

    def _describe(self, size: int) -> None:
        tif, path = self.tif, self.path
        if not tif.series:
            raise HubmapInputError(path, "TIFF file holds no image")
        byteorder = tif.byteorder
        separate = _separate_page_series(tif)
        if separate is not None:
            readers = [PageReader(_as_page(s.pages[0]), path, byteorder) for s in separate]
            for s in separate:
                _check_sample_type(_as_page(s.pages[0]), path)
                check_page_data(_as_page(s.pages[0]), path, size)
            self.sources = [TiffLevelSource(readers, "pages")]
            self.layout = "pages:3xYX"
        else:
            series = tif.series[0]
            self.sources = []
            for level in series.levels:
                readers, mode = _level_readers(level, path, byteorder, size)
                self.sources.append(TiffLevelSource(readers, mode))
            self.layout = f"{_layout_kind(series, self.sources[0])}:{series.get_axes(False)}"
        self.dtype = np.dtype(tif.series[0].dtype).name
        self._warn_conversions()
        self.mpp = _mpp(tif)
        self.vendor = "aperio" if tif.is_svs else "tiff"
        self._associated = _svs_associated_pages(tif) if tif.is_svs else {}
        self.associated_names = sorted(self._associated)

    def associated(self, name: str) -> np.ndarray:
        """An associated image (Aperio label, macro, thumbnail) as (h, w, 3) uint8."""
        try:
            return as_rgb(self._associated[name].asarray())
        except Exception as exc:  # a closed file, a codec error
            raise HubmapInputError(self.path, f"cannot read the {name} image ({exc})") from exc

    def _warn_conversions(self) -> None:
        if self.sources[0].mode == "gray":
            warnings.warn(f"{self.path}: grayscale image, shown as RGB by repeating the channel", stacklevel=4)
        if self.dtype == "uint16":
            warnings.warn(f"{self.path}: 16-bit image, scaled to 8 bits (value >> 8) for display and models", stacklevel=4)

    def close(self) -> None:
        self.tif.close()


def _svs_associated_pages(tif: tifffile.TiffFile) -> dict:
    """Aperio's untiled pages: the second is the thumbnail; the others name themselves on the second line
    of their description (``label 415x422``, ``macro 1280x431``), as OpenSlide reads them."""
    found = {}
    for index, page in enumerate(tif.pages):
        page = _as_page(page)
        if index == 0 or page.is_tiled:
            continue
        lines = (page.description or "").splitlines()
        words = lines[1].split() if len(lines) > 1 else []
        name = "thumbnail" if index == 1 else (words[0].lower() if words else "")
        if name in ("label", "macro", "thumbnail") and name not in found:
            found[name] = page
    return found


def _layout_kind(series, source: TiffLevelSource) -> str:
    if source.mode == "pages":
        return "pages"
    if source.mode == "gray":
        return "grayscale"
    page = _as_page(series.pages[0])
    return "planar" if page.planarconfig == 2 and page.samplesperpixel > 1 else "interleaved"


def _mpp(tif: tifffile.TiffFile) -> float | None:
    """Microns per pixel from OME-XML, the Aperio description, or the resolution tags; None (unknown) when
    none gives a plausible one, and where one is malformed (``MPP = 0.5.1``) rather than refusing the slide."""
    for read in (_mpp_ome, _mpp_svs, lambda t: _mpp_resolution(t.pages.first)):
        try:
            mpp = read(tif)
        except (ValueError, TypeError, ArithmeticError, KeyError, IndexError):
            mpp = None
        if mpp:
            return mpp
    return None


def _mpp_ome(tif: tifffile.TiffFile) -> float | None:
    if not tif.is_ome or not tif.ome_metadata:
        return None
    match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
    if not match:
        return None
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
    factor = {"nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}.get(unit.group(1) if unit else "µm", 1.0)
    return plausible_mpp(float(match.group(1)) * factor)


def _mpp_svs(tif: tifffile.TiffFile) -> float | None:
    description = tif.pages.first.description or ""
    match = re.search(r"MPP\s*=\s*([0-9.]+)", description)
    return plausible_mpp(float(match.group(1))) if match else None


def _mpp_resolution(page: tifffile.TiffPage) -> float | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    numerator, denominator = tags["XResolution"].value
    if not numerator or not denominator:
        return None
    per_unit = numerator / denominator
    unit = int(tags["ResolutionUnit"].value)
    microns = {2: 25400.0, 3: 10000.0}.get(unit)
    return plausible_mpp(microns / per_unit) if microns else None
