"""The fast paths of tile preparation give exactly what the plain rules give: the tissue mask (OpenCV
morphology in place of scipy.ndimage's), the card's normalisation (a table in place of arithmetic) and the
tile reader (a tile inside the slide read straight, without the white canvas of edge tiles)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from napari_hubmap.inference.tile_reader import TileReader
from napari_hubmap.inference.normalisation import normalise
from napari_hubmap.inference.plan import tile_starts
from napari_hubmap.inference.tissue import tissue_from_rgb


def tissue_by_scipy(rgb, saturation, darkness, dilate):
    """The rule as first written: HSV saturation or darkness in float, then scipy's closing, opening, dilation."""
    data = rgb.astype(np.float32) / 255.0
    high, low = data.max(axis=2), data.min(axis=2)
    sat = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    mask = (sat > saturation) | (high < darkness)
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_opening(mask, iterations=1)
    return ndimage.binary_dilation(mask, iterations=dilate) if dilate else mask


def normalised_by_arithmetic(tiles, normalization):
    scale = float(normalization.get("max_pixel_value", 255.0))
    mean = np.asarray(normalization.get("mean", [0.0, 0.0, 0.0]), np.float32)[:, None, None]
    std = np.asarray(normalization.get("std", [1.0, 1.0, 1.0]), np.float32)[:, None, None]
    return (tiles.transpose(0, 3, 1, 2).astype(np.float32) / scale - mean) / std


def thumbnails():
    """Glass, tissue and a mix with edges: blocks of grey, pale and coloured pixels, any size from 1 px."""
    return st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**31 - 1)).map(_thumbnail)


def _thumbnail(args):
    h, w, seed = args
    rng = np.random.default_rng(seed)
    grey = np.repeat(rng.integers(150, 256, (h, w, 1)), 3, axis=2)
    colour = rng.integers(0, 256, (h, w, 3))
    where = rng.random((h, w)) < rng.random()
    return np.where(where[..., None], colour, grey).astype(np.uint8)


@settings(max_examples=150, deadline=None)
@given(thumbnails(), st.sampled_from([0.0, 0.07, 0.3]), st.sampled_from([0.5, 0.75, 1.0]), st.integers(0, 3))
def test_tissue_mask_is_the_scipy_rule(rgb, saturation, darkness, dilate):
    mask = tissue_from_rgb(rgb, saturation=saturation, darkness=darkness, dilate=dilate)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, tissue_by_scipy(rgb, saturation, darkness, dilate))


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 24), st.integers(1, 24), st.just(3))),
       st.sampled_from([{}, {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "max_pixel_value": 255.0},
                        {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "max_pixel_value": 1.0}]))
def test_normalise_is_the_cards_arithmetic(tiles, normalization):
    out = normalise(tiles, normalization)
    assert out.dtype == np.float32 and out.shape == (tiles.shape[0], 3, *tiles.shape[1:3])
    assert out.strides[1] == 4  # channels last in memory (torch's CPU convolutions are faster on it)
    np.testing.assert_array_equal(out, normalised_by_arithmetic(tiles, normalization))


@pytest.mark.parametrize("tiled", [True, False])
def test_reader_tiles_inside_and_across_the_edge(tmp_path, tiled):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (300, 260, 3)).astype(np.uint8)
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, image, tile=(64, 64) if tiled else None, photometric="rgb")
    reader = TileReader(str(path))
    for y, x in [(0, 0), (100, 37), (300 - 64, 260 - 64), (250, 10), (10, 220), (280, 250), (299, 259), (-20, -5)]:
        tile = reader.read(y, x, 64, 1.0)
        rows, cols = (mirrored_index(start + np.arange(64), n) for start, n in ((y, 300), (x, 260)))
        np.testing.assert_array_equal(tile, image[rows][:, cols])
    half = reader.read(40, 30, 32, 2.0)  # 64 px of the slide averaged 2x2
    block = image[80:144, 60:124].astype(np.float64).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(half.astype(np.float64) - block).max() <= 0.5


def test_reader_mirrors_a_slide_smaller_than_its_tile(tmp_path):
    """A 20 x 30 px photograph read as one 64 px tile: mirrored at every edge, again and again, never white."""
    image = np.random.default_rng(4).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    tile = TileReader(str(path)).read(0, 0, 64, 1.0)
    np.testing.assert_array_equal(tile, image[mirrored_index(np.arange(64), 20)][:, mirrored_index(np.arange(64), 30)])


@pytest.mark.parametrize("length, tile, overlap", [(171, 384, 96), (384, 384, 96), (100, 101, 0), (1, 64, 16)])
def test_a_slide_no_longer_than_a_tile_sits_in_its_middle(length, tile, overlap):
    (start,) = tile_starts(length, tile, overlap)
    before, after = -start, start + tile - length
    assert before >= 0 and after >= 0 and abs(before - after) <= 1


def test_longer_slides_are_tiled_from_their_first_pixel_to_their_last():
    starts = tile_starts(1000, 384, 96)
    assert starts[0] == 0 and starts[-1] + 384 == 1000 and all(b - a <= 384 - 96 for a, b in zip(starts, starts[1:]))


def mirrored_index(index: np.ndarray, n: int) -> np.ndarray:
    """Where a pixel past the last (n - 1) comes from when the edge is a mirror (the edge pixel not repeated:
    n, n + 1, ... read n - 2, n - 3, ...); a one-pixel strip repeats its pixel."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    folded = index % period
    return np.where(folded < n, folded, period - folded)
