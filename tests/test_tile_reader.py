"""The tile reader's shrunk blocks: overlapping tiles of a whole-number shrink are read once from the file,
and every tile is the one a fresh read and shrink makes, to the bit, whatever the order and the eviction."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_hubmap.inference.tile_reader import BLOCK, ShrunkBlocks, TileReader, _mirrored, beyond_edge, resize_rgb


class CountingLevel:
    """A level (numpy array) that counts the pixels read from it."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.pixels = array, array.shape, 0

    def __getitem__(self, key):
        out = self.array[key]
        self.pixels += out.shape[0] * out.shape[1]
        return out


def fresh(image: np.ndarray, k: int, y: int, x: int, tile: int) -> np.ndarray:
    return resize_rgb(image[y * k : (y + tile) * k, x * k : (x + tile) * k], tile)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_blocks_give_the_fresh_tiles_in_any_order_and_after_eviction(k):
    rng = np.random.default_rng(k)
    tile = 96
    height, width = (5 * BLOCK + 37) * k + k - 1, (6 * BLOCK + 11) * k + 1  # not whole blocks, nor whole k squares
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    working_h, working_w = height // k, width // k
    starts = [(y, x) for y in (0, 80, 160, working_h - tile, 77) for x in (0, 80, working_w - tile, 13, 200)]
    rng.shuffle(starts)
    for limit in (64 << 20, 3 * BLOCK * BLOCK * 3):  # everything kept; a few blocks kept (evicted all the time)
        blocks = ShrunkBlocks(limit)
        for y, x in starts + starts[:5]:
            np.testing.assert_array_equal(blocks.tile(image, 0, k, y, x, tile), fresh(image, k, y, x, tile))
        assert 0 < blocks.bytes <= limit


def test_overlapping_tiles_are_read_from_the_level_once():
    """Rows of tiles at the shipped model's stride (tile 384, overlap 96, 6x) read each level pixel once,
    where reading every tile afresh reads the overlaps twice."""
    k, tile, stride = 6, 384, 288
    image = np.random.default_rng(0).integers(0, 256, (2 * stride * k + tile * k, 4 * stride * k + tile * k, 3),
                                              dtype=np.uint8)
    level = CountingLevel(image)
    blocks = ShrunkBlocks()
    starts = [(y, x) for y in range(0, 3 * stride, stride) for x in range(0, 5 * stride, stride)]
    for y, x in starts:
        blocks.tile(level, 0, k, y, x, tile)
    whole = image.shape[0] * image.shape[1]
    assert level.pixels == whole  # each pixel once
    assert len(starts) * (tile * k) ** 2 > 1.4 * whole  # fresh reads: the overlaps again (half as much again here)


def test_reader_uses_the_blocks_for_whole_shrinks_only(tmp_path):
    """Through :class:`TileReader` on a tiled TIFF: a 3x shrink comes from the blocks and equals a fresh one; a
    non-whole shrink (2.5x) and a tile crossing the edge still read afresh."""
    image = np.random.default_rng(1).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, image, tile=(128, 128), photometric="rgb")
    reader = TileReader(str(path))
    for y, x in [(0, 0), (50, 60), (40, 200), (233 - 64, 300 - 64)]:
        np.testing.assert_array_equal(reader.read(y, x, 64, 3.0), fresh(image, 3, y, x, 64))
    assert reader.blocks.held  # the whole shrinks went through the blocks
    held = dict(reader.blocks.held)
    reader.read(10, 10, 64, 2.5)
    reader.read(220, 280, 64, 3.0)  # 3 * (220 + 64) > 700: crosses the bottom edge, mirrored
    assert dict(reader.blocks.held).keys() == held.keys()


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (5, 40), (40, 33), (200, 150)])
def test_beyond_edge_copies_runs_as_the_mirrored_gather_would(h, w):
    """The mirrored square, copied run by run, equals gathering the mirrored indices pixel by pixel, for slides
    much smaller than the square (mirrored again and again) and for squares poking just past an edge."""
    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for y0, x0, size in [(-7, -3, 64), (h - 5, w - 9, 32), (h // 2, -1, 17), (-40, w - 1, 80)]:
        rows, cols = _mirrored(y0, size, h), _mirrored(x0, size, w)
        np.testing.assert_array_equal(beyond_edge(image, y0, x0, size), image[rows][:, cols])


@pytest.mark.parametrize("side", [2306, 1000, 577])
def test_a_shrink_by_a_fraction_is_the_one_training_makes(side):
    """Tiles shrunk by a fraction (a slide's µm/px far from a whole multiple of the model's) are area-weighted as
    the trainer shrinks its images, to the grey level."""
    from napari_hubmap.training.sources import resize_image

    tile = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_rgb(tile, 384), resize_image(tile, (384, 384)))
