"""``benchmarks/show_held_out.py``'s picture: truth and prediction outlined in their colours, cells and grid sized."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def show():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import show_held_out
    finally:
        sys.path.remove(str(BENCHMARKS))
    return show_held_out


def test_outlines_take_their_colours_and_leave_the_rest_alone(show):
    image = np.full((60, 80, 3), 128, np.uint8)
    truth = np.zeros((60, 80), np.int32)
    truth[10:30, 10:30] = 1
    objects = np.zeros_like(truth)
    objects[35:55, 50:75] = 1
    out = show.outlined(image, truth, objects, width=1)
    green = np.all(out == show.TRUTH, axis=-1)
    yellow = np.all(out == show.FOUND, axis=-1)
    assert green[10, 10:30].all() and not green[20, 20] and not green[45, 60]
    assert yellow[35, 50:75].all() and not yellow[45, 60] and not yellow[10, 10]
    assert np.array_equal(out[~(green | yellow)], image[~(green | yellow)])  # nothing else painted
    assert not np.shares_memory(out, image)
    thick = show.outlined(image, truth, objects, width=3)
    assert np.all(thick == show.TRUTH, axis=-1).sum() > green.sum()


def test_cells_fit_their_square_under_a_caption_and_the_grid_pads_its_last_row(show):
    wide = np.zeros((100, 400, 3), np.uint8)
    cell = show.cell(wide, "tile 1  Dice 0.50", 200)
    assert cell.shape == (200 + show.CAPTION_PX, 200, 3)
    body = cell[show.CAPTION_PX:]
    assert (body[:50] == 0).all() and (body[60:] == 255).all()  # shrunk to 200 x 50, white below
    assert (cell[: show.CAPTION_PX] < 255).any()  # the caption is written
    grid = show.grid([cell] * 5, columns=2)
    assert grid.shape == (3 * cell.shape[0], 2 * cell.shape[1], 3)
    assert (grid[2 * cell.shape[0]:, cell.shape[1]:] == 255).all()  # the missing sixth cell is blank
