"""``open_slide``: any kidney slide as lazy RGB pyramid levels, never read whole into memory.

The reader is chosen by the file's content (its magic bytes, :mod:`.sniff`), by the suffix only where
the content does not tell (OpenSlide's vendor suffixes, ``.dcm``): PNG/JPEG through PIL, even named
``.tif``; DICOM (a folder of instances or a ``.dcm`` file) through wsidicom (:mod:`.dicom_slide`); vendor
formats OpenSlide recognises (MIRAX, Hamamatsu VMS/VMU/NDPI, Leica SCN, Ventana BIF, Philips TIFF;
:mod:`.openslide_slide`) through OpenSlide; TIFF, OME-TIFF and Aperio SVS through tifffile
(:mod:`.tiff_slide`), which reads them more lazily, even named ``.jpg``. Any other content is refused
with one error naming what it looks like (``JSON text``, ``a GIF image``, ...).

Channels, the same rule in every reader: 1 is grey, 2 grey + alpha (shown as grey), 3 RGB, 4 RGBA (alpha
dropped); any other count (5, 16, ...) is refused with one error naming the count.

Pyramidal files give their own levels. A single-level slide larger than 1024 px gets reduced levels
from the pyramid cache (:mod:`.pyramid_cache`); until the cache exists, those levels are read by
nearest-neighbour subsampling where level 0 is memory-mapped (uncompressed TIFF), or show the part
of the cache built so far (white elsewhere) for compressed files.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import HubmapInputError
from ..progress import ProgressCallback
from .dicom_slide import DICOM_SUFFIXES
from .levels import ArraySource, SlideLevel, SubsampledSource, downsample_mean2, empty_region, level_shapes
from .pyramid_cache import BuildState, PyramidCache, ZarrLevelSource
from .openslide_slide import OPENSLIDE_SUFFIXES
from .scale import SlideScale, check_mpp, slide_scale
from .sniff import TIFF_KINDS, check_claimed_bytes, looks_like, no_pixel_limit, sniff

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs", ".ome.tif", ".ome.tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SLIDE_SUFFIXES = TIFF_SUFFIXES + OPENSLIDE_SUFFIXES + DICOM_SUFFIXES + IMAGE_SUFFIXES
MAX_FLAT_IMAGE_PIXELS = 400_000_000
PREVIEW_ORDER = ("label", "macro", "thumbnail")
"""Which associated image shows a slide best: pathologists recognise a slide by its label."""


def is_slide_path(path: str | os.PathLike) -> bool:
    """A file name a slide reader opens, or a folder of DICOM instances."""
    if os.path.isdir(path):
        from .dicom_slide import dicom_files_in

        return bool(dicom_files_in(path))
    return os.fspath(path).lower().endswith(SLIDE_SUFFIXES)


class CachedLevelSource:
    """A reduced level of a single-level slide: cache when built, else fallback, else white."""

    def __init__(self, cache: PyramidCache, level: int, fallback: SubsampledSource | None):
        self.cache = cache
        self.level = level
        self.fallback = fallback
        self.height, self.width = cache.shapes[level - 1]

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        if not self.cache.complete and self.fallback is not None:
            return self.fallback.read(rows, cols)
        array = self.cache.array(self.level)
        if array is None:
            return empty_region(rows, cols)
        return ZarrLevelSource(array).read(rows, cols)


@dataclass
class Slide:
    """An open slide: lazy (H, W, 3) uint8 levels, largest first, and what the file says.

    ``file_mpp`` is the file's µm per pixel (None when it carries none); ``mpp_given`` one the user gave
    (``open_slide(mpp=)``, :meth:`set_mpp`), which wins. :attr:`scale` applies the rule of :mod:`.scale`.
    ``format``: the reader's name for the file (``tiff``, ``aperio``, ``image``, ``dicom``, or OpenSlide's vendor:
    ``philips``, ``ventana``, ``leica``, ``hamamatsu``, ``mirax``, ...); ``associated_names``: the images the file
    carries beside the slide (``label``, ``macro``, ``thumbnail``), read by :meth:`associated_image`.
    """

    path: str
    levels: list[SlideLevel]
    file_mpp: float | None
    layout: str
    dtype: str
    cache: PyramidCache | None = None
    reopen: Callable[[], tuple] | None = field(default=None, repr=False)
    _close: Callable[[], None] | None = field(default=None, repr=False)
    mpp_given: float | None = None
    format: str = "tiff"
    associated_names: tuple[str, ...] = ()
    _associated: Callable[[str], np.ndarray] | None = field(default=None, repr=False)

    @property
    def mpp(self) -> float | None:
        """The µm/px known for this slide (given, else the file's); None when only assumed."""
        return self.mpp_given if self.mpp_given is not None else self.file_mpp

    @property
    def scale(self) -> SlideScale:
        """µm/px, its source and the file's own, as every command and panel reports them."""
        return slide_scale(self.file_mpp, self.mpp_given)

    def set_mpp(self, value) -> SlideScale:
        """Give the slide's µm/px (a number or its text; wins over the file's); None or blank text
        clears it back to the file's, else the assumption. A bad value raises and changes nothing."""
        blank = value is None or (isinstance(value, str) and not value.strip())
        self.mpp_given = None if blank else check_mpp(value, self.path)
        return self.scale

    @property
    def height(self) -> int:
        return self.levels[0].shape[0]

    @property
    def width(self) -> int:
        return self.levels[0].shape[1]

    @property
    def downsamples(self) -> list[float]:
        return [self.height / level.shape[0] for level in self.levels]

    def level_holds_pixels(self, index: int, exact: bool = True) -> bool:
        """Does level ``index`` show the slide now? Reduced levels of a single-level slide do once
        the cache is built; before that only by nearest-neighbour subsampling (``exact=False``)
        of memory-mapped data, else they are white placeholders."""
        source = self.levels[index].source
        if not isinstance(source, CachedLevelSource) or source.cache.complete:
            return True
        return not exact and source.fallback is not None

    def info(self) -> dict:
        """What ``napari-hubmap info`` prints."""
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "levels": [list(level.shape[:2]) for level in self.levels],
            **self.scale.as_dict(),
            "dtype": self.dtype,
            "layout": self.layout,
            "format": self.format,
            "associated": list(self.associated_names),
        }

    def associated_image(self, name: str) -> np.ndarray:
        """The file's associated image ``name`` (one of :attr:`associated_names`: ``label``, ``macro``,
        ``thumbnail``) as (h, w, 3) uint8, read now."""
        if name not in self.associated_names or self._associated is None:
            raise HubmapInputError(self.path, f"no {name} image in the file (it has: {', '.join(self.associated_names) or 'none'})")
        return self._associated(name)

    def preview_image(self) -> tuple[str, np.ndarray] | None:
        """(name, image) of the associated image that shows the slide best (label, else macro, else
        thumbnail); None when the file has none."""
        name = next((n for n in PREVIEW_ORDER if n in self.associated_names), None)
        return None if name is None else (name, self.associated_image(name))

    def build_cache(self, *, background: bool = False, progress: ProgressCallback | None = None,
                    cancel: threading.Event | None = None) -> BuildState | None:
        """Build the pyramid cache of a single-level slide (no-op for pyramidal files): ``progress`` gets
        :class:`~napari_hubmap.progress.Progress` in pixels read; ``cancel`` set: raises
        :class:`~napari_hubmap.progress.Cancelled`, leaving no cache. ``background``: in a daemon thread;
        returns its state at once (its ``error`` holds the Cancelled; a build already running keeps its
        own ``cancel``, see :meth:`PyramidCache.start_build`)."""
        if self.cache is None or self.cache.complete:
            return None
        if background:
            state = self.cache.start_build(self.reopen, cancel=cancel)
            state.on_progress = progress
            return state
        state = BuildState(on_progress=progress, cancel=cancel or threading.Event())
        self.cache.build(self.reopen, state=state)
        return state

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_slide(path: str | os.PathLike, *, build_cache: bool = False, mpp: float | str | None = None) -> Slide:
    """Open a slide lazily. ``build_cache=True`` starts the pyramid cache build in the background;
    ``mpp``: its µm per pixel when given (see :class:`Slide`), checked before the file is read."""
    path = os.fspath(path)
    given = None if mpp is None else check_mpp(mpp)
    if not os.path.exists(path):
        raise HubmapInputError(path, "file not found")
    slide = _open_any(path)
    slide.mpp_given = given
    if build_cache:
        slide.build_cache(background=True)
    return slide


