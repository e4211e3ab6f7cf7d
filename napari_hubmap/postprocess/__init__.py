"""Post-processing: probability map -> glomerulus instances, threshold search, export.

Imports neither Qt nor napari. Same result on a region in memory (:func:`postprocess_region`) and on
a whole slide block by block (:func:`postprocess_slide`); see :mod:`.pipeline` for how.
"""

from .config import PostprocessConfig, foreground, uint8_cutoff
from .region import postprocess_region
from .slide import PostprocessResult, postprocess_slide, slide_shape_of
from .threshold import (
    DEFAULT_THRESHOLDS,
    ThresholdCurve,
    read_ensemble_config,
    save_best_threshold,
    save_ensemble_config,
    save_threshold,
    threshold_curve,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PostprocessConfig",
    "PostprocessResult",
    "ThresholdCurve",
    "foreground",
    "postprocess_region",
    "postprocess_slide",
    "read_ensemble_config",
    "save_best_threshold",
    "save_ensemble_config",
    "save_threshold",
    "slide_shape_of",
    "threshold_curve",
    "uint8_cutoff",
]
