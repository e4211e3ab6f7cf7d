"""The smallest glomerulus a trained model reports: a multiple of half the 1st-percentile area of whole training
glomeruli, the one whose object F1 on the validation images is best."""

from __future__ import annotations

import numpy as np
import pytest

import torch

from napari_hubmap.training.sizes import FLOOR_CHOICES, floor_choices_px, object_floor_um2, whole_object_areas
from napari_hubmap.training.sources import Sample
from napari_hubmap.training.validate import validation_scores


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


def test_floor_choices_are_multiples_in_working_pixels_never_under_the_smallest():
    choices = floor_choices_px(900.0, mpp=3.0, smallest=16)  # 100 px at 9 µm² a pixel
    assert choices == {round(100 * t): round(900 * t, 1) for t in FLOOR_CHOICES}
    assert min(choices) == 100 and max(choices) == 400
    tiny = floor_choices_px(90.0, mpp=3.0, smallest=16)  # 10 px: the first choices fall under 16 px
    assert min(tiny) == 16 and all(px >= 16 for px in tiny) and tiny[16] == 90.0  # the mildest one is kept
    assert floor_choices_px(0.0, mpp=3.0, smallest=16) == {16: 0.0}
    assert floor_choices_px(900.0, mpp=None, smallest=16) == {16: 0.0}


class FromRed(torch.nn.Module):
    """Logit +10 where the red channel is high, else -10: predicts exactly the red pixels."""

    def forward(self, x):
        return torch.where(x[:, :1] > 0, 10.0, -10.0)


def red_sample(truth: np.ndarray, red: np.ndarray) -> Sample:
    image = np.zeros(truth.shape + (3,), np.uint8)
    image[..., 0] = 255 * red
    return Sample("real/x", "g", "real", image, truth.astype(np.uint8))


def test_validation_picks_the_floor_that_drops_small_false_objects_and_keeps_the_glomeruli():
    norm = {"mean": [0.5] * 3, "std": [0.25] * 3, "max_pixel_value": 255.0}
    truth = np.zeros((96, 96), np.uint8)
    truth[10:40, 10:40] = 1  # a glomerulus of 900 px, found
    red = truth.copy()
    red[60:66, 60:66] = 1  # a false speck of 36 px
    samples = [red_sample(truth, red)]
    at_16 = validation_scores(FromRed(), samples, norm, torch.device("cpu"), [0.5])
    assert at_16["min_size_px"] == 16 and at_16["objects"] == {"tp": 1, "fp": 1, "fn": 0}
    picked = validation_scores(FromRed(), samples, norm, torch.device("cpu"), [0.5], min_sizes=(16, 100, 2000))
    assert picked["min_size_px"] == 100 and picked["objects"] == {"tp": 1, "fp": 0, "fn": 0}
    assert picked["object_f1"] == 1.0 and picked["dice"] == at_16["dice"]  # pixel Dice is the threshold's
    clean = validation_scores(FromRed(), [red_sample(truth, truth)], norm, torch.device("cpu"), [0.5],
                              min_sizes=(100, 16, 500))
    assert clean["min_size_px"] == 16  # nothing to drop: the mildest floor wins the tie


class RedIsProbability(torch.nn.Module):
    """Predicts the red channel as the probability (0-255 -> 0-1)."""

    def forward(self, x):
        red = (x[:, :1] * 0.25 + 0.5).clamp(1e-4, 1 - 1e-4)  # undoes the normalisation below
        return torch.log(red / (1 - red))


def test_validation_picks_the_outline_threshold_that_draws_the_annotated_edge():
    """A glomerulus found at 0.9 whose annotation takes in a ring at 0.65: spreading down to 0.6 draws it (the first
    choice that does, the others tie); where the annotation is the core alone no spread is picked."""
    norm = {"mean": [0.5] * 3, "std": [0.25] * 3, "max_pixel_value": 255.0}
    yy, xx = np.mgrid[:96, :96]
    distance = np.hypot(yy - 48, xx - 48)
    image = np.zeros((96, 96, 3), np.uint8)
    image[..., 0] = np.where(distance < 15, 250, np.where(distance < 22, 166, 0))  # 0.98 core, 0.65 ring
    wide, core = (distance < 22).astype(np.uint8), (distance < 15).astype(np.uint8)
    scores = validation_scores(RedIsProbability(), [Sample("real/x", "g", "real", image, wide)], norm,
                               torch.device("cpu"), [0.9])
    assert scores["threshold"] == 0.9 and scores["outline_threshold"] == 0.6 and scores["outline_dice"] > 0.99
    assert scores["dice"] < 0.7  # at the threshold alone the ring is missed
    tight = validation_scores(RedIsProbability(), [Sample("real/x", "g", "real", image, core)], norm,
                              torch.device("cpu"), [0.9])
    assert tight["outline_threshold"] is None and tight["outline_dice"] > 0.99
