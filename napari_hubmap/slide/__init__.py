"""Lazy whole-slide reading: pyramidal or flat TIFF/BigTIFF/OME-TIFF/SVS, vendor formats through OpenSlide,
DICOM WSI through wsidicom, and PNG/JPEG regions."""

from .levels import SlideLevel
from .open import Slide, is_slide_path, open_slide
from .pyramid_cache import PyramidCache, active_builds, cache_root
from .scale import SlideScale, check_mpp, slide_scale

__all__ = ["Slide", "SlideLevel", "SlideScale", "PyramidCache", "active_builds", "cache_root", "check_mpp",
           "is_slide_path", "open_slide", "slide_scale"]
