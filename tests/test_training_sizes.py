"""The smallest glomerulus a trained model reports: half the 1st-percentile area of whole training glomeruli."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hubmap.training.sizes import object_floor_um2, whole_object_areas
from napari_hubmap.training.sources import Sample


def sample(mask: np.ndarray, source: str = "real") -> Sample:
    return Sample(f"{source}/x", "g", source, np.zeros(mask.shape + (3,), np.uint8), mask.astype(np.uint8))


def squares(sizes, shape=(200, 200)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for i, side in enumerate(sizes):
        y, x = 10 + 40 * (i // 4), 10 + 45 * (i % 4)
        mask[y:y + side, x:x + side] = 1
    return mask


def test_objects_cut_by_the_border_do_not_count():
    mask = squares([10, 20])
    mask[0:5, 150:160] = 1  # cut by the top edge
    mask[190:200, 190:200] = 1  # a corner
    assert sorted(whole_object_areas(mask)) == [100, 400]


def test_floor_is_half_the_first_percentile_in_square_micrometres():
    areas = np.array([s * s for s in [10] + [20] * 15])
    expected = 0.5 * np.percentile(areas, 1) * 2.0**2
    floor = object_floor_um2([sample(squares([10, 20, 20, 20])), sample(squares([20] * 12))], mpp=2.0)
    assert floor == pytest.approx(expected, abs=0.1) and 200 < floor < 400


def test_synthetic_glomeruli_unknown_scale_and_no_glomeruli_give_no_floor():
    assert object_floor_um2([sample(squares([30]))], mpp=2.0) == pytest.approx(0.5 * 900 * 4)
    assert object_floor_um2([sample(squares([10]), "synthetic"), sample(squares([30]))], mpp=2.0) == pytest.approx(1800)
    assert object_floor_um2([sample(squares([30]))], mpp=None) == 0.0
    assert object_floor_um2([sample(np.zeros((50, 50)))], mpp=2.0) == 0.0
