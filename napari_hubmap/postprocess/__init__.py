"""Post-processing: probability map -> glomerulus instances, threshold search, export.

Imports neither Qt nor napari. Same result on a region in memory (:func:`postprocess_region`) and on
a whole slide block by block (:func:`postprocess_slide`); see :mod:`.pipeline` for how. Names load lazily,
so that :mod:`.config` (what the command line builds its options from) is read without scipy or scikit-image.
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "config": ("PostprocessConfig", "foreground", "uint8_cutoff"),
    "region": ("postprocess_region",),
    "slide": ("PostprocessResult", "postprocess_slide", "slide_shape_of"),
    "threshold": ("DEFAULT_THRESHOLDS", "ThresholdCurve", "read_ensemble_config", "save_best_threshold",
                  "save_ensemble_config", "save_threshold", "threshold_curve"),
})