def _open_any(path: str) -> Slide:
    """The reader for this file (see the module's docstring): chosen by the content's magic bytes
    (:mod:`.sniff`) where the content is TIFF, PNG or JPEG, whatever the suffix says."""
    from .dicom_slide import DicomSlideFile
    from .openslide_slide import OpenSlideFile, use_openslide
    from .tiff_slide import TiffSlideFile

    lower = path.lower()
    kind = sniff(path)
    if kind in ("folder", "dicom") or lower.endswith(DICOM_SUFFIXES):
        return _open_file(path, lambda: DicomSlideFile(path))
    if kind == "empty":
        raise HubmapInputError(path, "file is empty (0 bytes)")
    if kind in ("png", "jpeg") and not lower.endswith(OPENSLIDE_SUFFIXES):
        return _open_image(path)
    if kind not in TIFF_KINDS and not lower.endswith(OPENSLIDE_SUFFIXES):
        raise HubmapInputError(path, f"not a readable {_named_as(lower)}: its content looks like {looks_like(path, kind)}"
                               ", not TIFF, PNG, JPEG or DICOM")
    vendor = use_openslide(path)
    if vendor is not None:
        return _open_file(path, lambda: OpenSlideFile(path, vendor))
    return _open_file(path, lambda: TiffSlideFile(path))


