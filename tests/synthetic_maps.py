"""Small synthetic probability maps and stores for the post-processing, export and CLI tests."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def disk(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def blob_map(shape=(300, 300), seed=0) -> np.ndarray:
    """uint8 map with many smooth blobs plus shapes that cross blocks: a long snake spanning several
    64-px blocks, a ring (an object with a hole) with an island inside, touching disks, and objects
    on every edge of the map."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 3)
    field = (field - field.min()) / (field.max() - field.min())
    prob = (field * 200).astype(np.float64)  # up to ~0.78: blobs at 0.5, fewer at 0.6
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    snake = (np.abs(yy - (h * 0.5 + 40 * np.sin(xx / 25.0))) < 4) & (xx > 10) & (xx < w - 10)
    ring = disk(shape, (70, 200), 40) & ~disk(shape, (70, 200), 28)
    island = disk(shape, (70, 200), 8)
    pair = disk(shape, (230, 90), 22) | disk(shape, (230, 128), 22)
    edges = disk(shape, (0, 150), 12) | disk(shape, (h - 1, 40), 10) | disk(shape, (120, 0), 9) | disk(shape, (250, w - 1), 15)
    for shape_mask, value in ((snake, 230), (ring, 240), (island, 250), (pair, 235), (edges, 220)):
        prob[shape_mask] = value
    return np.clip(prob, 0, 255).astype(np.uint8)


def write_prob_store(path, prob: np.ndarray, downscale: float = 1.0, settings: dict | None = None):
    """A complete probability store as the inference engine writes it."""
    from napari_hubmap.stores.probability import ProbabilityStore

    store = ProbabilityStore.open_for_run(path, prob.shape, downscale, settings or {}, "test")
    store.write_rows(0, prob)
    store.mark_rows_done(prob.shape[0])
    return path
