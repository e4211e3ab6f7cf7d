"""Lazy whole-slide reading: pyramidal or flat TIFF/BigTIFF/OME-TIFF/SVS and PNG/JPEG regions."""

from .levels import SlideLevel
from .open import Slide, is_slide_path, open_slide
from .pyramid_cache import PyramidCache, active_builds, cache_root

__all__ = ["Slide", "SlideLevel", "PyramidCache", "active_builds", "cache_root", "is_slide_path", "open_slide"]
