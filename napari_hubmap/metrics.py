"""Segmentation metrics as the glomerulus field reports them: pixel Dice / IoU, object F1 at IoU 0.5.

Pixel scores compare foreground masks (nonzero = foreground): Dice = 2|P∩G| / (|P| + |G|),
IoU = |P∩G| / |P∪G|, both 1.0 when prediction and truth are both empty (Kaggle) and 0.0 when exactly
one is. Object scores match predicted to true instances one to one, greedily by IoU (highest
first; ties by the lower predicted then true label), counting a match when IoU >= ``iou`` (0.5: a
match is then unique except for exact halves, which the greedy order settles). Precision = TP /
predicted objects, recall = TP / true objects, F1 = 2 TP / (2 TP + FP + FN); with no objects on
either side all three are 1.0, and a side without objects gives 0.0 for a ratio it cannot fill.
Bool masks given as object inputs are split into 8-connected components.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage import measure

from .errors import HubmapInputError

PIXEL_KEYS = ("dice", "iou")
OBJECT_KEYS = ("precision", "recall", "f1")
COUNT_KEYS = ("tp", "fp", "fn", "pred_count", "gt_count")


@dataclass(frozen=True)
class PixelScores:
    dice: float
    iou: float
    intersection: int
    pred_pixels: int
    gt_pixels: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ObjectScores:
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    pred_count: int
    gt_count: int

    def as_dict(self) -> dict:
        return asdict(self)


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise HubmapInputError(None, f"prediction {a.shape} and ground truth {b.shape} differ in shape")


def pixel_scores(pred_mask, gt_mask) -> PixelScores:
    """Dice and IoU of two masks (nonzero = foreground)."""
    pred, gt = np.asarray(pred_mask) != 0, np.asarray(gt_mask) != 0
    _same_shape(pred, gt)
    inter, p, g = int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    union = p + g - inter
    dice = 1.0 if p + g == 0 else 2 * inter / (p + g)
    iou = 1.0 if union == 0 else inter / union
    return PixelScores(dice, iou, inter, p, g)


def _as_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return measure.label(labels, connectivity=2)
    if labels.dtype.kind not in "iu":
        raise HubmapInputError(None, f"object scores need integer labels or a bool mask, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise HubmapInputError(None, "labels must not be negative")
    return labels


def _areas(labels: np.ndarray) -> np.ndarray:
    """Pixel count per label value (index = value); labels present are those with a count."""
    top = int(labels.max()) if labels.size else 0
    if top > 50_000_000:  # sparse huge ids: count only the values present
        values, counts = np.unique(labels[labels > 0], return_counts=True)
        return dict(zip(values.tolist(), counts.tolist()))
    return np.bincount(labels.ravel(), minlength=top + 1)


def _count(areas) -> int:
    return len(areas) if isinstance(areas, dict) else int(np.count_nonzero(areas[1:]))


def _lookup(areas, ids: np.ndarray) -> np.ndarray:
    if isinstance(areas, dict):
        return np.array([areas[i] for i in ids.tolist()], dtype=np.int64)
    return areas[ids]


def match_objects(pred_labels, gt_labels, iou: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches (pred label, gt label, IoU) with IoU >= ``iou``."""
    pred, gt = _as_labels(pred_labels), _as_labels(gt_labels)
    _same_shape(pred, gt)
    both = (pred > 0) & (gt > 0)
    if not both.any():
        return []
    p, g = pred[both].astype(np.int64), gt[both].astype(np.int64)
    base = int(g.max()) + 1
    pairs, inter = np.unique(p * base + g, return_counts=True)
    p_idx, g_idx = np.divmod(pairs, base)
    scores = inter / (_lookup(_areas(pred), p_idx) + _lookup(_areas(gt), g_idx) - inter)
    order = np.lexsort((g_idx, p_idx, -scores))
    used_p, used_g, matches = set(), set(), []
    for k in order:
        if scores[k] < iou:
            break
        a, b = int(p_idx[k]), int(g_idx[k])
        if a not in used_p and b not in used_g:
            used_p.add(a)
            used_g.add(b)
            matches.append((a, b, float(scores[k])))
    return matches


def object_scores(pred_labels, gt_labels, iou: float = 0.5) -> ObjectScores:
    """Object TP/FP/FN, precision, recall, F1 and counts at IoU >= ``iou``."""
    if not 0 < iou <= 1:
        raise HubmapInputError(None, f"iou must be in (0, 1], got {iou!r}")
    pred, gt = _as_labels(pred_labels), _as_labels(gt_labels)
    _same_shape(pred, gt)
    n_pred, n_gt = _count(_areas(pred)), _count(_areas(gt))
    tp = len(match_objects(pred, gt, iou))
    fp, fn = n_pred - tp, n_gt - tp
    if n_pred == 0 and n_gt == 0:
        return ObjectScores(0, 0, 0, 1.0, 1.0, 1.0, 0, 0)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn)
    return ObjectScores(tp, fp, fn, precision, recall, f1, n_pred, n_gt)


def evaluate(pred, gt, *, kind: str = "auto", threshold: float = 0.5, iou: float = 0.5, config=None) -> dict:
    """Pixel and object scores of one slide as one flat dict (JSON-ready).

    ``pred``: instance labels / a bool mask (``kind="labels"``) or a probability map
    (``kind="probability"``: uint8 0-255 or float 0-1). ``kind="auto"``: float is a probability map,
    bool or integer (uint8 included) are labels. A probability map becomes labels by
    :func:`napari_hubmap.postprocess.postprocess_region` with ``config``, by default a plain threshold
    at ``threshold`` and connected components (no hole filling), so the pixel Dice is the Kaggle Dice
    at that threshold. ``gt``: labels or a bool mask of the same shape.
    """
    pred = np.asarray(pred)
    if kind == "auto":
        kind = "probability" if pred.dtype.kind == "f" else "labels"
    if kind not in ("labels", "probability"):
        raise HubmapInputError(None, f"kind must be auto, labels or probability, got {kind!r}")
    result = {}
    if kind == "probability":
        from .postprocess import PostprocessConfig, postprocess_region

        config = config or PostprocessConfig(threshold=threshold, fill_holes=False)
        pred = postprocess_region(pred, config)
        result["threshold"] = config.threshold
    gt = np.asarray(gt)
    pixels = pixel_scores(pred, gt)
    objects = object_scores(pred, gt, iou)
    result.update(dice=pixels.dice, iou=pixels.iou, **objects.as_dict(), iou_threshold=iou)
    return result


def mean_scores(per_slide: list[dict]) -> dict:
    """Mean Dice, IoU, precision, recall, F1 over slides, summed object counts, and ``slides``."""
    if not per_slide:
        raise HubmapInputError(None, "no slides to average")
    summary: dict = {"slides": len(per_slide)}
    for key in PIXEL_KEYS + OBJECT_KEYS:
        summary[key] = float(np.mean([float(s[key]) for s in per_slide]))
    for key in COUNT_KEYS:
        summary[key] = int(sum(int(s[key]) for s in per_slide))
    return summary
