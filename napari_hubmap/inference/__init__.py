"""Tiled ensemble inference: plan tiles, read in threads, infer with TTA, blend, stream to OME-Zarr.

Names load lazily, so that :mod:`.config` (what the command line builds its options from) is read without torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "config": ("InferenceConfig",),
    "engine": ("PredictionResult", "pick_device", "predict_slide"),
    "tta": ("resolve_tta",),
})
