"""A probability map layer as the Post-processing panel reads it: its store's metadata, the window on
screen, the live labels of that window and the threshold curve against ground truth. No Qt; the live
labels and the curve run off the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import HubmapInputError
from .viewer_layers import probability_meta

MAX_VIEW_SIDE = 2048
"""The live preview reads at most this many map pixels per side (a coarser level if need be)."""


def probability_layer_kwargs(path, downscale: float, scale, translate) -> dict:
    """``viewer.add_image`` options of a probability map layer (the Inference panel's and an opened map's):
    magma over the slide, 0-255, placed by ``scale`` / ``translate``, the store named in its metadata."""
    return {"colormap": "magma", "blending": "additive", "opacity": 0.6, "contrast_limits": (0, 255), "scale": scale,
            "translate": translate, "metadata": {"napari_hubmap": {"probability": str(path), "downscale": float(downscale)}}}


def opened_map_layer(path) -> tuple[list, dict]:
    """(data, ``add_image`` options) of the probability map at ``path``: a store predict wrote or any
    OME-Zarr single-channel image (:func:`~napari_hubmap.stores.probability.open_probability`), placed by
    its downscale over a slide at the origin; a map that cannot be read is one
    :class:`~napari_hubmap.errors.HubmapInputError`."""
    from ..stores.probability import open_probability

    path = Path(path)
    levels, meta = open_probability(path)
    d = float(meta["downscale"])
    data = list(levels) if len(levels) > 1 else levels[0]
    options = probability_layer_kwargs(path, d, (d, d), ((d - 1) / 2, (d - 1) / 2))
    return data, {"name": path.name, "multiscale": len(levels) > 1, **options}


def map_store_meta(layer) -> dict | None:
    """The attrs of the probability store behind a layer, or None."""
    from ..stores.probability import open_probability

    meta = probability_meta(layer)
    try:
        return open_probability(Path(meta["probability"]))[1] if meta else None
    except (HubmapInputError, OSError, ValueError, KeyError):
        return None  # an unreadable map shows its own error on preview


def map_threshold(layer) -> float | None:
    """The card threshold of the model(s) that made a probability layer's map, when they agree."""
    from ..postprocess.slide import recorded_threshold

    meta = map_store_meta(layer)
    return recorded_threshold(meta) if meta else None


def map_min_size(layer) -> int:
    """The models' smallest glomerulus (card ``min_object_um2``) in pixels of the map's level 0, the
    slider's scale (the preview rescales it to the level it shows); 0 when unrecorded."""
    from ..postprocess.slide import recorded_min_size

    meta = map_store_meta(layer)
    return recorded_min_size(meta) if meta else 0


def map_outline(layer) -> float | None:
    """The card outline threshold of the model(s) that made a probability layer's map, when they agree."""
    from ..postprocess.slide import recorded_outline

    meta = map_store_meta(layer)
    return recorded_outline(meta) if meta else None


def view_window(layer, max_side: int | None = None) -> tuple[int, tuple[int, int, int, int]]:
    """(level, (y0, y1, x0, x1)) of the part of ``layer`` on screen, at the level napari shows (or a coarser one,
    so that no side exceeds ``max_side``, default :data:`MAX_VIEW_SIDE`); the whole of that level when it fits.

    napari's corners are those of its last draw, snapped to chunks: a view that grew without a camera event (the
    window resized, a panel docked) kept its old corners, and glomeruli at the old edge were shown half labelled
    (the sample tile's screenshot). A level that fits is previewed whole, whatever the corners say."""
    max_side = MAX_VIEW_SIDE if max_side is None else max_side
    levels = layer.data if layer.multiscale else [layer.data]
    level = int(layer.data_level) if layer.multiscale else 0
    corners = np.asarray(layer.corner_pixels)[:, -2:]  # at the shown level
    (y0, x0), (y1, x1) = corners[0].astype(int), corners[1].astype(int) + 1
    while level + 1 < len(levels) and max(y1 - y0, x1 - x0) > max_side:
        level, y0, x0, y1, x1 = level + 1, y0 // 2, x0 // 2, -(-y1 // 2), -(-x1 // 2)
    height, width = levels[level].shape[-2:]
    if height <= max_side and width <= max_side:
        return level, whole_window(layer, level)
    y0, x0 = max(0, min(y0, height)), max(0, min(x0, width))
    y1, x1 = max(y0, min(y1, height, y0 + max_side)), max(x0, min(x1, width, x0 + max_side))
    return level, (y0, y1, x0, x1)


def whole_window(layer, level: int) -> tuple[int, int, int, int]:
    """The window (y0, y1, x0, x1) of all of ``layer``'s ``level``: a preview of it counts the map's glomeruli."""
    height, width = (layer.data[level] if layer.multiscale else layer.data).shape[-2:]
    return 0, int(height), 0, int(width)


def live_labels(levels, level: int, window, config) -> np.ndarray:
    """Preview labels of ``levels[level][window]``, the sizes in ``config`` rescaled to that level."""
    from ..postprocess.preview import preview_labels, view_config

    y0, y1, x0, x1 = window
    region = np.asarray(levels[level][y0:y1, x0:x1])
    return preview_labels(region, view_config(config, 2**level))


def curve_against(prob_path, levels, gt_layer=None, gt_file=None):
    """The threshold curve of the map against a labels layer (on one of the map's levels) or a file."""
    from ..postprocess import threshold_curve

    if gt_layer is not None:
        gt = np.asarray(gt_layer.data[0] if gt_layer.multiscale else gt_layer.data)
        level = next((k for k, lvl in enumerate(levels) if tuple(lvl.shape) == gt.shape), None)
        if level is None:
            shapes = ", ".join(f"{h}x{w}" for h, w in (lvl.shape for lvl in levels))
            raise HubmapInputError(None, f"ground truth layer {gt_layer.name!r} is {gt.shape[0]}x{gt.shape[1]}, "
                                         f"no level of the map has that size ({shapes})")
        return threshold_curve(levels[level], gt)
    from ..postprocess.inputs import load_ground_truth, load_prediction

    prediction = load_prediction(prob_path)
    return threshold_curve(prediction.array, load_ground_truth(gt_file, prediction))


def made_here(layer) -> bool:
    """A labels layer the Post-processing panel made (the live preview or a slide's post-processed labels)."""
    meta = getattr(layer, "metadata", {}).get("napari_hubmap") or {}
    return bool(meta.get("live") or meta.get("labels"))
