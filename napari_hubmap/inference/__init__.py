"""Tiled ensemble inference: plan tiles, read in threads, infer with TTA, blend, stream to OME-Zarr.

Names load lazily, so that :mod:`.config` (what the command line builds its options from) is read without torch.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "config": ("InferenceConfig",),
    "engine": ("PredictionResult", "pick_device", "predict_slide"),
    "tta": ("resolve_tta",),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
