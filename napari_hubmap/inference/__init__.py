"""Tiled ensemble inference: plan tiles, read in threads, infer with TTA, blend, stream to OME-Zarr."""

from .engine import InferenceConfig, PredictionResult, pick_device, predict_slide
from .tta import resolve_tta

__all__ = ["InferenceConfig", "PredictionResult", "pick_device", "predict_slide", "resolve_tta"]