def _named_as(lower: str) -> str:
    """What the file's suffix says it is, for an error on content that is none of the slide formats."""
    if lower.endswith(TIFF_SUFFIXES):
        return "TIFF file"
    return "image" if lower.endswith(IMAGE_SUFFIXES) else "slide"


def _open_file(path: str, open_reader: Callable[[], object]) -> Slide:
    """A Slide over a file reader (tifffile, OpenSlide, wsidicom; ``open_reader`` opens it, now and again
    for the pyramid cache's build): its levels, and for a single-level slide larger than 1024 px the
    reduced levels of the pyramid cache; ``format`` is the reader's ``vendor``."""
    opened = open_reader()
    base = opened.sources[0]
    levels = [SlideLevel(source) for source in opened.sources]
    cache = None
    if len(levels) == 1 and len(level_shapes(base.height, base.width)) > 1:
        cache = PyramidCache(path, (base.height, base.width))
        for level in range(1, len(cache.shapes) + 1):
            fallback = SubsampledSource(base, 2**level) if base.memmapped else None
            levels.append(SlideLevel(CachedLevelSource(cache, level, fallback)))

    def reopen():
        fresh = open_reader()
        return fresh.sources[0], fresh.close

    return Slide(path, levels, opened.mpp, opened.layout, opened.dtype, cache, reopen, opened.close,
                 format=opened.vendor, associated_names=tuple(opened.associated_names), _associated=opened.associated)


def _open_image(path: str) -> Slide:
    from PIL import Image, UnidentifiedImageError

    try:
        with no_pixel_limit(), Image.open(path) as image:
            if image.width * image.height == 0:
                raise HubmapInputError(path, "image has zero size")
            if image.width * image.height > MAX_FLAT_IMAGE_PIXELS:
                raise HubmapInputError(path, "too large for PNG/JPEG reading; convert it to a tiled TIFF")
            check_claimed_bytes(path, image.width * image.height * len(image.getbands()), os.path.getsize(path),
                                "deflate" if image.format == "PNG" else None, f"a {image.width}x{image.height} image")
            mode = image.mode
            array = _image_to_rgb(image, path)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise HubmapInputError(path, f"not a readable image ({exc})") from exc
    levels = [SlideLevel(ArraySource(array))]
    while max(levels[-1].shape[:2]) > 1024:
        levels.append(SlideLevel(ArraySource(downsample_mean2(levels[-1].source.array))))
    dtype = "uint16" if mode.startswith("I;16") else "uint8"
    return Slide(path, levels, None, f"image:{mode}", dtype, format="image")


def _image_to_rgb(image, path: str) -> np.ndarray:
    mode = image.mode
    if mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB"))
    if mode in ("L", "LA", "1"):
        warnings.warn(f"{path}: grayscale image, shown as RGB by repeating the channel", stacklevel=4)
        return np.repeat(np.asarray(image.convert("L"))[:, :, None], 3, axis=2)
    if mode.startswith("I;16") or mode == "I":
        warnings.warn(f"{path}: 16-bit image, scaled to 8 bits (value >> 8)", stacklevel=4)
        data = np.asarray(image).astype(np.uint32) >> 8
        return np.repeat(np.clip(data, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    raise HubmapInputError(path, f"unsupported image mode {mode}")
