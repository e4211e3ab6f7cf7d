"""The live preview equals the exact (object by object) post-processing away from the region's edge."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_hubmap.postprocess import PostprocessConfig, postprocess_region
from napari_hubmap.postprocess.preview import preview_labels, view_config


def blob_map(seed: int, size: int = 600, count: int = 40) -> np.ndarray:
    """Random overlapping cones (touching pairs, rings of noise), none near the edge; uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    prob = np.zeros((size, size), np.float32)
    for _ in range(count):
        cy, cx = rng.integers(60, size - 60, 2)
        radius = rng.integers(8, 35)
        prob = np.maximum(prob, np.clip(1.1 - np.hypot(yy - cy, xx - cx) / radius, 0, 1) * rng.uniform(0.5, 1))
    ring = (np.abs(np.hypot(yy - size // 2, xx - size // 2) - 45) < 6) * 0.9  # an object with a hole
    prob = ndimage.gaussian_filter(np.maximum(prob, ring) + rng.normal(0, 0.05, prob.shape), 1.5)
    prob[:40], prob[-40:], prob[:, :40], prob[:, -40:] = 0, 0, 0, 0
    return np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)


CONFIGS = [
    PostprocessConfig(threshold=0.5, fill_holes=False),
    PostprocessConfig(threshold=0.4),
    PostprocessConfig(threshold=0.45, min_size=300),
    PostprocessConfig(threshold=0.4, watershed=True, min_distance=6),
    PostprocessConfig(threshold=0.4, min_size=50, watershed=True, markers="h-maxima", h=1.5, compactness=0.01),
    PostprocessConfig(threshold=0.45, min_size=300, grow=4),
    PostprocessConfig(threshold=0.4, watershed=True, min_distance=6, grow=3),
    PostprocessConfig(threshold=0.7, min_size=100, outline_threshold=0.3),
    PostprocessConfig(threshold=0.6, watershed=True, min_distance=6, outline_threshold=0.35, grow=2),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"t{c.threshold}-m{c.min_size}-f{int(c.fill_holes)}-w{int(c.watershed)}{c.markers[0]}-g{c.grow}"
                                                 f"-o{c.outline_threshold}")
def test_preview_equals_the_exact_result(seed, config):
    prob = blob_map(seed)
    exact = postprocess_region(prob, config)
    assert exact.max() > 3
    assert np.array_equal(preview_labels(prob, config), exact)


def test_holes_touching_the_view_edge_stay_open_in_the_preview():
    prob = np.zeros((50, 50), np.uint8)
    prob[10:40, 10:40] = 255
    prob[20:30, 20:30] = 0  # a hole
    prob[0:10, 25] = 255  # a stick from the top edge
    prob[20:30, 0:14] = 0  # a bay open to the left edge
    labels = preview_labels(prob, PostprocessConfig(threshold=0.5))
    assert labels[25, 25] == 1 and labels[25, 5] == 0


def test_view_config_scales_sizes_to_the_level():
    config = PostprocessConfig(min_size=400, min_distance=12, h=3.0, threshold=0.3, compactness=0.2)
    coarse = view_config(config, 4)
    assert (coarse.min_size, coarse.min_distance, coarse.h) == (25, 3, 0.75)
    assert (coarse.threshold, coarse.compactness) == (0.3, 0.2)
    assert view_config(PostprocessConfig(grow=8), 4).grow == 2
    assert view_config(config, 1) is config
