"""Pixel Dice / IoU and object precision / recall / F1 on small hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.metrics import evaluate, match_objects, mean_scores, object_scores, pixel_scores


def square(shape, y, x, size, value=1, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    out[y : y + size, x : x + size] = value
    return out


def test_pixel_scores_hand_checked():
    pred = np.zeros((4, 4), bool)
    gt = np.zeros((4, 4), bool)
    pred[0, :3] = True  # 3 pixels
    gt[0, 1:] = True  # 3 pixels, 2 shared
    scores = pixel_scores(pred, gt)
    assert scores.dice == pytest.approx(2 * 2 / 6) and scores.iou == pytest.approx(2 / 4)
    assert (scores.intersection, scores.pred_pixels, scores.gt_pixels) == (2, 3, 3)
    assert pixel_scores(gt, gt).dice == 1.0 and pixel_scores(gt, gt).iou == 1.0


def test_pixel_scores_empty_cases():
    empty = np.zeros((5, 5), np.uint8)
    something = square((5, 5), 1, 1, 2)
    assert pixel_scores(empty, empty).dice == 1.0 and pixel_scores(empty, empty).iou == 1.0
    assert pixel_scores(empty, something).dice == 0.0 and pixel_scores(something, empty).iou == 0.0


def test_object_scores_hand_checked():
    shape = (40, 40)
    gt = square(shape, 0, 0, 10, 1)
    square(shape, 20, 20, 10, 2, gt)
    square(shape, 0, 30, 5, 3, gt)  # missed
    pred = square(shape, 0, 0, 10, 7)  # exact: IoU 1
    square(shape, 20, 25, 10, 9, pred)  # shifted by half: IoU 50/150 < 0.5
    square(shape, 32, 0, 4, 4, pred)  # false positive
    scores = object_scores(pred, gt)
    assert (scores.tp, scores.fp, scores.fn) == (1, 2, 2)
    assert (scores.pred_count, scores.gt_count) == (3, 3)
    assert scores.precision == pytest.approx(1 / 3) and scores.recall == pytest.approx(1 / 3)
    assert scores.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))
    lenient = object_scores(pred, gt, iou=0.3)  # the shifted square now matches
    assert (lenient.tp, lenient.fp, lenient.fn) == (2, 1, 1)


def test_object_matching_is_one_to_one():
    gt = square((10, 20), 0, 0, 10, 1)  # one 10x10 object
    pred = np.zeros((10, 20), np.int32)
    pred[:, :5], pred[:, 5:10] = 1, 2  # two halves: IoU exactly 0.5 each
    matches = match_objects(pred, gt, 0.5)
    assert len(matches) == 1 and matches[0][2] == pytest.approx(0.5)
    scores = object_scores(pred, gt)
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 0)


def test_object_scores_empty_cases_and_masks():
    empty = np.zeros((8, 8), np.int32)
    both = object_scores(empty, empty)
    assert (both.precision, both.recall, both.f1, both.pred_count, both.gt_count) == (1.0, 1.0, 1.0, 0, 0)
    one = square((8, 8), 2, 2, 3)
    missed = object_scores(empty, one)
    assert (missed.tp, missed.fn, missed.f1, missed.recall, missed.precision) == (0, 1, 0.0, 0.0, 0.0)
    extra = object_scores(one, empty)
    assert (extra.fp, extra.f1) == (1, 0.0)
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = mask[5:7, 5:7] = True  # a bool mask is two objects
    assert object_scores(mask, mask).pred_count == 2


def test_evaluate_and_mean():
    gt = square((30, 30), 5, 5, 10)
    prob = np.zeros((30, 30), np.float32)
    prob[5:15, 5:15] = 0.8
    prob[20:25, 20:25] = 0.3
    at_half = evaluate(prob, gt, threshold=0.5)
    assert at_half["dice"] == 1.0 and at_half["f1"] == 1.0 and at_half["threshold"] == 0.5
    low = evaluate(prob, gt, threshold=0.2)
    assert low["fp"] == 1 and low["dice"] == pytest.approx(200 / 225)
    as_uint8 = evaluate((prob * 255).astype(np.uint8), gt, kind="probability", threshold=0.2)
    assert as_uint8["dice"] == low["dice"]
    labels = evaluate(gt, gt)
    assert "threshold" not in labels and labels["f1"] == 1.0
    summary = mean_scores([at_half, low])
    assert summary["slides"] == 2 and summary["dice"] == pytest.approx((1 + 200 / 225) / 2)
    assert summary["fp"] == 1 and summary["gt_count"] == 2
    with pytest.raises(HubmapInputError, match="shape"):
        pixel_scores(np.zeros((2, 2)), np.zeros((3, 3)))
